"""hnsd-sb: HNSD speech emotion recognition (Cao et al., ICASSP 2021) for SpeechBrain.

The model's parts are ``torch.nn.Module``s that a hyperpyyaml file can wire: feature extraction
(``StaticDynamicFeatures``), speaker-level normalisation (``SpeakerNormalization``), the encoders
and classifier (``HNSD``), and the fusion (``GatedMultiFeatureUnit``) and pooling
(``AdditiveAttentionPooling``) units they are built from. ``EmotionRecognizer`` runs a trained
model folder (written by ``export_model``) on recordings, the SpeechBrain inference way.
"""

from hnsd_sb.export import export_model
from hnsd_sb.features import StaticDynamicFeatures
from hnsd_sb.fusion import ConcatFusion, GatedMultiFeatureUnit
from hnsd_sb.inference import EmotionRecognizer
from hnsd_sb.model import HNSD, SequenceEncoder
from hnsd_sb.normalization import SpeakerNormalization
from hnsd_sb.pooling import AdditiveAttentionPooling, MeanPooling

__version__ = "0.1.0"

__all__ = [
    "HNSD",
    "AdditiveAttentionPooling",
    "ConcatFusion",
    "EmotionRecognizer",
    "GatedMultiFeatureUnit",
    "MeanPooling",
    "SequenceEncoder",
    "SpeakerNormalization",
    "StaticDynamicFeatures",
    "export_model",
]
