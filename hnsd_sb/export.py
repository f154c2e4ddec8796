"""Turning a trained HNSD run into a self-contained model folder.

A model folder holds what inference needs and nothing else (no optimiser, scheduler or logger
state)::

    model_info.json       labels, architecture, validation scores, source (plain JSON)
    model.ckpt            the HNSD ``state_dict``
    normalizer.ckpt       SpeakerNormalization statistics (plain tensors and strings)
    vector_normalizer.ckpt  the pooled vectors' statistics per speaker, of runs trained with
                          ``vector_normalization`` (and only those)
    label_encoder.txt     the recipe's SpeechBrain ``CategoricalEncoder`` file
    hyperparams.yaml      the same pipeline, for SpeechBrain's ``from_hparams`` (trusted use)
    custom_interface.py   names ``EmotionRecognizer`` for ``foreign_class`` (trusted use)

``EmotionRecognizer.from_folder`` builds the model from ``model_info.json`` alone (see
``hnsd_sb.model_info``), so loading a folder runs no code from it; the YAML and Python files
serve SpeechBrain's own loaders, which do. ``export_model`` builds a folder from a recipe run
(its best checkpoint by validation UA, ``hnsd_sb.checkpoints.find_checkpoint``);
``write_model_folder`` from weights in memory. The weights are read by ``hnsd_sb.weights``,
the ``hyperparams.yaml`` is read and written by ``hnsd_sb.hparams_yaml``, and the command line
is ``hnsd export`` (``hnsd_sb.cli``).
"""

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from speechbrain.dataio.encoder import CategoricalEncoder

from hnsd_sb import __version__
from hnsd_sb.checkpoints import find_checkpoint
from hnsd_sb.hparams_yaml import (
    DEFAULT_MODULES,
    HEADER,
    INTERFACE_FILE,
    read_module_specs,
    read_top_level,
    render_hparams,
)
from hnsd_sb.model_card import CARD_FILE, render_model_card, summarize_run
from hnsd_sb.model_info import (
    MODEL_INFO_FILE,
    MODULE_CLASSES,
    check_architecture,
    make_model_info,
)
from hnsd_sb.normalization import SpeakerNormalization

# Model folders written before hnsd_sb.weights existed name its hooks hnsd_sb.export.*, and
# the fine-tuning hparams files of that time did too: they stay importable from here.
from hnsd_sb.weights import (  # noqa: F401
    MODEL_FILE,
    NORMALIZER_FILE,
    VECTOR_NORMALIZER_FILE,
    checkpoint_model_file,
    find_model_file,
    load_normalizer,
    load_state,
    load_weights,
    transfer_parameters,
)

logger = logging.getLogger(__name__)

HPARAMS_FILE = "hyperparams.yaml"
LABEL_ENCODER_FILE = "label_encoder.txt"
FOLDER_FILES = (
    HPARAMS_FILE,
    MODEL_FILE,
    NORMALIZER_FILE,
    LABEL_ENCODER_FILE,
    INTERFACE_FILE,
    MODEL_INFO_FILE,
    CARD_FILE,
)
# The files of some folders only: replaced (never kept from a previous export) all the same.
OPTIONAL_FILES = (VECTOR_NORMALIZER_FILE,)


INTERFACE_SOURCE = '''"""Interface of this HNSD model folder for SpeechBrain's foreign_class:

    from speechbrain.inference.interfaces import foreign_class
    foreign_class(FOLDER, pymodule_file="custom_interface.py", classname="EmotionRecognizer")

The class itself lives in the hnsd_sb package (pip install hnsd-sb); this file only names it.
"""

from hnsd_sb.inference import EmotionRecognizer

__all__ = ["EmotionRecognizer"]
'''

# The statistics of the pooled vectors: a speaker without them gets all speakers' (the
# recipes' PooledSpeakerNormalization), since one vector has no spread of its own.
VECTOR_MODULE = ("hnsd_sb.SpeakerNormalization", {"unseen": "global"})


