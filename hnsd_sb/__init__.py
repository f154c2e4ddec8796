"""hnsd-sb: HNSD speech emotion recognition (Cao et al., ICASSP 2021) for SpeechBrain.

The model's parts are ``torch.nn.Module``s that a hyperpyyaml file can wire: feature extraction
(``StaticDynamicFeatures``), speaker-level normalisation (``SpeakerNormalization``), and the
network (``HNSD``), assembled from its encoders (``SequenceEncoder``), fusion
(``GatedMultiFeatureUnit``), pooling (``AdditiveAttentionPooling``) and classifier head
(``UtteranceClassifier``). ``EmotionRecognizer`` runs a trained
model folder (written by ``export_model``) on recordings, the SpeechBrain inference way, or
several at once, their probabilities averaged (``HNSDEnsemble``).

The names below are imported on first use, so that ``import hnsd_sb`` (and ``hnsd --help``)
does not load torch and SpeechBrain, which takes seconds.

Importing the package also drops two SpeechBrain log messages that every run printed and that
say nothing about it (``KNOWN_NOTICES``); all other messages pass.
"""

import importlib
import logging

__version__ = "0.1.0"

_EXPORTS = {
    "HNSD": "hnsd_sb.model",
    "SequenceEncoder": "hnsd_sb.model",
    "UtteranceClassifier": "hnsd_sb.model",
    "FunctionalsExpert": "hnsd_sb.model",
    "AdditiveAttentionPooling": "hnsd_sb.pooling",
    "MeanPooling": "hnsd_sb.pooling",
    "AttentiveStatisticsPooling": "hnsd_sb.pooling",
    "ConcatFusion": "hnsd_sb.fusion",
    "GatedMultiFeatureUnit": "hnsd_sb.fusion",
    "EmotionRecognizer": "hnsd_sb.inference",
    "HNSDEnsemble": "hnsd_sb.ensemble",
    "SpeakerNormalization": "hnsd_sb.normalization",
    "StaticDynamicFeatures": "hnsd_sb.features",
    "export_model": "hnsd_sb.export",
}

__all__ = sorted(_EXPORTS)

# (logger, start of the message) of SpeechBrain notices that are true of every run and not a
# problem: train_logger checks for torchvision when it is imported (we draw our figures with
# matplotlib), and CategoricalEncoder.load_or_create always reloads the file it has just written.
KNOWN_NOTICES = (
    ("speechbrain.utils.train_logger", "torchvision is not available - cannot save figures"),
    ("speechbrain.dataio.encoder", "Load called, but CategoricalEncoder is not empty"),
)


class _DropMessage(logging.Filter):
    """Drops the records of one logger whose message starts with ``prefix``."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        """Tells whether a log record passes.

        Arguments
        ---------
        record : logging.LogRecord
            The record.

        Returns
        -------
        bool
            False (drop) for the known notice, True for every other record.

        Example
        -------
        >>> drop = _DropMessage("noise")
        >>> drop.filter(logging.makeLogRecord({"msg": "noise here"}))
        False
        """
        return not str(record.msg).startswith(self.prefix)


for _name, _prefix in KNOWN_NOTICES:
    _logger = logging.getLogger(_name)
    if not any(getattr(f, "prefix", None) == _prefix for f in _logger.filters):
        _logger.addFilter(_DropMessage(_prefix))


def __getattr__(name):
    """Imports the public classes on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hnsd_sb' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    """The module's names, the lazily imported public classes included (PEP 562).

    Returns
    -------
    list of str
        Sorted names.

    Example
    -------
    >>> "HNSD" in __dir__()
    True
    """
    return sorted(list(globals()) + __all__)
