"""Shared pieces of the corpus preparation scripts.

Every corpus writes the same manifests: ``train.csv``, ``valid.csv`` and ``test.csv`` in the
save folder, with the columns ``ID, duration, wav, spk_id, emo, raw_emo`` followed by
corpus-specific extras. ``wav`` is written as ``$data_root/<path relative to data_folder>`` so
that a training script can load the manifests with ``replacements={"data_root": data_folder}``.
The options a manifest set was built with are stored next to it in ``prepare_options.json``;
preparing again with the same options is a no-op, any change rebuilds everything.
"""

import csv
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import soundfile as sf
from tqdm import tqdm

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
BASE_COLUMNS = ("ID", "duration", "wav", "spk_id", "emo", "raw_emo")
OPTIONS_FILE = "prepare_options.json"


def check_data_folder(data_folder, corpus):
    """Returns ``data_folder`` as an absolute ``Path``; a clear error when it is not a folder.

    Arguments
    ---------
    data_folder : str or path-like
        The folder that should hold the corpus.
    corpus : str
        Name of the corpus, used in the error message.

    Returns
    -------
    pathlib.Path
        The folder.

    Example
    -------
    >>> check_data_folder(getfixture("tmpdir"), "RAVDESS").is_dir()
    True
    """
    # Absolute without resolving symbolic links, so recorded options stay readable.
    folder = Path(os.path.abspath(data_folder))
    if not folder.is_dir():
        raise FileNotFoundError(f"{corpus} data_folder {folder} does not exist or is not a folder")
    return folder


def check_label_map(label_map, default, known_labels, corpus):
    """Validates a raw-label -> final-label map, falling back to ``default`` when it is None.

    Unknown raw labels are an error rather than silently matching nothing (a typo such as
    ``{"happy": "hap"}`` would otherwise drop a whole class).

    Arguments
    ---------
    label_map : dict or None
        Raw corpus label -> label written to the manifests. Labels that are not keys are dropped.
    default : dict
        The map used when ``label_map`` is None.
    known_labels : iterable of str
        Every raw label the corpus can produce.
    corpus : str
        Name of the corpus, used in the error message.

    Returns
    -------
    dict
        A plain ``dict`` with sorted keys.

    Example
    -------
    >>> check_label_map(None, {"neu": "neu"}, ["neu", "ang"], "demo")
    {'neu': 'neu'}
    >>> check_label_map({"exc": "hap"}, {}, ["hap", "exc"], "demo")
    {'exc': 'hap'}
    """
    chosen = default if label_map is None else label_map
    if not hasattr(chosen, "items") or not chosen:
        raise ValueError(f"{corpus} label_map must be a non-empty dict, got {label_map!r}")
    unknown = sorted(set(chosen) - set(known_labels))
    if unknown:
        raise ValueError(
            f"{corpus} label_map has unknown raw labels {unknown}; known: {sorted(known_labels)}"
        )
    return {str(raw): str(chosen[raw]) for raw in sorted(chosen)}


def apply_label_map(utterances, label_map):
    """Keeps the utterances whose raw label is mapped, storing both labels.

    Arguments
    ---------
    utterances : list of dict
        Each with at least ``raw_emo``.
    label_map : dict
        Raw label -> final label.

    Returns
    -------
    list of dict
        The kept utterances, each with ``emo`` set to the final label.

    Example
    -------
    >>> apply_label_map([{"raw_emo": "exc"}, {"raw_emo": "fru"}], {"exc": "hap"})
    [{'raw_emo': 'exc', 'emo': 'hap'}]
    """
    kept = []
    for utt in utterances:
        if utt["raw_emo"] in label_map:
            kept.append(dict(utt, emo=label_map[utt["raw_emo"]]))
    return kept


