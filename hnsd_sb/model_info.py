"""What a model folder says about itself: ``model_info.json``, plain data.

``hnsd export`` writes the file next to the weights: the labels, the architecture (the keyword
arguments of the three modules), the validation scores of the exported checkpoint and where it
came from. ``hnsd info`` prints it and ``hnsd predict`` warns from it, both without loading
torch or SpeechBrain, so they answer at once. A model whose validation UA is within
``NEAR_CHANCE_MARGIN`` points of chance has barely learned, and its labels mean little: the
warning says so rather than letting such a model pass for a result.

Loading a model folder builds it from this file alone, so that a folder from a stranger runs no
code: ``check_architecture`` accepts only the keys of ``ARCHITECTURE``, with their types and
ranges, plus the consistency of the fields with each other (sizes are bounded, so a tampered
file cannot ask for terabytes either), and ``hnsd_sb.inference`` builds only hnsd_sb's own three
classes from it. Every other field is checked on reading as well, so a malformed file is an
error that names it and its field, never a traceback.
"""

import importlib
import json
import math
import os
import unicodedata
from pathlib import Path

from hnsd_sb.files import is_plain_file

MODEL_INFO_FILE = "model_info.json"
FORMAT_VERSION = 1
MAX_INFO_BYTES = 1 << 20  # a real model_info.json is about 2 kB
# Rates a model may work at: the usual ones, whose resampling filters from any file rate stay
# small (see hnsd_sb.audio.resampling_rate); an odd one would make every file cost gigabytes.
MODEL_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# The STFT of one second of audio may hold at most this many values (n_fft // 2 + 1 bins times
# 1000 / hop_length frames): 10 times the recipe's 201 x 100, so absurd but in-range n_fft and
# hop lengths cannot ask for gigabytes per file.
MAX_STFT_VALUES_PER_SECOND = 201_000
# The defaults of the fields a folder may leave out (the classes' own: a test checks they agree),
# so that fields are checked against each other whether written out or not.
DEFAULTS = {
    "features": {"sample_rate": 16000, "n_mels": 26, "win_length": 25, "hop_length": 10,
                 "n_fft": 400, "f_min": 0, "f_max": None},
    "model": {"n_static": 26, "n_dynamic": 52},
}  # fmt: skip
# The modules of a model folder: the class built for each, and its arguments as
# (key, allowed types, bounds or choices). Bounds are inclusive; None as a type allows None;
# choices are named by the class attribute that lists them.
MODULE_CLASSES = {
    "features": "hnsd_sb.features.StaticDynamicFeatures",
    "normalizer": "hnsd_sb.normalization.SpeakerNormalization",
    "model": "hnsd_sb.model.HNSD",
    "vector_normalizer": "hnsd_sb.normalization.SpeakerNormalization",
}
# Modules a model folder may leave out: the statistics that z-score the pooled vectors per
# speaker (vector_normalizer.ckpt), for runs trained with the recipes' vector_normalization.
OPTIONAL_MODULES = ("vector_normalizer",)
_INT, _NUM = (int,), (int, float)
ARCHITECTURE = {
    "features": {
        "sample_rate": (_INT, "hnsd_sb.model_info.MODEL_SAMPLE_RATES"),
        "n_mels": (_INT, (1, 512)),
        "win_length": (_NUM, (1, 1000)),
        "hop_length": (_NUM, (1, 100)),
        "n_fft": (_INT, (16, 16384)),
        "delta_window": (_INT, (3, 99)),
        "f_min": (_NUM, (0, 192000)),
        "f_max": (_NUM + (type(None),), (1, 192000)),
        "trim_db": (_NUM + (type(None),), (1, 300)),
    },
    "normalizer": {
        "unseen": ((str,), "hnsd_sb.normalization.UNSEEN_POLICIES"),
        "std_floor": (_NUM, (1e-12, 1)),
    },
    "vector_normalizer": {
        "unseen": ((str,), "hnsd_sb.normalization.VECTOR_UNSEEN_POLICIES"),
        "std_floor": (_NUM, (1e-12, 1)),
    },
    "model": {
        "n_static": (_INT, (1, 4096)),
        "n_dynamic": (_INT, (1, 4096)),
        "hidden_size": (_INT, (1, 4096)),
        "attention_size": (_INT, (1, 4096)),
        "fc_size": (_INT, (1, 4096)),
        "n_classes": (_INT, (2, 10000)),
        "fusion_size": (_INT + (type(None),), (1, 4096)),
        "num_layers": (_INT, (1, 8)),
        "bidirectional": ((bool,), None),
        "dropout": (_NUM, (0, 1)),
        "streams": ((str,), "hnsd_sb.model.STREAMS"),
        "fusion": ((str,), "hnsd_sb.model.FUSIONS"),
        "pooling": ((str,), "hnsd_sb.model.POOLINGS"),
        "expert": ((bool,), None),
        "stack_frames": (_INT, (1, 100)),
    },
}
# Points of UA above chance (100 / number of classes) below which a model is "near chance".
NEAR_CHANCE_MARGIN = 10.0


