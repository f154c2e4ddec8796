"""IEMOCAP data preparation for this recipe: ``from iemocap_prepare import prepare_iemocap``.

The implementation lives in ``hnsd_sb.corpora.iemocap``; this module re-exports it so the recipe
follows the SpeechBrain layout.
"""

from hnsd_sb.corpora.iemocap import iemocap_fold_speakers, prepare_iemocap

__all__ = ["iemocap_fold_speakers", "prepare_iemocap"]
