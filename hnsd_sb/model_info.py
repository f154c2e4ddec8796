"""What a model folder says about itself: ``model_info.json``, read without torch.

``hnsd export`` writes the file next to the weights: the labels, the validation scores of the
exported checkpoint and where it came from. ``hnsd info`` prints it and ``hnsd predict`` warns
from it, both without loading torch or SpeechBrain, so they answer at once. A model whose
validation UA is within ``NEAR_CHANCE_MARGIN`` points of chance has barely learned, and its
labels mean little: the warning says so rather than letting such a model pass for a result.
"""

import json
import os
from pathlib import Path

MODEL_INFO_FILE = "model_info.json"
FORMAT_VERSION = 1
# Points of UA above chance (100 / number of classes) below which a model is "near chance".
NEAR_CHANCE_MARGIN = 10.0


def check_model_folder(folder):
    """Raises the error of a path that is no model folder, before anything heavy is imported.

    Arguments
    ---------
    folder : str or path-like
        The model folder.

    Raises
    ------
    FileNotFoundError
        ``folder`` holds no ``hyperparams.yaml``; the message names it.

    Example
    -------
    >>> check_model_folder("/no/such/model")
    Traceback (most recent call last):
    ...
    FileNotFoundError: /no/such/model: not a model folder (no hyperparams.yaml); ...
    """
    path = Path(os.path.abspath(os.path.expanduser(str(folder))))
    if not (path / "hyperparams.yaml").is_file():
        raise FileNotFoundError(
            f"{folder}: not a model folder (no hyperparams.yaml); make one with `hnsd export`"
        )


def make_model_info(labels, validation=None, source=None, epoch=None, version=None):
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
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a valid model information file ({err})") from None
    if not isinstance(info, dict) or not isinstance(info.get("labels"), list):
        raise ValueError(f"{path}: no list of labels")
    return info


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
    lines = [f"labels: {', '.join(info['labels'])} (chance UA {info['chance_UA']} %)"]
    scores = ", ".join(f"{k} {v:.1f} %" for k, v in (info.get("validation") or {}).items())
    if scores:
        epoch = info.get("epoch")
        lines.append(f"validation: {scores}" + (f" (epoch {epoch})" if epoch else ""))
    if info.get("exported_from"):
        lines.append(f"exported from: {info['exported_from']}")
    if info.get("hnsd_sb_version"):
        lines.append(f"exported by: hnsd-sb {info['hnsd_sb_version']}")
    return lines
