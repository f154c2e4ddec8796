"""The ``hnsd`` command line: classify recordings with a model folder, or export a recipe run.

    hnsd predict --model MODEL_DIR FILE_OR_DIR...   one JSON line (or CSV row) per audio file
    hnsd export RUN_DIR MODEL_DIR                    best checkpoint of a run -> model folder
    hnsd info [MODEL_DIR]                            versions; a model folder's labels, scores

``hnsd <command> --help`` documents each command. ``predict`` never stops at a bad file: it
writes an error record naming it, goes on, and exits with status 1 when any file failed.

torch and SpeechBrain are imported only by the commands that need them, so ``--help``,
argument errors and ``info`` answer at once.
"""

import argparse
import contextlib
import csv
import json
import logging
import os
import platform
import sys
import unicodedata
from importlib import metadata
from pathlib import Path

from hnsd_sb import __version__
from hnsd_sb.files import is_plain_file
from hnsd_sb.model_card import CARD_FILE
from hnsd_sb.model_info import (
    MODEL_INFO_FILE,
    check_model_folder,
    describe,
    near_chance_warning,
    read_architecture,
    read_model_info,
)

EXIT_OK = 0
EXIT_FILE_ERRORS = 1
EXIT_USAGE = 2
# Extensions looked for in folders (files named on the command line are always tried).
AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aiff .aif .aifc .au .snd .caf .w64 .rf64".split()
)
# Name under which --enroll recordings are enrolled when --speaker does not name them.
ENROLLED_SPEAKER = "reference speaker"
# Longest recording `hnsd predict` classifies as one utterance by default: 15 minutes take about
# 1.4 GB; longer files get an error record that points to --segment (bounded memory).
DEFAULT_MAX_DURATION = 900.0
# Packages whose versions `hnsd info` reports.
STACK = ("torch", "torchaudio", "speechbrain", "hyperpyyaml", "soundfile", "numpy")

EPILOG = """\
examples:
  hnsd export results/IEMOCAP/hnsd/fold1/1986 hnsd-iemocap
  hnsd info hnsd-iemocap
  hnsd predict --model hnsd-iemocap recording.wav
  hnsd predict --model hnsd-iemocap --format csv -o predictions.csv recordings/
  hnsd predict --model hnsd-iemocap --enroll alice_reference/ alice_session/
  hnsd predict --model hnsd-iemocap --segment --plot timelines/ interview.wav
  hnsd predict --model hnsd-seed1986 --model hnsd-seed1987 recordings/

exit status: predict: 0 every file was classified, 1 some files failed (their records say
why), 2 bad usage, a model folder that cannot be loaded, no input files, or an output that
cannot be written; export: 0 done, 1 failed (the message names the file at fault); info: 0
done, 2 not a model folder.
"""

PREDICT_HELP = """\
Classifies audio files (any sampling rate, mono or multichannel, any format soundfile reads:
WAV, FLAC, OGG, MP3, ...) and writes one record per file, in input order (folders are searched
recursively, in sorted order, for files with audio extensions).

JSON lines (default): {"path", "label", "score", "probabilities": {label: p}, "duration" (s),
"error"}; a file that cannot be classified (missing, unreadable, empty, truncated, shorter than
one 25 ms frame, NaN or Inf samples) gets label, score, probabilities and duration null and an
"error" naming it. CSV: columns path, label, score, duration, p_<label>..., error.

Emotion over time (--segment [SECONDS], default 4 s windows every --hop 2 s): each file is read
span by span, in memory bounded by the window, and gets a record per window (with "window",
"start" and "end" in seconds) and then a summary record ("window": "summary") holding the mean
of the window probabilities and its label. --plot DIR draws each file's probabilities over time
above its waveform envelope (DIR/<name>.png). The statistics that normalise a long recording
come from the recording itself, unless --enroll or --speaker name the speaker.

Speaker normalisation: by default every file is treated as an unseen speaker and normalised
with the model's "unseen" policy (the recipes' model folders: the pooled statistics of all the
speakers it knows; --unseen utterance: the file's own). With --enroll, the statistics of the
speaker's reference recordings normalise every input file instead (all inputs are then assumed
to come from that one speaker); --speaker picks a speaker the model already has statistics
for, e.g. a training speaker. A model trained with vector_normalization also z-scores its
pooled vectors per speaker: with the enrolled or named speaker's statistics, else with those
of all the speakers it knows.

Ensembles: with --model given several times, the models' class probabilities (and attention)
are averaged, and the records are those of the average. The folders must share labels,
features and speaker statistics, as the runs of one recipe with other seeds do.
"""


