"""Turning a trained HNSD run into a self-contained model folder, and loading weights safely.

A model folder holds what inference needs and nothing else (no optimiser, scheduler or logger
state)::

    model_info.json       labels, architecture, validation scores, source (plain JSON)
    model.ckpt            the HNSD ``state_dict``
    normalizer.ckpt       SpeakerNormalization statistics (plain tensors and strings)
    label_encoder.txt     the recipe's SpeechBrain ``CategoricalEncoder`` file
    hyperparams.yaml      the same pipeline, for SpeechBrain's ``from_hparams`` (trusted use)
    custom_interface.py   names ``EmotionRecognizer`` for ``foreign_class`` (trusted use)

``EmotionRecognizer.from_folder`` builds the model from ``model_info.json`` alone (see
``hnsd_sb.model_info``), so loading a folder runs no code from it; the YAML and Python files
serve SpeechBrain's own loaders, which do. ``export_model`` builds a folder from a recipe run
(its best checkpoint by validation UA); ``write_model_folder`` from weights in memory.
``load_weights`` (strict), ``load_normalizer`` and ``transfer_parameters`` (chosen submodules,
for fine-tuning) are also the ``Pretrainer`` hooks of the exported and fine-tuning hparams
files; all read with ``torch.load(weights_only=True)``, so no arbitrary object is ever
unpickled, and their errors name the file.
"""

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from hyperpyyaml import resolve_references
from ruamel.yaml import YAML
from ruamel.yaml.scalarbool import ScalarBoolean
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.checkpoints import Checkpointer

from hnsd_sb import __version__
from hnsd_sb.cli import add_export_arguments
from hnsd_sb.files import is_plain_file
from hnsd_sb.model_card import CARD_FILE, render_model_card, summarize_run
from hnsd_sb.model_info import (
    MODEL_INFO_FILE,
    MODULE_CLASSES,
    check_architecture,
    make_model_info,
    near_chance_warning,
    read_model_info,
)
from hnsd_sb.normalization import SpeakerNormalization

logger = logging.getLogger(__name__)

HPARAMS_FILE = "hyperparams.yaml"
MODEL_FILE = "model.ckpt"
NORMALIZER_FILE = "normalizer.ckpt"
LABEL_ENCODER_FILE = "label_encoder.txt"
INTERFACE_FILE = "custom_interface.py"
INTERFACE_CLASS = "EmotionRecognizer"
FOLDER_FILES = (
    HPARAMS_FILE,
    MODEL_FILE,
    NORMALIZER_FILE,
    LABEL_ENCODER_FILE,
    INTERFACE_FILE,
    MODEL_INFO_FILE,
    CARD_FILE,
)
# The first line of an exported hparams file: how an existing folder is recognised as ours.
HEADER = "# HNSD speech emotion recognizer exported by hnsd_sb.export"

# Log-Mel energies (dB) and their deltas stay within some hundreds: moments beyond this are a
# damaged or forged statistics file, and would overflow the normalised float32 features.
MAX_FEATURE_MOMENT = 1e6
# Largest normalizer.ckpt read: 64 MiB is some 50 000 speakers of 78 features.
NORMALIZER_MAX_BYTES = 64 << 20
# Modules of the inference pipeline, with the classes used when a spec leaves them out.
DEFAULT_MODULES = {
    "features": ("hnsd_sb.StaticDynamicFeatures", {}),
    "normalizer": ("hnsd_sb.SpeakerNormalization", {}),
    "model": ("hnsd_sb.HNSD", {}),
}

INTERFACE_SOURCE = '''"""Interface of this HNSD model folder for SpeechBrain's foreign_class:

    from speechbrain.inference.interfaces import foreign_class
    foreign_class(FOLDER, pymodule_file="custom_interface.py", classname="EmotionRecognizer")

The class itself lives in the hnsd_sb package (pip install hnsd-sb); this file only names it.
"""

from hnsd_sb.inference import EmotionRecognizer

__all__ = ["EmotionRecognizer"]
'''