def scan_wavs(folder, name_pattern, corpus):
    r"""Lists the wav files below ``folder`` whose name matches ``name_pattern``.

    Arguments
    ---------
    folder : pathlib.Path
        Searched recursively.
    name_pattern : str
        Regular expression the whole file name must match.
    corpus : str
        Name of the corpus, used in messages.

    Returns
    -------
    list of (pathlib.Path, re.Match)
        The matching files, sorted by path.

    Example
    -------
    >>> folder = Path(getfixture("tmpdir"))
    >>> _ = (folder / "a_01.wav").write_bytes(b""), (folder / "notes.wav").write_bytes(b"")
    >>> [(path.name, match[1]) for path, match in scan_wavs(folder, r"a_(\d+)\.wav", "demo")]
    [('a_01.wav', '01')]
    """
    regex = re.compile(name_pattern)
    found, skipped = [], 0
    for path in sorted(folder.rglob("*.wav")):
        match = regex.fullmatch(path.name)
        if match is None:
            skipped += 1
        else:
            found.append((path, match))
    if skipped:
        logger.info(
            "%s: ignored %d wav files with non-matching names in %s", corpus, skipped, folder
        )
    if not found:
        raise FileNotFoundError(f"No {corpus} wav files found in {folder}")
    return found


def read_durations(paths, desc="Reading durations"):
    """Reads the duration in seconds of each audio file from its header.

    With soundfile, not SpeechBrain's ``read_audio_info``: in SpeechBrain 1.1.2 that raises an
    ``AttributeError`` on a header-only file (0 frames) instead of reporting its length, and
    such a file must reach the manifest checks, which name it.

    Arguments
    ---------
    paths : list of path-like
        Audio files.
    desc : str
        Label of the progress bar.

    Returns
    -------
    list of float
        Durations in seconds, in the order of ``paths``.

    Example
    -------
    >>> import numpy as np
    >>> path = os.path.join(getfixture("tmpdir"), "a.wav")
    >>> sf.write(path, np.zeros(8000), 16000)
    >>> read_durations([path])
    [0.5]
    """
    durations = []
    for path in tqdm(paths, desc=desc, disable=len(paths) < 200, dynamic_ncols=True):
        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError) as err:
            raise RuntimeError(f"Cannot read the audio header of {path}: {err}") from err
        durations.append(info.frames / info.samplerate)
    return durations


def contiguous_folds(speakers, n_folds, corpus):
    """Splits the sorted speakers into ``n_folds`` contiguous groups of (near) equal size.

    Arguments
    ---------
    speakers : iterable of str
        Speaker ids; sorted before splitting.
    n_folds : int
        Number of groups, between 2 and the number of speakers.
    corpus : str
        Name of the corpus, used in the error message.

    Returns
    -------
    list of list of str
        Group ``k - 1`` holds the test speakers of fold ``k``.

    Example
    -------
    >>> contiguous_folds(["a", "b", "c", "d", "e"], 2, "demo")
    [['a', 'b', 'c'], ['d', 'e']]
    """
    speakers = sorted(set(speakers))
    if not 2 <= n_folds <= len(speakers):
        raise ValueError(
            f"{corpus}: n_folds must be between 2 and the number of speakers "
            f"({len(speakers)}), got {n_folds}"
        )
    size, extra = divmod(len(speakers), n_folds)
    folds, start = [], 0
    for k in range(n_folds):
        end = start + size + (k < extra)
        folds.append(speakers[start:end])
        start = end
    return folds


def check_fold(fold, n_folds, corpus):
    """Raises a clear error unless ``1 <= fold <= n_folds``.

    Arguments
    ---------
    fold : int
        The requested fold, counted from 1.
    n_folds : int
        Number of folds.
    corpus : str
        Name of the corpus, used in the error message.

    Example
    -------
    >>> check_fold(3, 5, "demo")
    >>> check_fold(6, 5, "demo")
    Traceback (most recent call last):
     ...
    ValueError: demo: fold must be an integer between 1 and 5, got 6
    """
    if isinstance(fold, bool) or not isinstance(fold, int) or not 1 <= fold <= n_folds:
        raise ValueError(f"{corpus}: fold must be an integer between 1 and {n_folds}, got {fold!r}")