OLD_EXPORT_HELP = (
    "it was exported by an older hnsd-sb and has no architecture in model_info.json, so "
    "loading it would run the code in its hyperparams.yaml. Export the run again with "
    "`hnsd export RUN_DIR MODEL_DIR`; or, only if you trust the folder, load it with "
    "EmotionRecognizer.from_hparams(source=FOLDER), which runs that code"
)


def check_model_folder(folder):
    """Raises the error of a path that is no loadable model folder, before anything heavy is
    imported.

    Arguments
    ---------
    folder : str or path-like
        The model folder.

    Raises
    ------
    FileNotFoundError
        ``folder`` holds neither ``model_info.json`` nor ``hyperparams.yaml``.
    ValueError
        ``folder`` is an export of an older hnsd-sb (``hyperparams.yaml`` only): the message
        says how to export it again.

    Example
    -------
    >>> check_model_folder("/no/such/model")
    Traceback (most recent call last):
    ...
    FileNotFoundError: /no/such/model: not a model folder (no model_info.json); ...
    """
    path = Path(os.path.abspath(os.path.expanduser(str(folder))))
    if (path / MODEL_INFO_FILE).exists():
        return  # read_model_info says what is wrong with it, if anything
    if (path / "hyperparams.yaml").is_file():
        raise ValueError(f"{folder}: {OLD_EXPORT_HELP}")
    raise FileNotFoundError(
        f"{folder}: not a model folder (no {MODEL_INFO_FILE}); make one with `hnsd export`"
    )


def read_architecture(folder):
    """Reads and checks the labels and the architecture of a model folder.

    Arguments
    ---------
    folder : str or path-like
        The model folder.

    Returns
    -------
    labels : list of str
        Emotion of each output index.
    architecture : dict
        ``{"features" | "normalizer" | "model" [| "vector_normalizer"]: kwargs}``, checked by
        ``check_architecture``.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the file and the field at fault.

    Example
    -------
    >>> folder = Path(getfixture("tmpdir"))
    >>> arch = {"features": {}, "normalizer": {}, "model": {"n_classes": 2}}
    >>> info = make_model_info(["neg", "pos"], architecture=arch)  # as hnsd export writes it
    >>> _ = (folder / MODEL_INFO_FILE).write_text(json.dumps(info))
    >>> read_architecture(folder)[0]
    ['neg', 'pos']
    """
    check_model_folder(folder)
    info = read_model_info(folder)
    where = Path(folder) / MODEL_INFO_FILE
    if info.get("architecture") is None:
        if (Path(folder) / "hyperparams.yaml").is_file():
            raise ValueError(f"{folder}: {OLD_EXPORT_HELP}")
        raise ValueError(
            f"{where}: no architecture (an export of an older hnsd-sb, or a damaged file): "
            "export the run again with `hnsd export RUN_DIR MODEL_DIR`"
        )
    labels = info["labels"]
    architecture = check_architecture(info["architecture"], where)
    n_classes = architecture["model"].get("n_classes")
    if n_classes != len(labels):
        raise ValueError(
            f"{where}: {len(labels)} labels but the model has {n_classes} outputs "
            "(architecture.model.n_classes)"
        )
    return labels, architecture