def _check_destination(folder, overwrite):
    """Refuses to write into a non-empty folder that is not a previous export."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    hparams = folder / HPARAMS_FILE
    ours = False
    if hparams.is_file():
        with contextlib.suppress(OSError), open(hparams, "rb") as f:
            ours = f.read(len(HEADER)) == HEADER.encode()
    if not ours:
        raise FileExistsError(f"{folder}: not empty and not an exported model folder")
    if not overwrite:
        raise FileExistsError(
            f"{folder}: already holds an exported model (pass --overwrite to replace it)"
        )


def architecture_of(modules, model_state, where):
    """The ``architecture`` entry of ``model_info.json`` from module specs.

    Arguments
    ---------
    modules : dict or None
        ``{"features" | "normalizer" | "model": (class_path, kwargs)}``; missing entries use
        ``DEFAULT_MODULES``.
    model_state : dict
        The HNSD ``state_dict``: its output layer gives ``n_classes`` when the spec omits it.
    where : str or path-like
        The file being written, for error messages.

    Returns
    -------
    dict
        ``{"features" | "normalizer" | "model": kwargs}``, checked by ``check_architecture``.

    Raises
    ------
    ValueError
        A module is not hnsd_sb's own class, or an argument is outside the schema.

    Example
    -------
    >>> state = {"classifier.output.weight": torch.zeros(3, 8)}
    >>> architecture_of({"model": ("hnsd_sb.HNSD", {"fc_size": 8})}, state, "x")["model"]
    {'fc_size': 8, 'n_classes': 3}
    """
    specs = dict(DEFAULT_MODULES)
    specs.update(modules or {})
    architecture = {}
    for name, (class_path, kwargs) in specs.items():
        ours = MODULE_CLASSES[name].split(".")[-1]
        # hnsd_sb.HNSD and hnsd_sb.model.HNSD name the same class; nothing else is ours.
        if class_path not in (MODULE_CLASSES[name], f"hnsd_sb.{ours}"):
            raise ValueError(
                f"{where}: modules.{name} is {class_path}; a model folder can only hold "
                f"hnsd_sb's own {ours}"
            )
        architecture[name] = dict(kwargs)
    architecture["features"].setdefault("sample_rate", 16000)
    for key in ("classifier.output.weight", "output.weight"):  # now, and before the parts
        if "n_classes" not in architecture["model"] and key in model_state:
            architecture["model"]["n_classes"] = int(model_state[key].shape[0])
    return check_architecture(architecture, where)


def write_model_folder(
    folder,
    labels,
    model_state,
    normalizer_state=None,
    modules=None,
    note="",
    overwrite=False,
    info=None,
    run=None,
    onnx=False,
    int8=False,
    vector_state=None,
):
    """Writes a model folder from weights in memory, then loads it back to check it.

    Arguments
    ---------
    folder : str or path-like
        Output folder; created if missing. It must be empty, or hold a previous export and
        ``overwrite`` be True (other files of the user's in it are kept). It is written next
        to its destination and renamed into place, so a failure leaves nothing half-written.
    labels : list of str
        Emotion of each output index.
    model_state : dict
        The HNSD ``state_dict``.
    normalizer_state : dict or None
        ``SpeakerNormalization.state()``; None stores no speakers.
    modules : dict or None
        ``{"features" | "normalizer" | "model": (class_path, kwargs)}`` (see
        ``read_module_specs``); missing entries use ``DEFAULT_MODULES``.
    note : str
        Comment lines for the header of ``hyperparams.yaml``.
    overwrite : bool
        Replace a previous export in ``folder``.
    info : dict or None
        Extra ``make_model_info`` arguments for ``model_info.json`` (``validation``,
        ``source``, ``epoch``).
    run : dict or None
        ``hnsd_sb.model_card.summarize_run`` of the run the weights come from, for the model
        card (``README.md``); None: the card says the training is unknown.
    onnx : bool
        Also write ``model.onnx``, the network for ONNX Runtime (``hnsd_sb.backends``), checked
        against PyTorch.
    int8 : bool
        With ``onnx``: also write ``model.int8.onnx``, its dynamic int8 quantisation.
    vector_state : dict or None
        ``SpeakerNormalization.state()`` of the pooled vectors, for a model whose classifier
        reads them z-scored per speaker (``PooledSpeakerNormalization``); None: a plain model.

    Returns
    -------
    pathlib.Path
        The folder.

    Example
    -------
    >>> from hnsd_sb import HNSD
    >>> folder = Path(getfixture("tmpdir")) / "model"
    >>> spec = {"model": ("hnsd_sb.HNSD", {"hidden_size": 8, "fc_size": 4, "n_classes": 2})}
    >>> model = HNSD(hidden_size=8, fc_size=4, n_classes=2)
    >>> _ = write_model_folder(folder, ["neg", "pos"], model.state_dict(), modules=spec)
    >>> sorted(p.name for p in folder.iterdir())
    ['README.md', 'custom_interface.py', 'hyperparams.yaml', 'label_encoder.txt', 'model.ckpt', \
'model_info.json', 'normalizer.ckpt']
    """
    from hnsd_sb.inference import EmotionRecognizer  # inference imports this module

    # A link to a folder: write where it points, and keep the link.
    folder = Path(os.path.realpath(os.path.expanduser(str(folder))))
    if Path.cwd().resolve().is_relative_to(folder):
        raise FileExistsError(
            f"{folder}: is (or holds) the current folder, which cannot be replaced; export to "
            "another folder"
        )
    _check_destination(folder, overwrite)
    if vector_state is not None:
        modules = {**(modules or {}), "vector_normalizer": VECTOR_MODULE}
    labels = [str(label) for label in labels]
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be distinct and non-empty, got {labels}")
    model_info = make_model_info(
        labels,
        version=__version__,
        architecture=architecture_of(modules, model_state, folder / MODEL_INFO_FILE),
        **(info or {}),
    )
    # Written next to its destination, checked, then renamed into place: a failure (a full
    # disk, a mismatch) leaves no half-written folder, and a previous export stays intact.
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; a model folder is not
    try:
        (staging / HPARAMS_FILE).write_text(render_hparams(labels, modules, note), "utf-8")
        weights = {key: value.detach().cpu() for key, value in model_state.items()}
        torch.save(weights, staging / MODEL_FILE)
        if normalizer_state is None:
            normalizer_state = {"speakers": [], "count": torch.zeros(0), "sum": None}
            normalizer_state["sumsq"] = None
        torch.save(normalizer_state, staging / NORMALIZER_FILE)
        if vector_state is not None:
            torch.save(vector_state, staging / VECTOR_NORMALIZER_FILE)
        encoder = CategoricalEncoder()
        encoder.update_from_iterable(labels)
        encoder.save(staging / LABEL_ENCODER_FILE)
        (staging / INTERFACE_FILE).write_text(INTERFACE_SOURCE, encoding="utf-8")
        (staging / MODEL_INFO_FILE).write_text(json.dumps(model_info, indent=2) + "\n", "utf-8")
        n_parameters = sum(value.numel() for value in weights.values() if value.is_floating_point())
        card = render_model_card(model_info, n_parameters, run)
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        # Loading it back catches any mismatch between the architecture and the weights, and
        # SpeechBrain's route through hyperparams.yaml must give the same model.
        recognizer = _check_both_routes(EmotionRecognizer, staging)
        if onnx:
            from hnsd_sb import backends

            for norm in recognizer.vector_norms:  # the graph z-scores the vectors itself
                norm.detach()
            vectors = bool(recognizer.vector_norms)
            backends.export_onnx(recognizer.mods.model, staging / backends.ONNX_FILE, True, vectors)
            if int8:
                int8_file = staging / backends.ONNX_INT8_FILE
                backends.quantize_onnx(staging / backends.ONNX_FILE, int8_file)
                backends.check_onnx(recognizer.mods.model, int8_file, backends.INT8_TOLERANCE)
    except (OSError, RuntimeError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        reason = str(err)
        if "unexpected pos" in reason:  # how torch.save reports a full disk
            reason = f"no space left on the device? torch: {reason}"
        message = f"{folder}: cannot write the model folder ({reason}); nothing was written"
        raise OSError(message) from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        _swap_into_place(staging, folder)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise OSError(f"{folder}: {err}") from err
    return folder


def _check_both_routes(recognizer_class, folder):
    """Loads a written model folder from ``model_info.json`` and from ``hyperparams.yaml`` (the
    yaml is the one just rendered from the run's own specs) and checks that both give the same
    outputs; raises ValueError naming the yaml otherwise. Returns the one from the JSON."""
    run_opts = {"device": "cpu"}
    from_info = recognizer_class.from_folder(folder, run_opts=run_opts)
    try:
        from_yaml = recognizer_class.from_hparams(
            source=str(folder), savedir=str(folder), run_opts=run_opts
        )
    except Exception as err:  # hyperpyyaml and the Pretrainer raise many types
        raise ValueError(
            f"{folder / HPARAMS_FILE}: the exported file does not load ({err})"
        ) from err
    wavs = torch.randn(2, from_info.sample_rate, generator=torch.Generator().manual_seed(0))
    same = torch.allclose(from_info.infer_batch(wavs)[0], from_yaml.infer_batch(wavs)[0])
    if not same or from_info.labels != list(from_yaml.labels):
        raise ValueError(
            f"{folder / HPARAMS_FILE}: gives another model than {MODEL_INFO_FILE}; please report"
        )
    return from_info


def _swap_into_place(staging, folder):
    """Renames a complete staging folder to ``folder``, replacing a previous export; files of
    the user's in the previous folder are kept."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    # The previous folder is retired whole before the new one takes its place, and the user's
    # files come over after: whenever this is interrupted, every file is in the previous folder,
    # the new one, or the retired copy (named in the error), never deleted.
    retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    old = retired / folder.name
    os.replace(folder, old)
    try:
        os.replace(staging, folder)
    except OSError as err:
        os.replace(old, folder)
        retired.rmdir()
        raise OSError(f"cannot move the new model into place ({err}); nothing was changed") from err
    try:
        for extra in old.iterdir():
            if (
                extra.name not in FOLDER_FILES + OPTIONAL_FILES
                and not (folder / extra.name).exists()
            ):
                os.replace(extra, folder / extra.name)
    except OSError as err:
        raise OSError(
            f"the new model is in place, but some of your files stayed in {old} ({err})"
        ) from err
    shutil.rmtree(retired, ignore_errors=True)


def _run_summary(run_folder, checkpoint, epoch):
    """``summarize_run`` of the run, its test scores kept only when they are of the exported
    checkpoint: the epoch they record, or (runs that did not record it) the best-UA one, which
    train.py tests."""
    run = summarize_run(run_folder)
    tested = (run["test"] or {}).get("epoch")
    if tested is None:
        same = find_checkpoint(run_folder, max_key="UA").path == checkpoint.path
    else:
        same = str(tested) == epoch
    if not same:
        run["test"] = None
    return run


def export_model(
    source, folder, hparams_file=None, max_key="UA", overwrite=False, onnx=False, int8=False
):
    """Exports a recipe run's best checkpoint (or a given one) to a model folder.

    Arguments
    ---------
    source : str or path-like
        A run's output folder (holding ``hyperparams.yaml`` and ``save/``), its save folder, or
        one ``CKPT+...`` folder of it.
    folder : str or path-like
        The model folder to write (see ``write_model_folder``).
    hparams_file : str or path-like or None
        The run's hparams; default: the ``hyperparams.yaml`` the recipe saved in the run's
        output folder.
    max_key : str
        Checkpoint meta key that picks the best checkpoint.
    overwrite : bool
        Replace a previous export in ``folder``.
    onnx, int8 : bool
        Also write ``model.onnx`` (and its int8 quantisation), see ``write_model_folder``.

    Returns
    -------
    pathlib.Path
        The model folder.

    Raises
    ------
    FileNotFoundError
        Naming the file: the run's hparams, label encoder or a checkpoint file is missing;
        or, for a run that z-scored its pooled vectors per speaker (``vector_normalization``),
        the statistics its training saves in the selected checkpoint when it ends.
    ValueError
        Naming the file: an unreadable label encoder or statistics.

    Example
    -------
    >>> from speechbrain.utils.checkpoints import Checkpointer
    >>> from hnsd_sb import HNSD, SpeakerNormalization
    >>> run = Path(getfixture("tmpdir")) / "run"
    >>> _ = (run / "save").mkdir(parents=True)
    >>> _ = (run / "hyperparams.yaml").write_text(
    ...     "model: !new:hnsd_sb.HNSD\\n    hidden_size: 8\\n    n_classes: 2\\n"
    ...     "normalizer: !new:hnsd_sb.SpeakerNormalization\\n"
    ...     "modules:\\n    model: !ref <model>\\n    normalizer: !ref <normalizer>\\n")
    >>> model, norm = HNSD(hidden_size=8, n_classes=2), SpeakerNormalization()
    >>> ckpt = Checkpointer(run / "save", {"model": model, "normalizer": norm})
    >>> _ = ckpt.save_checkpoint(meta={"UA": 55.0})
    >>> enc = CategoricalEncoder()
    >>> enc.update_from_iterable(["neg", "pos"])
    >>> enc.save(run / "save" / "label_encoder.txt")
    >>> out = export_model(run, run.parent / "model")
    >>> "# Exported from" in (out / "hyperparams.yaml").read_text()
    True
    """
    source = Path(os.path.abspath(os.path.expanduser(str(source))))
    checkpoint = find_checkpoint(source, max_key=max_key)
    ckpt_dir = Path(checkpoint.path)
    save_folder, run_folder = ckpt_dir.parent, ckpt_dir.parent.parent
    if hparams_file is None:
        hparams_file = run_folder / HPARAMS_FILE
        if not hparams_file.is_file():
            raise FileNotFoundError(
                f"{hparams_file}: the run's hparams file is missing; pass it explicitly"
            )
    vector_state = None
    vector_file = ckpt_dir / VECTOR_NORMALIZER_FILE
    vectors = read_top_level(hparams_file, "vector_normalization", False)
    if vectors is None:  # fine-tuning's "as the pretrained model": the run saved what it did
        vectors = vector_file.is_file()
    if vectors:
        if not vector_file.is_file():
            raise FileNotFoundError(
                f"{vector_file}: missing; the run z-scored its pooled vectors per speaker "
                "(vector_normalization), and the recipe saves their statistics when it ends, "
                "in the checkpoint of best validation UA only: export that one, or run the "
                "training command again to write them (a finished run only evaluates); "
                "nothing was exported"
            )
        vector_normalizer = SpeakerNormalization(**VECTOR_MODULE[1])
        load_normalizer(vector_normalizer, vector_file)
        vector_state = vector_normalizer.state()
    label_file = save_folder / LABEL_ENCODER_FILE
    if not label_file.is_file():
        raise FileNotFoundError(f"{label_file}: the run's label encoder is missing")
    encoder = CategoricalEncoder()
    try:
        encoder.load(label_file)
        labels = [encoder.ind2lab[i] for i in range(len(encoder))]
    except Exception as err:  # SpeechBrain's parser raises many types
        raise ValueError(f"{label_file}: not a label encoder file ({err})") from None
    model_file = checkpoint_model_file(ckpt_dir)  # the weight average, if the run kept one
    for path in (model_file, ckpt_dir / NORMALIZER_FILE):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the checkpoint")
    normalizer = SpeakerNormalization()
    load_normalizer(normalizer, ckpt_dir / NORMALIZER_FILE)
    scores = ", ".join(
        f"{key} {checkpoint.meta[key]}" for key in ("UA", "WA") if key in checkpoint.meta
    )
    note = f"Exported from {ckpt_dir}" + (f" (validation {scores})" if scores else "")
    counter = ckpt_dir / "counter.ckpt"  # the epoch counter's checkpoint: the epoch number
    try:
        epoch = counter.read_text(encoding="utf-8").strip() if counter.is_file() else ""
    except (OSError, UnicodeDecodeError):
        epoch = ""  # the card and model_info.json then say the epoch is unknown
    validation = {key: checkpoint.meta[key] for key in ("UA", "WA") if key in checkpoint.meta}
    out = write_model_folder(
        folder,
        labels,
        load_state(model_file),
        normalizer.state(),
        read_module_specs(hparams_file),
        note=note,
        overwrite=overwrite,
        info={
            "validation": validation,
            "source": ckpt_dir,
            "epoch": int(epoch) if epoch.isdigit() else None,
        },
        run=_run_summary(run_folder, checkpoint, epoch),
        onnx=onnx,
        int8=int8,
        vector_state=vector_state,
    )
    logger.info("Exported %s to %s", ckpt_dir, out)
    return out


def main(argv=None):
    """``python -m hnsd_sb.export SOURCE FOLDER [options]``: the same as ``hnsd export``.

    Arguments
    ---------
    argv : list of str or None
        Arguments after the module name; None reads ``sys.argv``.

    Returns
    -------
    int
        Exit status: 0 on success, 1 when the export failed (the message names the file).

    Example
    -------
    >>> main([str(getfixture("tmpdir") / "nowhere"), "out"])  # the error goes to stderr
    1
    """
    from hnsd_sb.cli import main as cli_main

    return cli_main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
