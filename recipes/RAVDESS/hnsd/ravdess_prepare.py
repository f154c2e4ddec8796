"""RAVDESS data preparation for this recipe: ``from ravdess_prepare import prepare_ravdess``.

The implementation lives in ``hnsd_sb.corpora.ravdess``; this module re-exports it so the recipe
follows the SpeechBrain layout.
"""

from hnsd_sb.corpora.ravdess import prepare_ravdess

__all__ = ["prepare_ravdess"]