def passive_openmp(backend, environ=None):
    """Asks for ``OMP_WAIT_POLICY=PASSIVE`` before torch loads, for the ONNX Runtime backends.

    After each parallel region (the features) torch's OpenMP threads keep spinning for a while
    on the cores that ONNX Runtime's threads need next for the network; waiting passively, a
    5 s file ran at a real-time factor of 0.0025 instead of 0.0032 on 2 cores
    (``benchmarks/bench_backends.py`` with and without ``--active-openmp``,
    ``benchmarks/RESULTS.md``). OpenMP reads the policy once, when torch is imported, so this
    runs before that; a value the user set is kept, and other backends are left alone.

    Arguments
    ---------
    backend : str
        The ``--backend`` of ``hnsd predict``.
    environ : dict or None
        The environment to change (default: ``os.environ``).

    Returns
    -------
    bool
        Whether the policy was set here.

    Example
    -------
    >>> env = {}
    >>> passive_openmp("onnx-int8", env), env
    (True, {'OMP_WAIT_POLICY': 'PASSIVE'})
    >>> passive_openmp("torch", {}), passive_openmp("onnx", {"OMP_WAIT_POLICY": "ACTIVE"})
    (False, False)
    """
    environ = os.environ if environ is None else environ
    if not backend.startswith("onnx") or "OMP_WAIT_POLICY" in environ:
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def printable(text):
    """Text that a UTF-8 stream can always take, written losslessly.

    Python keeps the bytes of a file name that are not UTF-8 as lone surrogates, which no UTF-8
    file can hold; they become ``\\xNN`` escapes of the original bytes, as ``ls -b`` shows them.

    Arguments
    ---------
    text : str
        A path or a message that may hold such a name.

    Returns
    -------
    str
        Valid Unicode; unchanged when ``text`` already is.

    Example
    -------
    >>> printable(os.fsdecode(b"caf\\xe9.wav"))
    'caf\\\\xe9.wav'
    >>> printable("café.wav")
    'café.wav'
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that no file name produced
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def terminal_safe(text, keep="\n\t"):
    r"""Text from a file made safe to print: control characters other than newlines and tabs
    (a terminal obeys escape sequences: clearing the screen, faking lines) are escaped.

    Arguments
    ---------
    text : str
        E.g. a model card from a stranger's folder.
    keep : str
        Control characters written as they are.

    Returns
    -------
    str
        The text, with such characters as ``\xNN`` or ``\uNNNN`` escapes.

    Example
    -------
    >>> terminal_safe("UA 70 %\x1b[2J\n")
    'UA 70 %\\x1b[2J\n'
    """
    return "".join(
        c if c in keep or unicodedata.category(c) not in ("Cc", "Cf", "Cs") else ascii(c)[1:-1]
        for c in text
    )


def find_audio_files(inputs):
    """Expands files and folders into the list of files to classify.

    Arguments
    ---------
    inputs : list of str
        Files (kept even if missing: they get an error record) and folders (searched
        recursively for ``AUDIO_EXTENSIONS``, sorted).

    Returns
    -------
    list of pathlib.Path
        The files, in order.

    Example
    -------
    >>> folder = Path(getfixture("tmpdir"))
    >>> for name in ("b.wav", "a.FLAC", "notes.txt"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> [p.name for p in find_audio_files([str(folder), "missing.wav"])]
    ['a.FLAC', 'b.wav', 'missing.wav']
    """
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
            )
            if not found:
                print(f"hnsd: no audio files in {path}", file=sys.stderr)
            files += found
        else:
            files.append(path)
    return files


def classify_record(recognizer, path, speaker=None, attention=False, max_duration=None):
    """Classifies one file into an output record; failures become error records.

    Arguments
    ---------
    recognizer : hnsd_sb.inference.EmotionRecognizer
        The loaded model.
    path : str or path-like
        Audio file.
    speaker : str or None
        Speaker id for the normaliser (None: unseen).
    attention : bool
        Add the attention weights (``{"frame_shift": s, "weights": [...]}``).
    max_duration : float or None
        Longest accepted recording in seconds (None: no limit).

    Returns
    -------
    dict
        ``path, label, score, probabilities, duration, error``.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> from hnsd_sb import HNSD
    >>> from hnsd_sb.export import write_model_folder
    >>> from hnsd_sb.inference import EmotionRecognizer
    >>> tmp = getfixture("tmpdir")
    >>> spec = {"model": ("hnsd_sb.HNSD", {"hidden_size": 8, "fc_size": 4, "n_classes": 2})}
    >>> state = HNSD(hidden_size=8, fc_size=4, n_classes=2).state_dict()
    >>> _ = write_model_folder(tmp.join("model").strpath, ["neg", "pos"], state, modules=spec)
    >>> recognizer = EmotionRecognizer.from_folder(tmp.join("model").strpath)
    >>> sf.write(tmp.join("a.wav").strpath, np.zeros(16000), 16000)
    >>> record = classify_record(recognizer, tmp.join("a.wav").strpath)
    >>> record["label"] in ("neg", "pos"), record["duration"], record["error"]
    (True, 1.0, None)
    >>> classify_record(recognizer, "/no/such.wav")["error"]
    '/no/such.wav: file not found'
    """
    from hnsd_sb.audio import AudioError

    shown = printable(str(path))
    record = dict(path=shown, label=None, score=None, probabilities=None, duration=None)
    try:
        wav = recognizer.load_audio(path, max_duration=max_duration)
        log_probs, weights, _ = recognizer.infer_batch(wav.unsqueeze(0), None, speaker)
    except AudioError as err:
        message = str(err)
        if max_duration is not None and "too long" in message:
            message += "; classify it window by window, in bounded memory, with --segment"
        return dict(record, error=printable(message))
    except (OSError, RuntimeError, ValueError, MemoryError) as err:
        return dict(record, error=printable(f"{path}: {err}"))
    if not (log_probs.isfinite().all() and weights.isfinite().all()):
        return dict(record, error=f"{shown}: the model's output is not finite")
    probs = log_probs[0].exp().tolist()
    best = max(range(len(probs)), key=probs.__getitem__)
    record.update(
        label=recognizer.labels[best],
        score=round(probs[best], 6),
        probabilities={lab: round(p, 6) for lab, p in zip(recognizer.labels, probs)},
        duration=round(wav.numel() / recognizer.sample_rate, 3),
        error=None,
    )
    if attention:
        record["attention"] = {
            "frame_shift": recognizer.frame_shift,
            "weights": [round(w, 6) for w in weights[0].tolist()],
        }
    return record


class RecordWriter:
    """Writes records as JSON lines or CSV rows, flushing each so partial runs are usable.

    Arguments
    ---------
    stream : file object
        Text output.
    fmt : str
        ``"jsonl"`` or ``"csv"``.
    labels : list of str
        The model's labels (the CSV probability columns ``p_<label>``).
    segments : bool
        Window records (``--segment``): CSV columns ``window, start, end`` instead of
        ``duration``.

    Example
    -------
    >>> import io
    >>> out = io.StringIO()
    >>> writer = RecordWriter(out, "csv", ["neg", "pos"])
    >>> writer.write(dict(path="a.wav", label="pos", score=0.7, duration=1.0, error=None,
    ...                   probabilities={"neg": 0.3, "pos": 0.7}))
    >>> print(out.getvalue().strip())
    path,label,score,duration,p_neg,p_pos,error
    a.wav,pos,0.7,1.0,0.3,0.7,
    """

    def __init__(self, stream, fmt, labels, segments=False):
        self.stream = stream
        self.fmt = fmt
        self.labels = list(labels)
        self.csv = None
        # window records (hnsd_sb.segments) have a window and a span instead of a duration
        self.columns = ("path", "window", "start", "end") if segments else ("path",)
        self.columns += ("label", "score") + (() if segments else ("duration",))
        if fmt == "csv":
            fields = list(self.columns)
            fields += [f"p_{lab}" for lab in self.labels] + ["error"]
            self.csv = csv.DictWriter(stream, fieldnames=fields, lineterminator="\n")
            self.csv.writeheader()

    def write(self, record):
        """Writes one record.

        Arguments
        ---------
        record : dict
            As made by ``classify_record`` (or ``hnsd_sb.segments.classify_windows``).
        """
        if self.csv is None:
            # allow_nan=False: NaN is not JSON; classify_record never lets one through.
            self.stream.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        else:
            row = {key: record.get(key) for key in self.columns}
            for lab in self.labels:
                row[f"p_{lab}"] = (record["probabilities"] or {}).get(lab)
            row["error"] = record.get("error")
            for key in ("path", "error"):  # CSV does not escape control characters; JSON does
                if isinstance(row[key], str):
                    row[key] = terminal_safe(row[key])
            self.csv.writerow(row)
        self.stream.flush()


def run_predict(args):
    """Runs ``hnsd predict`` from parsed arguments.

    Arguments
    ---------
    args : argparse.Namespace
        As parsed by ``build_parser``.

    Returns
    -------
    int
        Exit status (``EXIT_OK``, ``EXIT_FILE_ERRORS`` or ``EXIT_USAGE``).
    """
    if args.attention and args.format == "csv":
        print("hnsd predict: --attention needs the jsonl format", file=sys.stderr)
        return EXIT_USAGE
    segmented = args.segment is not None
    if not segmented and (args.hop is not None or args.plot is not None):
        print("hnsd predict: --hop and --plot need --segment", file=sys.stderr)
        return EXIT_USAGE
    if segmented:
        if args.attention:
            print("hnsd predict: --attention and --segment do not go together", file=sys.stderr)
            return EXIT_USAGE
        args.hop = args.segment / 2 if args.hop is None else args.hop
        if not (args.segment >= 0.1 and 0 < args.hop <= args.segment):
            print(
                "hnsd predict: --segment must be at least 0.1 s and --hop within (0, segment]",
                file=sys.stderr,
            )
            return EXIT_USAGE
    files = find_audio_files(args.inputs)
    if not files:
        print("hnsd predict: no input files", file=sys.stderr)
        return EXIT_USAGE
    for folder in args.model:
        try:
            check_model_folder(folder)
            warning = near_chance_warning(read_model_info(folder))
        except (OSError, ValueError) as err:
            print(f"hnsd predict: cannot load the model: {err}", file=sys.stderr)
            return EXIT_USAGE
        if warning:
            print(f"hnsd predict: warning: {folder}: {warning}", file=sys.stderr)

    passive_openmp(args.backend)  # before torch loads

    from tqdm import tqdm

    from hnsd_sb.audio import AudioError
    from hnsd_sb.inference import EmotionRecognizer

    run_opts = {"device": args.device} if args.device else None
    try:
        recognizer = EmotionRecognizer.from_folders(
            args.model, run_opts=run_opts, backend=args.backend
        )
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        print(f"hnsd predict: cannot load the model: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.unseen:
        recognizer.mods.normalizer.unseen = args.unseen
    speaker = args.speaker
    if args.enroll:
        speaker = speaker or ENROLLED_SPEAKER
        references = find_audio_files(args.enroll)
        if not references:
            print("hnsd predict: no enrolment recordings", file=sys.stderr)
            return EXIT_USAGE
        try:
            seconds = recognizer.enroll(speaker, references)
        except AudioError as err:
            print(f"hnsd predict: bad enrolment recording: {err}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"hnsd predict: enrolled {len(references)} reference files ({seconds:.1f} s) as "
            f"speaker {speaker!r}; their statistics normalise every input file",
            file=sys.stderr,
        )
    elif speaker is not None and speaker not in recognizer.mods.normalizer.speakers:
        print(
            f"hnsd predict: the model has no statistics for speaker {speaker!r} (it has "
            f"{len(recognizer.mods.normalizer.speakers)} speakers); use --enroll",
            file=sys.stderr,
        )
        return EXIT_USAGE

    to_file = bool(args.output) and args.output != "-"
    where = args.output if to_file else "standard output"
    if to_file and os.path.exists(args.output):
        for path in files + find_audio_files(args.enroll or []):
            with contextlib.suppress(OSError):
                if os.path.samefile(path, args.output):
                    print(
                        f"hnsd predict: -o {printable(args.output)} is one of the inputs or "
                        "enrolment recordings; "
                        "writing to it would destroy the recording",
                        file=sys.stderr,
                    )
                    return EXIT_USAGE
    failed = 0
    try:
        if args.plot:
            os.makedirs(args.plot, exist_ok=True)
    except OSError as err:
        print(f"hnsd predict: cannot write {args.plot}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        stream = open(args.output, "w", encoding="utf-8", newline="") if to_file else sys.stdout
        try:
            writer = RecordWriter(stream, args.format, recognizer.labels, segments=segmented)
            if segmented:
                failed = _predict_windows(recognizer, files, speaker, writer, args)
            else:
                progress = tqdm(
                    files,
                    desc="hnsd predict",
                    unit="file",
                    file=sys.stderr,
                    disable=args.quiet or len(files) < 2,
                    dynamic_ncols=True,
                )
                for path in progress:
                    record = classify_record(
                        recognizer, path, speaker, args.attention, args.max_duration or None
                    )
                    failed += record["error"] is not None
                    writer.write(record)
        finally:
            if to_file:
                stream.close()
    except BrokenPipeError:
        raise  # the reader went away: main() handles it
    except OSError as err:  # a missing folder, a full disk: the output, not the input
        print(f"hnsd predict: cannot write {where}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    if failed:
        print(f"hnsd predict: {failed} of {len(files)} files failed", file=sys.stderr)
        return EXIT_FILE_ERRORS
    return EXIT_OK


def _predict_windows(recognizer, files, speaker, writer, args):
    """``hnsd predict --segment``: window records and a summary per file, optional plots;
    returns the number of files that failed."""
    from tqdm import tqdm

    from hnsd_sb.audio import AudioError, check_audio_header
    from hnsd_sb.segments import classify_windows, plot_timeline, window_count

    total = 0
    for path in files:  # headers only: the bar's length
        try:
            info = check_audio_header(path)
            total += window_count(info.frames, info.sample_rate, args.segment, args.hop)
        except AudioError:
            pass
    failed, used_names = 0, set()
    with tqdm(
        total=total,
        desc="hnsd predict",
        unit="window",
        file=sys.stderr,
        disable=args.quiet,
        dynamic_ncols=True,
    ) as bar:
        for path in files:
            envelope = [] if args.plot else None
            windows = []
            for record in classify_windows(
                recognizer, path, args.segment, args.hop, speaker, progress=bar.update,
                envelope=envelope,
            ):  # fmt: skip
                record["path"] = printable(record["path"])
                if record["error"] is not None:
                    record["error"] = printable(record["error"])
                    failed += 1
                elif record["window"] != "summary":
                    windows.append(record)
                writer.write(record)
            if args.plot and windows:
                stem = printable(Path(path).stem)
                name, n = stem, 1
                while name in used_names:  # same name in two folders
                    n += 1
                    name = f"{stem}_{n}"
                used_names.add(name)
                png = os.path.join(args.plot, f"{name}.png")
                try:
                    title = printable(str(path))
                    plot_timeline(windows, envelope[0], recognizer.labels, png, title)
                except (OSError, ValueError) as err:  # its records are written; the plot is lost
                    print(f"hnsd predict: cannot write {png}: {err}", file=sys.stderr)
                    failed += 1
    return failed


def run_info(args):
    """Runs ``hnsd info``: the installed stack, or what a model folder says about itself.

    Arguments
    ---------
    args : argparse.Namespace
        As parsed by ``build_parser`` (``model``: a folder or None).

    Returns
    -------
    int
        ``EXIT_OK``, or ``EXIT_USAGE`` for a folder that is not a model folder.

    Example
    -------
    >>> run_info(argparse.Namespace(model=None))  # doctest: +ELLIPSIS
    hnsd-sb 0.1.0 (Python ...)
    ...
    0
    """
    if args.model is None:
        print(f"hnsd-sb {__version__} (Python {platform.python_version()})")
        for name in STACK:
            try:
                print(f"{name}: {metadata.version(name)}")
            except metadata.PackageNotFoundError:
                print(f"{name}: not installed")
        return EXIT_OK
    folder = Path(args.model)
    try:
        check_model_folder(folder)
        info = read_model_info(folder)
        read_architecture(folder)  # fails fast, before torch is imported
        from hnsd_sb.inference import EmotionRecognizer

        model = EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"}).mods.model
        card_file = folder / CARD_FILE
        card = None
        if card_file.exists():
            try:
                if not is_plain_file(card_file):  # a FIFO would block
                    raise OSError("not a regular file")
                card = card_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise ValueError(f"{card_file}: not a readable UTF-8 model card ({err})") from None
    except (OSError, ValueError) as err:
        print(f"hnsd info: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"model folder: {folder}")
    for line in describe(info):
        print(line)
    n_parameters = sum(p.numel() for p in model.parameters())
    print(f"loads: yes ({n_parameters:,} parameters, built from {MODEL_INFO_FILE})")
    warning = near_chance_warning(info)
    if warning:
        print(f"warning: {warning}")
    if card is not None:
        print(f"\n{card_file}:\n\n{terminal_safe(card)}", end="")
    else:
        print("model card: none (exported before hnsd-sb wrote one; export the run again)")
    return EXIT_OK


def add_export_arguments(parser):
    """Adds the ``export`` command's arguments to an ``argparse`` parser.

    Arguments
    ---------
    parser : argparse.ArgumentParser
        The parser to extend.

    Example
    -------
    >>> parser = argparse.ArgumentParser()
    >>> add_export_arguments(parser)
    >>> parser.parse_args(["run", "model"]).max_key
    'UA'
    """
    parser.add_argument(
        "source",
        help="a recipe run's output folder (best checkpoint by validation UA), its save "
        "folder, or one CKPT+... checkpoint folder",
    )
    parser.add_argument("folder", help="the model folder to write")
    parser.add_argument(
        "--hparams",
        default=None,
        help="the run's hparams file (default: SOURCE's hyperparams.yaml as the recipe saved it)",
    )
    parser.add_argument(
        "--max-key", default="UA", help="checkpoint meta key to maximise (default: UA)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a previous export in FOLDER"
    )
    parser.add_argument(
        "--format",
        choices=("torch", "onnx"),
        default="torch",
        help="onnx: also write model.onnx, the network for ONNX Runtime (needs "
        "hnsd-sb[onnx]; checked against PyTorch)",
    )
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="with --format onnx: also write model.int8.onnx, its dynamic int8 quantisation",
    )


def _seconds(text):
    """A finite, non-negative number of seconds for argparse."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def _window_seconds(text):
    """``--segment``'s value: its optional number would otherwise swallow a file name."""
    try:
        return _seconds(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"takes an optional number of seconds, got {text!r}: give it (--segment 4) or put "
            "--segment after the input files"
        ) from None


def run_export(args):
    """``hnsd export``: runs an export from parsed arguments, printing the outcome.

    Arguments
    ---------
    args : argparse.Namespace
        As parsed with ``add_export_arguments``.

    Returns
    -------
    int
        0 on success, 1 on failure.

    Example
    -------
    >>> args = argparse.Namespace(source="/nowhere", folder="out", hparams=None,
    ...                           max_key="UA", overwrite=False, format="torch", quantize=None)
    >>> run_export(args)
    1
    """
    from hnsd_sb.export import export_model  # torch and SpeechBrain, only when it runs

    if args.quantize and args.format != "onnx":
        print("Export failed: --quantize int8 needs --format onnx", file=sys.stderr)
        return 1
    try:
        out = export_model(
            args.source, args.folder, args.hparams, args.max_key, args.overwrite,
            onnx=args.format == "onnx", int8=args.quantize == "int8",
        )  # fmt: skip
    except (OSError, ValueError, ImportError) as err:
        print(f"Export failed: {err}", file=sys.stderr)
        return 1
    print(f"Exported to {out}")
    warning = near_chance_warning(read_model_info(out))
    if warning:
        print(f"hnsd export: warning: {warning}", file=sys.stderr)
    print(f"Classify recordings with: hnsd predict --model {out} FILE_OR_DIR...")
    return 0


def build_parser():
    """The ``hnsd`` argument parser with its ``predict`` and ``export`` commands.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each command sets ``func``.

    Example
    -------
    >>> args = build_parser().parse_args(["predict", "--model", "m", "a.wav", "b/"])
    >>> args.model, args.inputs, args.format
    (['m'], ['a.wav', 'b/'], 'jsonl')
    """
    parser = argparse.ArgumentParser(
        prog="hnsd",
        description="HNSD speech emotion recognition (Cao et al., ICASSP 2021) for SpeechBrain.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hnsd-sb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="classify audio files with a model folder",
        description=PREDICT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="audio files, folders")
    predict.add_argument(
        "--model",
        required=True,
        action="append",
        help="model folder written by `hnsd export`; give it again to average the class "
        "probabilities of several models (e.g. runs of one recipe with other seeds: same labels, "
        "features and training speakers)",
    )
    predict.add_argument(
        "--format", choices=("jsonl", "csv"), default="jsonl", help="output format (jsonl)"
    )
    predict.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    predict.add_argument(
        "--enroll",
        action="append",
        metavar="FILE_OR_DIR",
        help="reference recordings (a file or folder; repeat for more) of the single speaker "
        "of all inputs; their statistics normalise the inputs",
    )
    predict.add_argument(
        "--speaker",
        help="speaker id of all inputs: one the model has statistics for, or the name to "
        "enrol the --enroll recordings under",
    )
    predict.add_argument(
        "--unseen",
        choices=("utterance", "global"),
        help="normalisation of speakers without statistics (default: the model's; the recipes' "
        "folders: global, the pooled statistics of the speakers it knows; utterance: each "
        "file's own statistics)",
    )
    predict.add_argument(
        "--attention",
        action="store_true",
        help="add each file's attention weights over time (jsonl only)",
    )
    predict.add_argument(
        "--max-duration",
        type=_seconds,
        default=DEFAULT_MAX_DURATION,
        metavar="SECONDS",
        help=f"longest recording to classify; longer files get an error record "
        f"(default {DEFAULT_MAX_DURATION:g}; 0: no limit)",
    )
    predict.add_argument(
        "--segment",
        type=_window_seconds,
        nargs="?",
        const=4.0,
        metavar="SECONDS",
        help="classify each file window by window, in bounded memory: a record per window "
        "and a summary per file (windows of 4 s when no value is given)",
    )
    predict.add_argument(
        "--hop", type=_seconds, metavar="SECONDS", help="step between windows (default: half "
        "the window)"
    )  # fmt: skip
    predict.add_argument(
        "--plot", metavar="DIR", help="with --segment: a PNG per file of the probabilities over "
        "time above the waveform envelope"
    )  # fmt: skip
    predict.add_argument(
        "--backend",
        choices=("torch", "torch-int8", "onnx", "onnx-int8"),
        default="torch",
        help="what runs the network: torch (default), torch-int8 (int8 LSTMs, quantised at "
        "load), onnx / onnx-int8 (ONNX Runtime on the folder's model.onnx / model.int8.onnx)",
    )
    predict.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: inferred)")
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=run_predict)

    export = commands.add_parser(
        "export",
        help="turn a recipe run's best checkpoint into a model folder",
        description="Writes a self-contained model folder (model_info.json, model.ckpt, "
        "normalizer.ckpt, label_encoder.txt, and hyperparams.yaml and custom_interface.py for "
        "SpeechBrain's own loaders; no optimiser or logger state) from a recipe run's best "
        "checkpoint (max validation UA) or a given one.",
    )
    add_export_arguments(export)
    export.set_defaults(func=run_export)

    info = commands.add_parser(
        "info",
        help="show the installed versions, or a model folder's labels and scores",
        description="Without MODEL_DIR: the versions of hnsd-sb and its stack. With it: the "
        "model's labels, the validation scores of the exported checkpoint and where it came "
        "from (its model_info.json), with a warning when the model is near chance.",
    )
    info.add_argument("model", nargs="?", metavar="MODEL_DIR", help="model folder")
    info.set_defaults(func=run_info)
    return parser


