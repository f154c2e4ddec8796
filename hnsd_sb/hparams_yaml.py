"""hyperparams.yaml, read and written: the modules of a training hparams file and the
SpeechBrain hparams file of a model folder.

``read_module_specs`` reads the ``features``, ``normalizer`` and ``model`` entries of a training
hparams file as data (ruamel, with ``!ref`` resolved; nothing in the file runs, except the
constructors of hnsd_sb's own model parts, on the meta device, when the model is given by its
parts), and ``render_hparams`` writes a model folder's ``hyperparams.yaml`` for
SpeechBrain's ``from_hparams``, whose ``Pretrainer`` loads the weights with the hooks of
``hnsd_sb.weights``.
"""

import functools
import json
import math
import string
from pathlib import Path

from hyperpyyaml import resolve_references
from ruamel.yaml import YAML
from ruamel.yaml.scalarbool import ScalarBoolean

# SpeechBrain's foreign_class loads the interface class named in this file of a model folder.
INTERFACE_FILE = "custom_interface.py"
INTERFACE_CLASS = "EmotionRecognizer"

# The classes a training hparams file may give the model as parts, for an export to read it (their
# constructors are the only code run): HNSD's parts, and nothing else of hnsd_sb's.
MODEL_PARTS = (
    "SequenceEncoder",
    "UtteranceClassifier",
    "FunctionalsExpert",
    "GatedMultiFeatureUnit",
    "ConcatFusion",
    "AdditiveAttentionPooling",
    "AttentiveStatisticsPooling",
    "MeanPooling",
)
# The text of a model folder's hyperparams.yaml, with $placeholders for the run's values.
_TEMPLATE = Path(__file__).with_name("templates") / "hyperparams.yaml"
# The first line of an exported hparams file: how an existing folder is recognised as ours.
HEADER = "# HNSD speech emotion recognizer exported by hnsd_sb.export"
# Modules of the inference pipeline, with the classes used when a spec leaves them out.
DEFAULT_MODULES = {
    "features": ("hnsd_sb.StaticDynamicFeatures", {}),
    "normalizer": ("hnsd_sb.SpeakerNormalization", {}),
    "model": ("hnsd_sb.HNSD", {}),
}


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


def _our_part(path, where):
    """The class ``path`` names, if it is one of hnsd_sb's model parts (``MODEL_PARTS``)."""
    import hnsd_sb

    name = path.rsplit(".", 1)[-1]
    if name not in MODEL_PARTS or path not in (
        f"hnsd_sb.{name}",
        f"{hnsd_sb._EXPORTS[name]}.{name}",
    ):
        raise ValueError(f"{where} is {path}; a model folder can only hold hnsd_sb's own parts")
    return getattr(hnsd_sb, name)


