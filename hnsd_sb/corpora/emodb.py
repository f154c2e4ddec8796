"""EmoDB (Berlin Database of Emotional Speech) data preparation, with speaker folds.

File names such as ``03a01Fa.wav`` code the speaker (``03``), the text (``a01``), the emotion
(German initial: W anger, L boredom, E disgust, A fear, F happiness, T sadness, N neutral) and
a version letter. ``data_folder`` may hold the release's ``wav/`` folder or the wav files
directly.
"""

from hnsd_sb.corpora.common import CodedCorpus, prepare_coded_corpus

FEMALE_SPEAKERS = ("08", "09", "13", "14", "16")
EMODB = CodedCorpus(
    name="EmoDB",
    name_pattern=r"(?P<spk_id>\d{2})(?P<text>[ab]\d{2})(?P<emo>[WLEAFTN])(?P<version>[a-z])\.wav",
    emotions={"W": "ang", "L": "bor", "E": "dis", "A": "fea", "F": "hap", "T": "sad", "N": "neu"},
    speakers=("03", "08", "09", "10", "11", "12", "13", "14", "15", "16"),
    extras=("gender", "text", "version"),
    refine=lambda f: dict(f, gender="F" if f["spk_id"] in FEMALE_SPEAKERS else "M"),
)


def prepare_emodb(data_folder, save_folder, fold=1, n_folds=10, label_map=None, skip_prep=False):
    """Writes the EmoDB ``train.csv``, ``valid.csv`` and ``test.csv`` of one fold.

    The 10 speakers (03 08 09 10 11 12 13 14 15 16), in this order, are cut into ``n_folds``
    contiguous groups. The default 10 folds are leave-one-speaker-out: fold ``k`` tests the
    ``k``-th speaker and validates on the next one (fold 10 tests 16 and validates on 03).
    ``n_folds=5`` tests the pairs (03, 08), (09, 10), (11, 12), (13, 14), (15, 16) and validates
    on the next pair. Labels: ang bor dis fea hap sad neu. Extra columns: ``gender, text,
    version``. Nothing is done when ``save_folder`` already holds manifests prepared with the
    same options.

    Arguments
    ---------
    data_folder : path-like
        The EmoDB release (holding ``wav/``) or its ``wav`` folder; searched recursively.
    save_folder : path-like
        Output folder of the three manifests and ``prepare_options.json``.
    fold : int
        Which speaker group is tested, 1 to ``n_folds``.
    n_folds : int
        10 for leave-one-speaker-out, or fewer groups (at least 2).
    label_map : dict or None
        Maps the labels ang bor dis fea hap sad neu to manifest labels, dropping the
        unmapped ones; None keeps them all.
    skip_prep : bool
        When True, return at once.

    Example
    -------
    >>> import csv, numpy as np, soundfile as sf
    >>> from pathlib import Path
    >>> root = Path(getfixture("tmpdir"))
    >>> for name in ("03a01Wa", "08a01Na", "09b02Ta"):
    ...     sf.write(root / f"{name}.wav", np.zeros(1600), 16000)
    >>> prepare_emodb(root, root / "save", fold=2)
    >>> row = next(csv.DictReader(open(root / "save" / "test.csv")))
    >>> row["ID"], row["spk_id"], row["emo"], row["gender"]
    ('08a01Na', '08', 'neu', 'F')
    """
    prepare_coded_corpus(EMODB, data_folder, save_folder, fold, n_folds, label_map, skip=skip_prep)