def next_fold_split(speakers, fold, n_folds, corpus):
    """Test speakers of fold ``k`` and validation speakers taken from fold ``k + 1`` (cyclic).

    Arguments
    ---------
    speakers : iterable of str
        All speaker ids of the corpus.
    fold : int
        The fold, from 1 to ``n_folds``.
    n_folds : int
        Number of contiguous speaker groups (see ``contiguous_folds``).
    corpus : str
        Name of the corpus, used in error messages.

    Returns
    -------
    test_speakers : list of str
    valid_speakers : list of str

    Example
    -------
    >>> next_fold_split(["a", "b", "c", "d"], 2, 2, "demo")
    (['c', 'd'], ['a', 'b'])
    """
    check_fold(fold, n_folds, corpus)
    folds = contiguous_folds(speakers, n_folds, corpus)
    return folds[fold - 1], folds[fold % n_folds]


def unused_speakers(speakers, fold, n_folds, train_groups, corpus):
    """The speakers left out of training when only ``train_groups`` groups train.

    The training groups of fold ``k`` are taken in order after its validation group (cyclic):
    groups ``k + 2``, ``k + 3``, ... Keeping the first ``train_groups`` of them measures how a
    model's quality grows with the number of training speakers (a learning curve over
    speakers), with the test and validation speakers unchanged.

    Arguments
    ---------
    speakers, fold, n_folds
        As for ``next_fold_split``.
    train_groups : int or None
        Groups that train, from 1 to ``n_folds - 2``; None: all of them.
    corpus : str
        Name of the corpus, used in error messages.

    Returns
    -------
    list of str
        The speakers that neither train, validate nor test (empty for None).

    Example
    -------
    >>> unused_speakers("abcdef", 1, 6, 2, "demo")
    ['e', 'f']
    >>> unused_speakers("abcdef", 6, 6, 1, "demo")
    ['c', 'd', 'e']
    """
    check_fold(fold, n_folds, corpus)
    if train_groups is None:
        return []
    if (
        isinstance(train_groups, bool)
        or not isinstance(train_groups, int)
        or not 1 <= train_groups <= n_folds - 2
    ):
        raise ValueError(
            f"{corpus}: train_groups must be null or an integer between 1 and "
            f"{n_folds - 2} (n_folds - 2), got {train_groups!r}"
        )
    folds = contiguous_folds(speakers, n_folds, corpus)
    training = [folds[(fold - 1 + j) % n_folds] for j in range(2, n_folds)]
    return sorted(spk for group in training[train_groups:] for spk in group)


def split_by_speaker(utterances, test_speakers, valid_speakers, corpus):
    """Assigns each utterance to train, valid or test by its speaker.

    Arguments
    ---------
    utterances : list of dict
        Each with ``spk_id``.
    test_speakers : iterable of str
        Speakers of the test split.
    valid_speakers : iterable of str
        Speakers of the validation split; every other speaker goes to train.
    corpus : str
        Name of the corpus, used in the error message.

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}``.

    Example
    -------
    >>> utts = [{"spk_id": s} for s in "aabc"]
    >>> {k: len(v) for k, v in split_by_speaker(utts, ["b"], ["c"], "demo").items()}
    {'train': 2, 'valid': 1, 'test': 1}
    """
    test_speakers, valid_speakers = set(test_speakers), set(valid_speakers)
    if test_speakers & valid_speakers:
        raise ValueError(
            f"{corpus}: speakers {sorted(test_speakers & valid_speakers)} are both test and valid"
        )
    splits = {name: [] for name in SPLITS}
    for utt in utterances:
        if utt["spk_id"] in test_speakers:
            splits["test"].append(utt)
        elif utt["spk_id"] in valid_speakers:
            splits["valid"].append(utt)
        else:
            splits["train"].append(utt)
    for name, utts in splits.items():
        if not utts:
            raise ValueError(
                f"{corpus}: the {name} split is empty (test speakers {sorted(test_speakers)}, "
                f"valid speakers {sorted(valid_speakers)})"
            )
    return splits


