"""Data preparation of the emotion corpora: IEMOCAP, RAVDESS, EmoDB and CREMA-D.

Each ``prepare_*`` function writes ``train.csv``, ``valid.csv`` and ``test.csv`` of one
speaker-independent fold, with the shared columns ``ID, duration, wav, spk_id, emo, raw_emo``
(see ``hnsd_sb.corpora.common``).
"""

from hnsd_sb.corpora.cremad import prepare_cremad
from hnsd_sb.corpora.emodb import prepare_emodb
from hnsd_sb.corpora.iemocap import prepare_iemocap
from hnsd_sb.corpora.ravdess import prepare_ravdess

__all__ = ["prepare_cremad", "prepare_emodb", "prepare_iemocap", "prepare_ravdess"]