def _part(value, where):
    """A value of the model's entry: plain, or a part (``!new:`` built, ``!name:`` a factory) of
    hnsd_sb's own classes."""
    tag = getattr(getattr(value, "tag", None), "value", None) or ""
    if not tag.startswith(("!new:", "!name:")):
        return _plain(value, where)
    kind, path = tag.split(":", 1)
    part = _our_part(path, where)
    if hasattr(value, "items"):
        args, kwargs = [], {str(k): _part(v, f"{where}.{k}") for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        args, kwargs = [_part(v, f"{where}[{i}]") for i, v in enumerate(value)], {}
    else:  # `!new:Class` without arguments
        args, kwargs = [], {}
    return part(*args, **kwargs) if kind == "!new" else functools.partial(part, *args, **kwargs)


def _model_sizes(args, where):
    """The sizes (``HNSD.sizes``) of a model given by its parts in a hparams file, built on the
    meta device (no memory, no weights)."""
    import torch

    from hnsd_sb.model import HNSD

    with torch.device("meta"):
        try:
            parts = {str(k): _part(v, f"{where}.{k}") for k, v in args.items()}
        except ValueError:
            raise  # a part that is not ours: the message names it
        except Exception as err:  # a part's constructor refused its arguments
            raise ValueError(f"{where}: {err}") from None
        try:
            return HNSD(**parts).sizes()
        except Exception as err:
            raise ValueError(f"{where}: {err}") from None


def _resolved_tree(hparams_file):
    """The hparams file as a YAML tree, its references resolved as text (nothing built)."""
    with open(hparams_file, encoding="utf-8") as f:
        try:
            text = resolve_references(f).getvalue()
        except Exception as err:
            raise ValueError(f"{hparams_file}: cannot resolve the hparams ({err})") from err
    return YAML(typ="rt").load(text)


def read_top_level(hparams_file, key, default=None):
    """Reads a top-level value of an hparams file, as plain Python, without instantiating
    anything.

    Arguments
    ---------
    hparams_file : str or path-like
        A recipe hparams file.
    key : str
        A top-level key.
    default : object
        Returned when the file lacks ``key``.

    Returns
    -------
    object
        The value (references resolved as text).

    Example
    -------
    >>> path = getfixture("tmpdir").join("hparams.yaml")
    >>> _ = path.write("flag: True\\nmodel: !new:hnsd_sb.HNSD\\n    hidden_size: 8\\n")
    >>> read_top_level(path.strpath, "flag"), read_top_level(path.strpath, "other", 0)
    (True, 0)
    """
    tree = _resolved_tree(hparams_file)
    if not hasattr(tree, "get") or key not in tree:
        return default
    return _plain(tree[key], f"{hparams_file}: {key}")


def read_module_specs(hparams_file):
    """Reads how a training hparams file builds ``modules.features``, ``.normalizer``, ``.model``.

    References are resolved as text and the three ``!new:`` nodes are read as (class path,
    keyword arguments). A model given by its parts (``!name:`` / ``!new:`` of hnsd_sb's classes)
    is built on the meta device and read as its sizes (``HNSD.sizes``), the form of a model
    folder; no other object is instantiated.

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
    tree = _resolved_tree(hparams_file)
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
            tagged = any(getattr(getattr(v, "tag", None), "value", None) for v in node.values())
            if name == "model" and tagged:
                specs[name] = (tag[len("!new:") :], _model_sizes(node, where))
                continue
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


def _yaml_arguments(kwargs):
    """Keyword arguments as the indented YAML mapping under a ``!new:`` tag."""
    return "\n".join(f"    {key}: {_yaml_value(value)}" for key, value in kwargs.items())


def render_hparams(labels, modules, note=""):
    """Writes the text of an exported folder's ``hyperparams.yaml``: the template
    ``templates/hyperparams.yaml`` filled with the labels and the modules' arguments (JSON, which
    is YAML, so every value is quoted as data).

    Arguments
    ---------
    labels : list of str
        Emotion of each output index.
    modules : dict
        ``{"features" | "normalizer" | "model": (class_path, kwargs)}``; missing entries use
        ``DEFAULT_MODULES``. A ``"vector_normalizer"`` entry adds the statistics that z-score
        the pooled vectors per speaker (``vector_normalizer.ckpt``).
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
    comment = "".join(f"\n# {line}" for line in note.splitlines() if line.strip())
    vector = dict.fromkeys(
        ("vector_normalizer", "vector_module", "vector_loadable", "vector_hook"), ""
    )
    if "vector_normalizer" in specs:
        vector_class, vector_args = specs["vector_normalizer"]
        vector["vector_normalizer"] = (
            "\n# The classifier reads each pooled vector z-scored with its speaker's statistics\n"
            "# of the pooled vectors (speakers without them: all speakers' statistics).\n"
            f"vector_normalizer: !new:{vector_class}\n{_yaml_arguments(vector_args)}\n"
        )
        vector["vector_module"] = "\n    vector_normalizer: !ref <vector_normalizer>"
        vector["vector_loadable"] = "\n        vector_normalizer: !ref <vector_normalizer>"
        vector["vector_hook"] = "\n        vector_normalizer: !name:hnsd_sb.weights.load_normalizer"
    text = _TEMPLATE.read_text(encoding="utf-8")
    return string.Template(text).substitute(
        **vector,
        header=HEADER + comment,
        interface_file=INTERFACE_FILE,
        interface_class=INTERFACE_CLASS,
        sample_rate=_yaml_value(sample_rate),
        labels=_yaml_value(list(labels)),
        features_class=features_class,
        features_args=_yaml_arguments(features_args),
        normalizer_class=specs["normalizer"][0],
        normalizer_args=_yaml_arguments(specs["normalizer"][1]),
        model_class=specs["model"][0],
        model_args=_yaml_arguments(specs["model"][1]),
    )