def class_counts_line(utterances):
    """Formats per-class counts and the total, e.g. ``ang 2, neu 1, total 3``.

    Arguments
    ---------
    utterances : list of dict
        Each with ``emo``.

    Returns
    -------
    str
        Classes in alphabetical order, then the total.

    Example
    -------
    >>> class_counts_line([{"emo": "neu"}, {"emo": "ang"}, {"emo": "ang"}])
    'ang 2, neu 1, total 3'
    """
    counts = Counter(utt["emo"] for utt in utterances)
    parts = [f"{emo} {counts[emo]}" for emo in sorted(counts)]
    return ", ".join(parts + [f"total {len(utterances)}"])


def _wav_field(path, data_folder):
    rel = Path(os.path.relpath(path, data_folder)).as_posix()
    return f"$data_root/{rel}"


def write_manifest(csv_file, utterances, data_folder, extra_columns):
    """Writes one manifest with the shared column layout.

    Arguments
    ---------
    csv_file : path-like
        Output file.
    utterances : list of dict
        Each with ``ID, duration, path, spk_id, emo, raw_emo`` and the extra columns.
    data_folder : path-like
        Root the ``wav`` column is made relative to.
    extra_columns : list of str
        Corpus-specific columns written after the base ones.

    Example
    -------
    >>> folder = getfixture("tmpdir")
    >>> utt = dict(ID="u1", duration=1.0, path=os.path.join(folder, "w", "u1.wav"),
    ...            spk_id="s1", emo="neu", raw_emo="neu", actor="01")
    >>> write_manifest(os.path.join(folder, "x.csv"), [utt], folder, ["actor"])
    >>> print(open(os.path.join(folder, "x.csv")).read().strip())
    ID,duration,wav,spk_id,emo,raw_emo,actor
    u1,1.00000,$data_root/w/u1.wav,s1,neu,neu,01
    """
    with open(csv_file, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(BASE_COLUMNS) + list(extra_columns))
        for utt in utterances:
            row = [utt["ID"], f"{utt['duration']:.5f}", _wav_field(utt["path"], data_folder)]
            row += [utt[column] for column in BASE_COLUMNS[3:]]
            row += [utt[column] for column in extra_columns]
            writer.writerow(row)


def is_prepared(save_folder, options):
    """Whether the manifests in ``save_folder`` were built with exactly ``options``.

    Arguments
    ---------
    save_folder : path-like
        Where the manifests and ``prepare_options.json`` live.
    options : dict
        JSON-serialisable options of the preparation.

    Returns
    -------
    bool
        True when all three CSV files exist and the recorded options equal ``options``.

    Example
    -------
    >>> is_prepared(getfixture("tmpdir"), {"fold": 1})
    False
    """
    save_folder = Path(save_folder)
    options_file = save_folder / OPTIONS_FILE
    if not options_file.is_file():
        return False
    if not all((save_folder / f"{name}.csv").is_file() for name in SPLITS):
        return False
    try:
        recorded = json.loads(options_file.read_text())
    except json.JSONDecodeError:
        return False
    # A JSON round trip makes tuples and lists compare equal.
    return recorded == json.loads(json.dumps(options))