def _choices(name):
    """The tuple of allowed values named ``module.ATTRIBUTE`` (imported on first use)."""
    module, attribute = name.rsplit(".", 1)
    return getattr(importlib.import_module(module), attribute)


def check_architecture(architecture, where):
    """Checks a model folder's architecture against ``ARCHITECTURE``: keys, types and ranges.

    Arguments
    ---------
    architecture : object
        The ``architecture`` entry of ``model_info.json``.
    where : str
        The file, for error messages.

    Returns
    -------
    dict
        ``{"features" | "normalizer" | "model" [| "vector_normalizer"]: kwargs}``, every value
        checked.

    Raises
    ------
    ValueError
        Naming the file and the offending field.

    Example
    -------
    >>> arch = {"features": {"n_mels": 26}, "normalizer": {}, "model": {"n_classes": 4}}
    >>> check_architecture(arch, "model_info.json")["model"]
    {'n_classes': 4}
    >>> check_architecture({**arch, "model": {"hidden_size": 10**9}}, "model_info.json")
    Traceback (most recent call last):
    ...
    ValueError: model_info.json: architecture.model.hidden_size is 1000000000, outside [1, 4096]
    """
    required = set(ARCHITECTURE) - set(OPTIONAL_MODULES)
    if not isinstance(architecture, dict) or not required <= set(architecture) <= set(ARCHITECTURE):
        raise ValueError(
            f"{where}: architecture must be an object with the keys {sorted(required)} (and "
            f"optionally {list(OPTIONAL_MODULES)})"
        )
    checked = {}
    for module, schema in ARCHITECTURE.items():
        if module not in architecture:
            continue
        kwargs = architecture[module]
        if not isinstance(kwargs, dict):
            raise ValueError(f"{where}: architecture.{module} must be an object")
        for key, value in kwargs.items():
            field = f"architecture.{module}.{key}"
            if key not in schema:
                raise ValueError(f"{where}: unknown field {field} (known: {sorted(schema)})")
            types, limits = schema[key]
            # bool is an int in Python: only accept it where bool is meant, and vice versa.
            if type(value) not in types:
                names = "/".join("null" if t is type(None) else t.__name__ for t in types)
                raise ValueError(f"{where}: {field} must be {names}, got {value!r}")
            if isinstance(limits, str) and value not in _choices(limits):
                raise ValueError(
                    f"{where}: {field} is {value!r}, not one of {list(_choices(limits))}"
                )
            if isinstance(limits, tuple) and value is not None:
                low, high = limits
                finite = not isinstance(value, float) or math.isfinite(value)
                if not (finite and low <= value <= high):
                    raise ValueError(f"{where}: {field} is {value!r}, outside [{low}, {high}]")
        checked[module] = dict(kwargs)
    _check_consistency(checked, where)
    return checked


