"""Reading trained weights safely: the ``Pretrainer`` hooks and where a fine-tuning run starts.

``load_weights`` (strict), ``load_normalizer`` and ``transfer_parameters`` (chosen submodules,
for fine-tuning) are the ``Pretrainer`` hooks of the exported and fine-tuning hparams files;
``find_model_file`` finds the weights a fine-tuning run starts from (a checkpoint's weight
average, ``averaged_model.ckpt``, when the run kept one; else its ``model.ckpt``). All read with
``torch.load(weights_only=True)``, so no arbitrary object is ever unpickled, and their errors
name the file.
"""

import logging
import os
import zipfile
from pathlib import Path

import torch

from hnsd_sb.checkpoints import find_checkpoint
from hnsd_sb.files import is_plain_file
from hnsd_sb.model import HNSD, newer_name
from hnsd_sb.model_info import MODEL_INFO_FILE

logger = logging.getLogger(__name__)

MODEL_FILE = "model.ckpt"
# A run trained with weight averaging (the recipes' ``average_epochs``) checkpoints the average
# here, beside the trained weights in model.ckpt; validation and test scored the average.
AVERAGED_MODEL_FILE = "averaged_model.ckpt"
NORMALIZER_FILE = "normalizer.ckpt"
# A run that z-scored its pooled vectors per speaker (the recipes' ``vector_normalization``)
# saves those statistics, of its selected checkpoint's network, in that checkpoint here; a model
# folder keeps them under the same name.
VECTOR_NORMALIZER_FILE = "vector_normalizer.ckpt"
# Log-Mel energies (dB) and their deltas stay within some hundreds: moments beyond this are a
# damaged or forged statistics file, and would overflow the normalised float32 features.
MAX_FEATURE_MOMENT = 1e6
# Largest normalizer.ckpt read: 64 MiB is some 50 000 speakers of 78 features.
NORMALIZER_MAX_BYTES = 64 << 20


def load_state(path, max_bytes=None):
    """``torch.load`` restricted to tensors and plain containers; errors name the file.

    With ``max_bytes``, a file whose content would unpack to more is refused before it is read
    (a zip entry may be compressed, so the file's own size says little).

    Arguments
    ---------
    path : str or path-like
        A file written by ``torch.save``.
    max_bytes : int or None
        Largest unpacked size accepted.

    Returns
    -------
    object
        What the file holds (tensors, numbers, strings and containers of them).

    Example
    -------
    >>> path = getfixture("tmpdir").join("w.ckpt").strpath
    >>> torch.save({"w": torch.ones(2)}, path)
    >>> load_state(path)["w"].tolist()
    [1.0, 1.0]
    """
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
    state = load_state(path, max_bytes)
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
    state = load_state(path, NORMALIZER_MAX_BYTES)
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
                f"features (mean or standard deviation beyond {MAX_FEATURE_MOMENT:g})"
            )


def _within(key, name):
    """Whether parameter ``key`` belongs to the submodule ``name`` (e.g. ``classifier.fc``)."""
    return key == name or key.startswith(name + ".")