def prepare_manifests(
    corpus, data_folder, save_folder, options, collect, test_valid, extras, note=""
):
    """Runs the shared preparation steps, skipping them when already done with ``options``.

    Arguments
    ---------
    corpus : str
        Name of the corpus, used in messages.
    data_folder : pathlib.Path
        Root of the corpus; ``wav`` paths are written relative to it.
    save_folder : path-like
        Output folder of the manifests (created if missing).
    options : dict
        JSON-serialisable options; recorded to detect when a rebuild is needed.
    collect : callable
        ``collect() -> list of dict``: the labelled utterances (keys ``ID, path, spk_id, emo,
        raw_emo`` and the extras), label map already applied.
    test_valid : tuple
        ``(test_speakers, valid_speakers)``; every other speaker goes to train.
    extras : list of str
        Extra manifest columns, in order.
    note : str
        Appended to the log line of the class counts (e.g. the figures of the full corpus).

    Returns
    -------
    bool
        True when the manifests were (re)built, False when they were already up to date.

    Example
    -------
    >>> import numpy as np
    >>> folder = Path(getfixture("tmpdir"))
    >>> utts = []
    >>> for spk in "abc":
    ...     sf.write(folder / f"{spk}.wav", np.zeros(1600), 16000)
    ...     utts.append(dict(ID=spk, path=folder / f"{spk}.wav", spk_id=spk, emo="neu",
    ...                      raw_emo="neu"))
    >>> args = ("demo", folder, folder / "save", {"v": 1}, lambda: utts, (["a"], ["b"]), [])
    >>> prepare_manifests(*args), prepare_manifests(*args)
    (True, False)
    """
    save_folder = Path(save_folder)
    if is_prepared(save_folder, options):
        logger.info("%s manifests in %s are up to date, skipping preparation", corpus, save_folder)
        return False
    save_folder.mkdir(parents=True, exist_ok=True)
    # Removed first, so an interrupted run can never look prepared.
    (save_folder / OPTIONS_FILE).unlink(missing_ok=True)

    utterances = collect()
    ids = Counter(utt["ID"] for utt in utterances)
    repeated = sorted(utt_id for utt_id, n in ids.items() if n > 1)
    if repeated:
        raise ValueError(f"{corpus}: utterance ids {repeated[:5]} appear more than once")
    splits = split_by_speaker(utterances, *test_valid, corpus)

    durations = read_durations([utt["path"] for utt in utterances], f"{corpus} durations")
    for utt, duration in zip(utterances, durations):
        utt["duration"] = duration

    logger.info("%s labelled utterances: %s%s", corpus, class_counts_line(utterances), note)
    for name in SPLITS:
        speakers = sorted({utt["spk_id"] for utt in splits[name]})
        logger.info(
            "%s %s: %s; speakers %s", corpus, name, class_counts_line(splits[name]), speakers
        )
        write_manifest(save_folder / f"{name}.csv", splits[name], data_folder, extras)
    with open(save_folder / OPTIONS_FILE, "w") as handle:
        json.dump(options, handle, indent=2, sort_keys=True)
    return True


@dataclass(frozen=True)
class CodedCorpus:
    r"""A corpus whose labels are all coded in its wav file names (RAVDESS, EmoDB, CREMA-D).

    Arguments
    ---------
    name : str
        Name used in messages.
    name_pattern : str
        Regular expression a file name must fully match (other wav files are ignored), with
        the named groups ``spk_id``, ``emo`` (an emotion code) and any extra fields.
    emotions : dict
        Emotion code -> raw label.
    speakers : tuple of str
        Every speaker of the release, in the order the folds cut them.
    extras : tuple of str
        Extra manifest columns, in order.
    refine : callable or None
        ``refine(fields) -> dict or None``: completes the fields of a file (e.g. the gender),
        or returns None for a file to skip.
    skipped_what : str
        What the files ``refine`` skips are, for the log.

    Example
    -------
    >>> demo = CodedCorpus("demo", r"(?P<spk_id>\w)_(?P<emo>\w)\.wav", {"n": "neu"}, ("a",), ())
    >>> demo.raw_labels
    ('neu',)
    """

    name: str
    name_pattern: str
    emotions: dict
    speakers: tuple
    extras: tuple
    refine: Optional[Callable] = None
    skipped_what: str = "skipped"

    @property
    def raw_labels(self):
        """Every raw label of the corpus."""
        return tuple(self.emotions.values())

    def fields(self, path, match):
        """Manifest fields of a file whose name matched, or None when it is skipped."""
        fields = match.groupdict()
        fields.update(ID=path.stem, path=path, raw_emo=self.emotions[fields.pop("emo")])
        return self.refine(fields) if self.refine else fields