def main(argv=None):
    """Entry point of the ``hnsd`` console script.

    Arguments
    ---------
    argv : list of str or None
        Arguments; None reads ``sys.argv``.

    Returns
    -------
    int
        Exit status.

    Example
    -------
    >>> main(["predict", "--model", "/no/such/model", "/no/such.wav"])  # messages go to stderr
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    # Messages quote file names and fields of files from others: their escape sequences are
    # shown, not obeyed (carriage returns stay, for the progress bars).
    with _speechbrain_warnings_only(), contextlib.redirect_stderr(_SafeStream(sys.stderr)):
        try:
            return args.func(args)
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): stop quietly, as other command line tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_FILE_ERRORS


class _SafeStream:
    """A text stream that writes ``terminal_safe`` text (see ``main``)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        """Writes the text with its control characters (but newlines, tabs, CR) escaped."""
        return self.stream.write(terminal_safe(text, keep="\n\t\r"))

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def _speechbrain_warnings_only():
    """SpeechBrain logs every loading step at INFO; a command line tool shows only problems,
    and shows hnsd_sb's own warnings (e.g. a silent enrolment recording) on stderr. The levels
    and handlers are restored afterwards, for callers that run ``main`` in their own process."""
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name == "speechbrain" or name.startswith("speechbrain.")
    ]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    ours = logging.getLogger("hnsd_sb")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("hnsd: warning: %(message)s"))
    ours.addHandler(handler)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        for log, level in zip(loggers, levels):
            log.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