def _check_consistency(architecture, where):
    """Checks fields that must agree with each other, given or left to their defaults."""
    features = {**DEFAULTS["features"], **architecture["features"]}
    model = {**DEFAULTS["model"], **architecture["model"]}
    n_mels = features["n_mels"]
    for key, value in (("n_static", n_mels), ("n_dynamic", 2 * n_mels)):
        if model[key] != value:
            raise ValueError(
                f"{where}: architecture.model.{key} is {model[key]} but the features give "
                f"{value} (n_mels {n_mels})"
            )
    rate, n_fft = features["sample_rate"], features["n_fft"]
    window = features["win_length"] * rate / 1000
    if window > n_fft:
        raise ValueError(
            f"{where}: architecture.features.win_length {features['win_length']} ms is "
            f"{window:g} samples, more than n_fft {n_fft}"
        )
    f_max = rate / 2 if features["f_max"] is None else features["f_max"]
    if not features["f_min"] < f_max <= rate / 2:
        raise ValueError(
            f"{where}: architecture.features needs f_min < f_max <= sample_rate / 2, got "
            f"f_min {features['f_min']}, f_max {f_max}, sample_rate {rate}"
        )
    hop = features["hop_length"]
    values = (n_fft // 2 + 1) * 1000 / hop
    if values > MAX_STFT_VALUES_PER_SECOND:
        raise ValueError(
            f"{where}: architecture.features n_fft {n_fft} with hop_length {hop} ms gives "
            f"{values:.3g} STFT values per second of audio (at most "
            f"{MAX_STFT_VALUES_PER_SECOND:.3g})"
        )


def make_model_info(
    labels, validation=None, source=None, epoch=None, version=None, architecture=None
):
    """Builds the content of ``model_info.json``.

    Arguments
    ---------
    labels : list of str
        The model's labels, in output order.
    validation : dict or None
        Validation scores of the exported checkpoint, e.g. ``{"UA": 61.2, "WA": 63.0}`` (%).
    source : str or None
        The checkpoint folder it was exported from.
    epoch : int or None
        The epoch whose checkpoint was exported.
    version : str or None
        The hnsd-sb version that exported it.
    architecture : dict or None
        ``{"features" | "normalizer" | "model": kwargs}`` of the modules (see
        ``check_architecture``).

    Returns
    -------
    dict
        JSON-ready information, with the chance-level UA (``chance_UA``).

    Example
    -------
    >>> info = make_model_info(["neg", "pos"], {"UA": 80.0}, epoch=3)
    >>> info["chance_UA"], info["validation"]["UA"], info["epoch"]
    (50.0, 80.0, 3)
    """
    labels = [str(label) for label in labels]
    return {
        "format": FORMAT_VERSION,
        "labels": labels,
        "chance_UA": round(100.0 / len(labels), 2),
        "validation": {key: float(value) for key, value in (validation or {}).items()},
        "epoch": epoch,
        "exported_from": None if source is None else str(source),
        "hnsd_sb_version": version,
        "architecture": architecture,
    }


def read_model_info(folder):
    """Reads a model folder's ``model_info.json``.

    Arguments
    ---------
    folder : str or path-like
        The model folder.

    Returns
    -------
    dict or None
        The information; None when the folder has no such file (exported by an older hnsd-sb).

    Raises
    ------
    ValueError
        The file is not valid JSON or lacks the labels; the message names it.

    Example
    -------
    >>> folder = Path(getfixture("tmpdir"))
    >>> read_model_info(folder) is None
    True
    >>> _ = (folder / MODEL_INFO_FILE).write_text(json.dumps(make_model_info(["a", "b"])))
    >>> read_model_info(folder)["labels"]
    ['a', 'b']
    """
    path = Path(folder) / MODEL_INFO_FILE
    if not path.exists():
        return None
    if not is_plain_file(path):  # a FIFO would block, a folder mislead
        raise ValueError(f"{path}: not a regular file")
    if path.stat().st_size > MAX_INFO_BYTES:
        raise ValueError(
            f"{path}: {path.stat().st_size} bytes, too large for a model information file"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from None
    except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, too many digits, too deep
        raise ValueError(f"{path}: not a valid model information file ({err})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: not a JSON object")
    _check_fields(info, path)
    return info


def _plain_text(value):
    """Whether a string is printable as is: valid Unicode, no control characters (a terminal
    would obey escape sequences in a label or a path)."""
    return isinstance(value, str) and not any(
        unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in value
    )


def _check_fields(info, path):
    """Checks the fields of ``model_info.json`` other than the architecture."""
    version = info.get("format", FORMAT_VERSION)  # the first exports may lack it
    if type(version) is not int or version < 1:
        raise ValueError(f"{path}: format must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: written by a newer hnsd-sb (format {version}; this one reads up to "
            f"{FORMAT_VERSION}): upgrade hnsd-sb"
        )
    labels = info.get("labels")
    if not isinstance(labels, list) or not labels:
        raise ValueError(f"{path}: labels must be a non-empty list")
    if not all(_plain_text(label) and label for label in labels):
        raise ValueError(
            f"{path}: labels must be non-empty strings without control characters, got "
            f"{ascii(labels)}"
        )
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: labels are not distinct: {labels}")
    validation = info.get("validation") or {}
    if not isinstance(validation, dict) or not all(
        _plain_text(k) and type(v) in _NUM and math.isfinite(v) for k, v in validation.items()
    ):
        raise ValueError(
            f"{path}: validation must map score names to numbers, got {ascii(validation)}"
        )
    epoch = info.get("epoch")
    if epoch is not None and (type(epoch) is not int or epoch < 0):
        raise ValueError(f"{path}: epoch must be a non-negative integer or null, got {epoch!r}")
    for key in ("exported_from", "hnsd_sb_version"):
        if info.get(key) is not None and not _plain_text(info[key]):
            raise ValueError(
                f"{path}: {key} must be a string without control characters or null, got "
                f"{ascii(info[key])}"
            )


def near_chance_warning(info):
    """A warning when the model's validation UA is near chance, else None.

    Arguments
    ---------
    info : dict or None
        As read by ``read_model_info``.

    Returns
    -------
    str or None
        The warning text, or None (the model learned, or its scores are unknown).

    Example
    -------
    >>> print(near_chance_warning(make_model_info(["a", "b", "c", "d"], {"UA": 27.5})))
    validation UA 27.5 % is near chance (25.0 % for 4 classes): this model has barely learned, \
so its labels mean little; train it longer or on more data
    >>> near_chance_warning(make_model_info(["a", "b", "c", "d"], {"UA": 70.0})) is None
    True
    """
    if not info or "UA" not in (info.get("validation") or {}):
        return None
    ua, chance = float(info["validation"]["UA"]), 100.0 / len(info["labels"])
    if ua >= chance + NEAR_CHANCE_MARGIN:
        return None
    return (
        f"validation UA {ua:.1f} % is near chance ({chance:.1f} % for {len(info['labels'])} "
        "classes): this model has barely learned, so its labels mean little; train it longer "
        "or on more data"
    )


def describe(info):
    """Human-readable lines about a model folder, as ``hnsd info`` prints them.

    Arguments
    ---------
    info : dict
        As read by ``read_model_info``.

    Returns
    -------
    list of str
        One line per fact.

    Example
    -------
    >>> for line in describe(make_model_info(["neg", "pos"], {"UA": 80.0, "WA": 79.5}, epoch=7)):
    ...     print(line)
    labels: neg, pos (chance UA 50.0 %)
    validation: UA 80.0 %, WA 79.5 % (epoch 7)
    """
    chance = round(100.0 / len(info["labels"]), 2)  # from the labels, whatever the file says
    lines = [f"labels: {', '.join(info['labels'])} (chance UA {chance} %)"]
    scores = ", ".join(f"{k} {v:.1f} %" for k, v in (info.get("validation") or {}).items())
    if scores:
        epoch = info.get("epoch")
        lines.append(f"validation: {scores}" + (f" (epoch {epoch})" if epoch else ""))
    if info.get("exported_from"):
        lines.append(f"exported from: {info['exported_from']}")
    if info.get("hnsd_sb_version"):
        lines.append(f"exported by: hnsd-sb {info['hnsd_sb_version']}")
    return lines