def prepare_coded_corpus(
    corpus,
    data_folder,
    save_folder,
    fold,
    n_folds,
    label_map=None,
    options=None,
    skip=False,
    train_groups=None,
):
    r"""Prepares the manifests of a ``CodedCorpus`` with speaker folds.

    The speakers of ``corpus.speakers``, sorted, are cut into ``n_folds`` contiguous groups
    (see ``contiguous_folds``): fold ``k`` tests group ``k`` and validates on group ``k + 1``
    (group 1 for the last fold); every other speaker trains.

    Arguments
    ---------
    corpus : CodedCorpus
        What to read and how.
    data_folder : path-like
        Searched recursively for wav files.
    save_folder : path-like
        Output folder of the manifests.
    fold : int
        From 1 to ``n_folds``.
    n_folds : int
        Number of speaker groups.
    label_map : dict or None
        Raw label -> manifest label; None keeps every raw label as it is.
    options : dict or None
        Further corpus options to record (e.g. the label set).
    skip : bool
        If True, do nothing (the ``skip_prep`` of the corpus functions).
    train_groups : int or None
        How many of the other groups train, taken in order after the validation group (see
        ``unused_speakers``); None: all of them. The others' utterances are left out.

    Example
    -------
    >>> import numpy as np
    >>> folder = Path(getfixture("tmpdir"))
    >>> for name in ["a_n", "b_n", "c_w", "c_n"]:
    ...     sf.write(folder / f"{name}.wav", np.zeros(800), 16000)
    >>> pattern = r"(?P<spk_id>\w)_(?P<emo>\w)\.wav"
    >>> demo = CodedCorpus("demo", pattern, {"n": "neu", "w": "ang"}, ("a", "b", "c"), ())
    >>> prepare_coded_corpus(demo, folder, folder / "save", 1, 3, {"neu": "neu"})
    >>> print(open(folder / "save" / "valid.csv").read().strip())
    ID,duration,wav,spk_id,emo,raw_emo
    b_n,0.05000,$data_root/b_n.wav,b,neu,neu
    """
    if skip:
        return
    data_folder = check_data_folder(data_folder, corpus.name)
    identity = {label: label for label in corpus.raw_labels}
    label_map = check_label_map(label_map, identity, corpus.raw_labels, corpus.name)
    test_valid = next_fold_split(corpus.speakers, fold, n_folds, corpus.name)
    unused = set(unused_speakers(corpus.speakers, fold, n_folds, train_groups, corpus.name))
    options = dict(
        options or {},
        corpus=corpus.name,
        data_folder=str(data_folder),
        fold=fold,
        n_folds=n_folds,
        label_map=label_map,
    )
    if train_groups is not None:  # recorded only when set, so older folders stay prepared
        options["train_groups"] = train_groups

    def collect():
        """Scans the corpus and returns its utterances with their labels mapped."""
        found = scan_wavs(data_folder, corpus.name_pattern, corpus.name)
        utterances = [corpus.fields(path, match) for path, match in found]
        kept = [utt for utt in utterances if utt is not None]
        if len(kept) < len(utterances):
            skipped = len(utterances) - len(kept)
            logger.info("%s: skipped %d %s files", corpus.name, skipped, corpus.skipped_what)
        if unused:
            n_kept = len(kept)
            kept = [utt for utt in kept if utt["spk_id"] not in unused]
            logger.info(
                "%s: train_groups=%d leaves out %d files of %d speakers",
                corpus.name,
                train_groups,
                n_kept - len(kept),
                len(unused),
            )
        return apply_label_map(kept, label_map)

    prepare_manifests(
        corpus.name,
        data_folder,
        save_folder,
        options,
        collect,
        test_valid,
        list(corpus.extras),
    )