def transfer_parameters(module, path, include=None, exclude=()):
    """Copies chosen submodules' parameters from a ``state_dict`` file into a module.

    The fine-tuning ``Pretrainer`` hook: ``include`` names the submodules to take (e.g. the
    encoders, GMU, attention and ``classifier.fc`` of HNSD) and everything else keeps its fresh
    initialisation, so the output layer can have a different number of classes. Files and names
    of HNSD's earlier layout (``fc``, ``output`` at the top) are taken as their parts now. A
    parameter that is taken must exist in ``module`` with the same shape: a silent partial load
    would fine-tune a different architecture than the one asked for.

    Arguments
    ---------
    module : torch.nn.Module
        The module to initialise.
    path : str or path-like
        The pretrained ``state_dict`` (a model folder's or checkpoint's ``model.ckpt``).
    include : list of str or None
        Submodule names (dotted, e.g. ``classifier.fc``) to transfer; None transfers every
        top-level one not excluded.
    exclude : list of str
        Submodule names never transferred.

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
    >>> names = transfer_parameters(new, path, include=["static_encoder", "classifier.fc"])
    >>> names
    ['classifier.fc.bias', 'classifier.fc.weight', 'static_encoder.lstm.bias_hh_l0', \
'static_encoder.lstm.bias_ih_l0', 'static_encoder.lstm.weight_hh_l0', \
'static_encoder.lstm.weight_ih_l0']
    >>> transfer_parameters(HNSD(hidden_size=16), path, include=["fc"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...model.ckpt: classifier.fc.bias has shape [4] but the model's is [128]; ...
    """
    state = load_state(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, found a {type(state).__name__}")
    own = module.state_dict()
    include = None if include is None else list(include)
    exclude = list(exclude)
    if isinstance(module, HNSD):  # files and names of the earlier layout (fc, output, encoder)
        state = {newer_name(module, key): value for key, value in state.items()}
        include, exclude = (
            None if names is None else [newer_name(module, n) for n in names]
            for names in (include, exclude)
        )
    wanted = set(include) if include is not None else {key.split(".")[0] for key in state}
    wanted -= set(exclude)
    for name in sorted(wanted):
        for where, keys in ((str(path), state), (type(module).__name__, own)):
            if not any(_within(key, name) for key in keys):
                raise ValueError(f"{path}: {where} has no submodule {name!r} to transfer")
    taken = {}
    for key in sorted(state):
        if not any(_within(key, n) for n in wanted) or any(_within(key, n) for n in exclude):
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
    fresh = sorted({key.rsplit(".", 1)[0] for key in own if key not in taken})
    logger.info(
        "Transferred %d tensors (%s) from %s; newly initialised: %s",
        len(taken),
        ", ".join(sorted(wanted)),
        path,
        ", ".join(fresh) or "nothing",
    )
    return sorted(taken)


def checkpoint_model_file(ckpt_dir):
    """The weights of a checkpoint that its validation score belongs to: the weight average
    (``averaged_model.ckpt``) of a run trained with one, otherwise ``model.ckpt``.

    Arguments
    ---------
    ckpt_dir : str or path-like
        A ``CKPT+...`` folder.

    Returns
    -------
    pathlib.Path
        The weights file (which may be missing: the caller says so).

    Example
    -------
    >>> folder = Path(getfixture("tmpdir"))
    >>> checkpoint_model_file(folder).name
    'model.ckpt'
    >>> torch.save({}, folder / "averaged_model.ckpt")
    >>> checkpoint_model_file(folder).name
    'averaged_model.ckpt'
    """
    ckpt_dir = Path(ckpt_dir)
    averaged = ckpt_dir / AVERAGED_MODEL_FILE
    return averaged if averaged.is_file() else ckpt_dir / MODEL_FILE


def find_model_file(source):
    """Finds the ``model.ckpt`` to start from: in a model folder, a checkpoint folder, or the
    best checkpoint (max validation UA) of a recipe run (of a run trained with weight
    averaging, the averaged weights, see ``checkpoint_model_file``).

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
    if path.name.startswith("CKPT+"):
        return str(checkpoint_model_file(path))
    if (path / MODEL_FILE).is_file():
        return str(path / MODEL_FILE)
    return str(checkpoint_model_file(find_checkpoint(path).path))


def pretrained_vector_normalization(model_file):
    """Whether a model was trained on pooled vectors z-scored per speaker (the recipes'
    ``vector_normalization``), as far as its files say.

    It was when ``vector_normalizer.ckpt`` lies beside its weights (a model folder, or a
    finished run's selected checkpoint), and was not when a model folder lacks the file. Other
    checkpoints do not say. The fine-tuning files follow it (``vector_normalization: null``).

    Arguments
    ---------
    model_file : str or path-like
        The weights a fine-tuning run starts from (``find_model_file``).

    Returns
    -------
    bool or None
        True or False; None when the files do not say.

    Example
    -------
    >>> folder = Path(getfixture("tmpdir"))
    >>> print(pretrained_vector_normalization(folder / "model.ckpt"))
    None
    >>> (folder / "model_info.json").touch()
    >>> pretrained_vector_normalization(folder / "model.ckpt")
    False
    >>> (folder / VECTOR_NORMALIZER_FILE).touch()
    >>> pretrained_vector_normalization(folder / "model.ckpt")
    True
    """
    folder = Path(model_file).parent
    if (folder / VECTOR_NORMALIZER_FILE).is_file():
        return True
    if (folder / MODEL_INFO_FILE).is_file():
        return False
    return None