def _load_state(path, max_bytes=None):
    """``torch.load`` restricted to tensors and plain containers; errors name the file.

    With ``max_bytes``, a file whose content would unpack to more is refused before it is read
    (a zip entry may be compressed, so the file's own size says little)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if not is_plain_file(path):  # a FIFO would block, a device never end
        raise ValueError(f"{path}: not a regular file")
    if max_bytes is not None:
        size = path.stat().st_size
        if zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as archive:
                    size = sum(entry.file_size for entry in archive.infolist())
            except (zipfile.BadZipFile, OSError, ValueError) as err:
                raise ValueError(f"{path}: a damaged archive ({err})") from None
        if size > max_bytes:
            raise ValueError(
                f"{path}: unpacks to {size:,} bytes, more than the {max_bytes:,} expected"
            )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors have many types
        reason = str(err)
        if "Weights only load failed" in reason:  # torch's advice to unpickle is not ours
            reason = "it holds objects that only a full unpickling, which can run code, would load"
        raise ValueError(
            f"{path}: not a weights file torch.load(weights_only=True) reads ({reason})"
        ) from err


def load_weights(module, path):
    """Loads a ``state_dict`` file into a module, strictly (the exported folders' ``Pretrainer``
    hook for the model).

    Arguments
    ---------
    module : torch.nn.Module
        The module to fill.
    path : str or path-like
        A file written by ``torch.save(module.state_dict())``.

    Raises
    ------
    ValueError
        Naming the file, when it is not a plain weights file or does not fit the module.

    Example
    -------
    >>> path = getfixture("tmpdir").join("lin.ckpt").strpath
    >>> torch.save(torch.nn.Linear(2, 3).state_dict(), path)
    >>> load_weights(torch.nn.Linear(2, 3), path)
    >>> load_weights(torch.nn.Linear(3, 3), path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...lin.ckpt does not fit Linear: ...size mismatch for weight...
    """
    # 8 bytes a parameter (float64 at most) and some room for the pickle
    max_bytes = 8 * sum(p.numel() for p in module.state_dict().values()) + (1 << 20)
    state = _load_state(path, max_bytes)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit {type(module).__name__}: {err}") from err
    if not all(
        bool(torch.isfinite(p).all()) for p in module.state_dict().values() if p.is_floating_point()
    ):
        raise ValueError(f"{path}: the weights hold NaN or Inf")


def load_normalizer(normalizer, path, n_features=None):
    """Loads ``SpeakerNormalization`` statistics (the exported folders' ``Pretrainer`` hook for
    the normaliser), checking their structure: errors name the file.

    Arguments
    ---------
    normalizer : hnsd_sb.SpeakerNormalization
        The normaliser to fill.
    path : str or path-like
        A file holding ``SpeakerNormalization.state()``.
    n_features : int or None
        The number of features the statistics must have (the model's input), if known.

    Raises
    ------
    ValueError
        The file is not such statistics, or they are inconsistent (lengths, shapes, counts,
        non-finite values, ``n_features``).

    Example
    -------
    >>> from hnsd_sb import SpeakerNormalization
    >>> a, b = SpeakerNormalization(), SpeakerNormalization()
    >>> a.accumulate(torch.randn(1, 5, 3), torch.ones(1), ["spk"])
    >>> path = getfixture("tmpdir").join("normalizer.ckpt").strpath
    >>> torch.save(a.state(), path)
    >>> load_normalizer(b, path)
    >>> b.speakers
    ['spk']
    >>> load_normalizer(b, path, n_features=4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...normalizer.ckpt: statistics of 3 features, but the model takes 4
    """
    state = _load_state(path, NORMALIZER_MAX_BYTES)
    if not isinstance(state, dict) or not {"speakers", "count", "sum", "sumsq"} <= set(state):
        raise ValueError(f"{path}: not SpeakerNormalization statistics")
    speakers, count, total, sumsq = (state[k] for k in ("speakers", "count", "sum", "sumsq"))
    if not isinstance(speakers, list) or not all(isinstance(s, str) for s in speakers):
        raise ValueError(f"{path}: speakers must be a list of strings")
    if len(set(speakers)) != len(speakers):
        raise ValueError(f"{path}: a speaker is listed twice")
    if speakers:
        tensors = (count, total, sumsq)
        if not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in tensors):
            raise ValueError(f"{path}: count, sum and sumsq must be float tensors")
        n = len(speakers)
        if (
            count.shape != (n,)
            or total.dim() != 2
            or total.shape[0] != n
            or sumsq.shape != total.shape
        ):
            raise ValueError(
                f"{path}: {n} speakers but count {tuple(count.shape)}, sum {tuple(total.shape)}, "
                f"sumsq {tuple(sumsq.shape)} (expected [{n}], [{n}, F], [{n}, F])"
            )
        if not all(bool(torch.isfinite(t).all()) for t in tensors) or bool((count <= 0).any()):
            raise ValueError(f"{path}: statistics must be finite, with positive frame counts")
        if n_features is not None and total.shape[1] != n_features:
            raise ValueError(
                f"{path}: statistics of {total.shape[1]} features, but the model takes {n_features}"
            )
    normalizer.load_state(state)
    for speaker in normalizer.speakers:  # finite sums can still give absurd moments
        mean, std = normalizer.speaker_moments(speaker)
        if not (mean.abs().max() <= MAX_FEATURE_MOMENT and std.max() <= MAX_FEATURE_MOMENT):
            raise ValueError(
                f"{path}: the statistics of speaker {speaker!r} overflow or are not those of "
                f"log-Mel features (mean or standard deviation beyond {MAX_FEATURE_MOMENT:g})"
            )


def transfer_parameters(module, path, include=None, exclude=()):
    """Copies chosen submodules' parameters from a ``state_dict`` file into a module.

    The fine-tuning ``Pretrainer`` hook: ``include`` names the top-level submodules to take
    (e.g. the encoders, GMU, attention and FC layer of HNSD) and everything else keeps its fresh
    initialisation, so the output layer can have a different number of classes. A parameter
    that is taken must exist in ``module`` with the same shape: a silent partial load would
    fine-tune a different architecture than the one asked for.

    Arguments
    ---------
    module : torch.nn.Module
        The module to initialise.
    path : str or path-like
        The pretrained ``state_dict`` (a model folder's or checkpoint's ``model.ckpt``).
    include : list of str or None
        Top-level submodule names to transfer; None transfers every one not excluded.
    exclude : list of str
        Top-level submodule names never transferred.

    Returns
    -------
    list of str
        The parameter names copied.

    Raises
    ------
    ValueError
        Naming the file, when an included submodule is missing from it or from ``module``, or a
        shape differs.

    Example
    -------
    >>> from hnsd_sb import HNSD
    >>> path = getfixture("tmpdir").join("model.ckpt").strpath
    >>> torch.save(HNSD(hidden_size=8, fc_size=4, n_classes=4).state_dict(), path)
    >>> new = HNSD(hidden_size=8, fc_size=4, n_classes=7)
    >>> names = transfer_parameters(new, path, include=["static_encoder", "fc"])
    >>> names
    ['fc.bias', 'fc.weight', 'static_encoder.lstm.bias_hh_l0', 'static_encoder.lstm.bias_ih_l0', \
'static_encoder.lstm.weight_hh_l0', 'static_encoder.lstm.weight_ih_l0']
    >>> transfer_parameters(HNSD(hidden_size=16), path, include=["fc"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...model.ckpt: fc.bias has shape [4] but the model's is [128]; ...
    """
    state = _load_state(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, found a {type(state).__name__}")
    own = module.state_dict()
    wanted = set(include) if include is not None else {key.split(".")[0] for key in state}
    wanted -= set(exclude)
    for name in sorted(wanted):
        for where, keys in ((str(path), state), (type(module).__name__, own)):
            if not any(key.split(".")[0] == name for key in keys):
                raise ValueError(f"{path}: {where} has no submodule {name!r} to transfer")
    taken = {}
    for key in sorted(state):
        if key.split(".")[0] not in wanted:
            continue
        if key not in own:
            raise ValueError(f"{path}: {key} has no counterpart in {type(module).__name__}")
        if state[key].shape != own[key].shape:
            raise ValueError(
                f"{path}: {key} has shape {list(state[key].shape)} but the model's is "
                f"{list(own[key].shape)}; set the model sizes (e.g. lstm_size, fc_size) to "
                f"those of the pretrained model"
            )
        taken[key] = state[key]
    module.load_state_dict(taken, strict=False)
    fresh = sorted({key.split(".")[0] for key in own} - wanted)
    logger.info(
        "Transferred %d tensors (%s) from %s; newly initialised: %s",
        len(taken),
        ", ".join(sorted(wanted)),
        path,
        ", ".join(fresh) or "nothing",
    )
    return sorted(taken)


def find_model_file(source):
    """Finds the ``model.ckpt`` to start from: in a model folder, a checkpoint folder, or the
    best checkpoint (max validation UA) of a recipe run.

    Used by the fine-tuning hparams files (``!apply:``) so that a wrong path fails at once with
    its name, and is never mistaken for a Hugging Face model id.

    Arguments
    ---------
    source : str or path-like or None
        A model folder (``hnsd export``), a ``CKPT+...`` folder, a run's save folder, a run's
        output folder, or the ``model.ckpt`` file itself. ``None``: nothing to start from (a
        fine-tuning hparams file then trains from scratch, the baseline a transfer is judged by).

    Returns
    -------
    str or None
        Absolute path of the ``model.ckpt`` file (``None`` for ``None``).

    Example
    -------
    >>> folder = Path(getfixture("tmpdir"))
    >>> torch.save({}, folder / "model.ckpt")
    >>> find_model_file(folder) == str(folder / "model.ckpt")
    True
    >>> find_model_file(folder / "nowhere")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: .../nowhere: no such file or folder
    """
    if source is None:
        return None
    path = Path(os.path.abspath(os.path.expanduser(str(source))))
    if path.is_file():
        return str(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if (path / MODEL_FILE).is_file():
        return str(path / MODEL_FILE)
    return str(find_checkpoint(path).path / MODEL_FILE)


def _save_folder(source):
    """The folder holding the CKPT+ folders of a run given as output or save folder."""
    for folder in (source, source / "save"):
        if folder.is_dir() and any(p.name.startswith("CKPT+") for p in folder.iterdir()):
            return folder
    raise FileNotFoundError(
        f"{source}: no checkpoints (CKPT+... folders) in it or in {source / 'save'}"
    )


def find_checkpoint(source, max_key="UA"):
    """Finds the best checkpoint of a recipe run.

    Arguments
    ---------
    source : str or path-like
        A run's output folder, its save folder, or a ``CKPT+...`` folder (returned as is).
    max_key : str
        Checkpoint meta key to maximise (the recipe records ``UA`` and ``WA``).

    Returns
    -------
    speechbrain.utils.checkpoints.Checkpoint
        With ``path`` (the ``CKPT+...`` folder) and ``meta``.

    Example
    -------
    >>> save = Path(getfixture("tmpdir"))
    >>> ckpt = Checkpointer(save, {"lin": torch.nn.Linear(1, 1)})
    >>> for ua in (40.0, 60.0, 50.0):
    ...     _ = ckpt.save_checkpoint(meta={"UA": ua}, name=f"ua{ua:.0f}")
    >>> find_checkpoint(save).path.name
    'CKPT+ua60'
    """
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder")
    try:  # SpeechBrain parses every CKPT.yaml of the folder
        if (source / "CKPT.yaml").is_file():
            return Checkpointer(source.parent).find_checkpoint(
                ckpt_predicate=lambda ckpt: ckpt.path.name == source.name
            )
        save_folder = _save_folder(source)
        best = Checkpointer(save_folder).find_checkpoint(max_key=max_key)
    except OSError:
        raise
    except Exception as err:  # YAML and decoding errors of many types
        raise ValueError(f"{source}: a checkpoint's CKPT.yaml cannot be read ({err})") from None
    if best is None:
        raise FileNotFoundError(f"{save_folder}: no checkpoint records {max_key!r} in its meta")
    return best


def _plain(value, where):
    """A YAML value as plain Python (scalars, lists, dicts); objects cannot be exported."""
    tag = getattr(getattr(value, "tag", None), "value", None)
    if tag and tag.startswith("!"):
        raise ValueError(f"{where} is a {tag} object; only plain arguments can be exported")
    if isinstance(value, (bool, ScalarBoolean)) or value is None:
        return None if value is None else bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is not finite: {value}")
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(f"{where} has an unsupported type {type(value).__name__}")


def read_module_specs(hparams_file):
    """Reads how a training hparams file builds ``modules.features``, ``.normalizer``, ``.model``.

    Nothing is instantiated: references are resolved as text and the three ``!new:`` nodes are
    read as (class path, keyword arguments).

    Arguments
    ---------
    hparams_file : str or path-like
        A recipe hparams file, typically the resolved ``<output_folder>/hyperparams.yaml``.

    Returns
    -------
    dict
        ``{"features" | "normalizer" | "model": (class_path, kwargs)}``.

    Example
    -------
    >>> path = getfixture("tmpdir").join("hparams.yaml")
    >>> _ = path.write("size: 8\\nmodel: !new:hnsd_sb.HNSD\\n    hidden_size: !ref <size>\\n"
    ...                "modules:\\n    model: !ref <model>\\n")
    >>> read_module_specs(path.strpath)["model"]
    ('hnsd_sb.HNSD', {'hidden_size': 8})
    """
    with open(hparams_file, encoding="utf-8") as f:
        try:
            text = resolve_references(f).getvalue()
        except Exception as err:
            raise ValueError(f"{hparams_file}: cannot resolve the hparams ({err})") from err
    tree = YAML(typ="rt").load(text)
    modules = tree.get("modules") if hasattr(tree, "get") else None
    if not hasattr(modules, "get") or "model" not in modules:
        raise ValueError(f"{hparams_file}: no modules.model entry")
    specs = {}
    for name, (default_class, _) in DEFAULT_MODULES.items():
        node = modules.get(name)
        if node is None:
            specs[name] = (default_class, {})
            continue
        tag = getattr(getattr(node, "tag", None), "value", None) or ""
        if not tag.startswith("!new:"):
            raise ValueError(f"{hparams_file}: modules.{name} is not a !new: object")
        if hasattr(node, "items"):
            where = f"{hparams_file}: modules.{name}"
            args = {str(k): _plain(v, f"{where}.{k}") for k, v in node.items()}
        elif str(getattr(node, "value", "x")) == "":  # `!new:Class` without arguments
            args = {}
        else:
            raise ValueError(f"{hparams_file}: modules.{name} has positional arguments")
        specs[name] = (tag[len("!new:") :], args)
    return specs


def _yaml_value(value):
    """A plain value as YAML text (JSON is valid YAML and quotes every string)."""
    return json.dumps(value)


def _module_block(name, class_path, kwargs, refs=None):
    lines = [f"{name}: !new:{class_path}"]
    for key, value in kwargs.items():
        text = (refs or {}).get(key) or _yaml_value(value)
        lines.append(f"    {key}: {text}")
    return "\n".join(lines)


def render_hparams(labels, modules, note=""):
    """Writes the text of an exported folder's ``hyperparams.yaml``.

    Arguments
    ---------
    labels : list of str
        Emotion of each output index.
    modules : dict
        ``{"features" | "normalizer" | "model": (class_path, kwargs)}``; missing entries use
        ``DEFAULT_MODULES``.
    note : str
        Extra comment lines for the header (e.g. where the weights come from).

    Returns
    -------
    str
        The YAML text.

    Example
    -------
    >>> text = render_hparams(["neg", "pos"], {"model": ("hnsd_sb.HNSD", {"n_classes": 2})})
    >>> print(text.split("# ####")[0].strip())
    # HNSD speech emotion recognizer exported by hnsd_sb.export
    """
    specs = dict(DEFAULT_MODULES)
    specs.update(modules or {})
    features_class, features_args = specs["features"]
    features_args = dict(features_args)
    sample_rate = features_args.pop("sample_rate", 16000)
    features_args = {"sample_rate": sample_rate, **features_args}
    comment = "".join(f"# {line}\n" for line in note.splitlines() if line.strip())
    blocks = [
        f"{HEADER}\n{comment}"
        "# ############################################################################\n"
        "# Load it with hnsd_sb.inference.EmotionRecognizer.from_hparams(source=FOLDER), or\n"
        "# speechbrain.inference.interfaces.foreign_class(source=FOLDER,\n"
        f'#     pymodule_file="{INTERFACE_FILE}", classname="{INTERFACE_CLASS}").\n'
        "# Pipeline: features -> speaker normalisation (unseen speakers: see `unseen`) -> model.\n"
        "# ############################################################################",
        f"sample_rate: {_yaml_value(sample_rate)}\n"
        f"labels: {_yaml_value(list(labels))}  # emotion of each output index",
        _module_block(
            "features", features_class, features_args, {"sample_rate": "!ref <sample_rate>"}
        ),
        "# Speakers without statistics (neither trained nor enrolled) are normalised with\n"
        '# `unseen`: "utterance" (the utterance\'s own statistics) or "global" (all speakers\').\n'
        + _module_block("normalizer", *specs["normalizer"]),
        _module_block("model", *specs["model"]),
        "modules:\n"
        "    features: !ref <features>\n"
        "    normalizer: !ref <normalizer>\n"
        "    model: !ref <model>",
        "# Both files are read with torch.load(weights_only=True); the model strictly.\n"
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
        "    loadables:\n"
        "        model: !ref <model>\n"
        "        normalizer: !ref <normalizer>\n"
        "    custom_hooks:\n"
        "        model: !name:hnsd_sb.export.load_weights\n"
        "        normalizer: !name:hnsd_sb.export.load_normalizer",
    ]
    return "\n\n".join(blocks) + "\n"


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
    >>> state = {"output.weight": torch.zeros(3, 8)}
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
    if "n_classes" not in architecture["model"] and "output.weight" in model_state:
        architecture["model"]["n_classes"] = int(model_state["output.weight"].shape[0])
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
            from hnsd_sb.backends import ONNX_FILE, ONNX_INT8_FILE, export_onnx, quantize_onnx

            export_onnx(recognizer.mods.model, staging / ONNX_FILE)
            if int8:
                quantize_onnx(staging / ONNX_FILE, staging / ONNX_INT8_FILE)
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
            if extra.name not in FOLDER_FILES and not (folder / extra.name).exists():
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

    Example
    -------
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
    label_file = save_folder / LABEL_ENCODER_FILE
    if not label_file.is_file():
        raise FileNotFoundError(f"{label_file}: the run's label encoder is missing")
    encoder = CategoricalEncoder()
    try:
        encoder.load(label_file)
        labels = [encoder.ind2lab[i] for i in range(len(encoder))]
    except Exception as err:  # SpeechBrain's parser raises many types
        raise ValueError(f"{label_file}: not a label encoder file ({err})") from None
    for name in (MODEL_FILE, NORMALIZER_FILE):
        if not (ckpt_dir / name).is_file():
            raise FileNotFoundError(f"{ckpt_dir / name}: missing from the checkpoint")
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
        _load_state(ckpt_dir / MODEL_FILE),
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
    )
    logger.info("Exported %s to %s", ckpt_dir, out)
    return out


def main(argv=None):
    """Command line: ``python -m hnsd_sb.export SOURCE FOLDER`` (also ``hnsd export``).

    Arguments
    ---------
    argv : list of str or None
        Arguments; None reads ``sys.argv``.

    Returns
    -------
    int
        Exit status: 0 on success, 1 when the export failed (the message names the file).

    Example
    -------
    >>> main([str(getfixture("tmpdir") / "nowhere"), "out"])  # the error goes to stderr
    1
    """
    parser = argparse.ArgumentParser(
        prog="hnsd export", description=export_model.__doc__.splitlines()[0]
    )
    add_export_arguments(parser)
    return run_export(parser.parse_args(argv))


def run_export(args):
    """Runs an export from parsed arguments, printing the outcome.

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


if __name__ == "__main__":
    sys.exit(main())
