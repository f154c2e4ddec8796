"""CREMA-D data preparation, with speaker folds.

File names such as ``AudioWAV/1001_DFA_ANG_XX.wav`` code the speaker (1001 to 1091), the
sentence (``DFA``), the emotion (ANG DIS FEA HAP NEU SAD) and the intensity (LO, MD, HI or XX
for unspecified). ``data_folder`` may hold ``AudioWAV/`` or the wav files directly.
"""

from hnsd_sb.corpora.common import CodedCorpus, prepare_coded_corpus

CREMAD = CodedCorpus(
    name="CREMA-D",
    name_pattern=(
        r"(?P<spk_id>10\d\d)_(?P<sentence>[A-Z]{3})_(?P<emo>ANG|DIS|FEA|HAP|NEU|SAD)"
        r"_(?P<level>[A-Z]{2})\.wav"
    ),
    emotions={code: code.lower() for code in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")},
    speakers=tuple(str(speaker) for speaker in range(1001, 1092)),
    extras=("sentence", "level"),
)


def prepare_cremad(data_folder, save_folder, fold=1, n_folds=5, label_map=None, skip_prep=False):
    """Writes the CREMA-D ``train.csv``, ``valid.csv`` and ``test.csv`` of one fold.

    The 91 speakers, in id order, are cut into ``n_folds`` contiguous groups (sizes differ by
    at most one: with 5 folds, 1001-1019, 1020-1037, 1038-1055, 1056-1073, 1074-1091). Fold
    ``k`` tests group ``k`` and validates on group ``k + 1`` (the last fold on group 1). Labels:
    ang dis fea hap neu sad. Extra columns: ``sentence, level``. Nothing is done when
    ``save_folder`` already holds manifests prepared with the same options.

    Arguments
    ---------
    data_folder : path-like
        The CREMA-D folder holding ``AudioWAV/``, or ``AudioWAV`` itself.
    save_folder : path-like
        Where ``train.csv``, ``valid.csv``, ``test.csv`` and ``prepare_options.json`` go.
    fold : int
        Index of the tested speaker group, counted from 1.
    n_folds : int
        How many groups the 91 speakers are cut into (2 to 91).
    label_map : dict or None
        Raw label (ang dis fea hap neu sad) -> manifest label; labels missing from it are
        dropped. None keeps the six.
    skip_prep : bool
        If True, do nothing.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> from pathlib import Path
    >>> audio = Path(getfixture("tmpdir")) / "AudioWAV"
    >>> audio.mkdir()
    >>> for speaker in (1001, 1020, 1040):
    ...     sf.write(audio / f"{speaker}_DFA_ANG_XX.wav", np.zeros(1600), 16000)
    >>> prepare_cremad(audio.parent, audio.parent / "save", fold=1)
    >>> (audio.parent / "save" / "test.csv").read_text().splitlines()[1]
    '1001_DFA_ANG_XX,0.10000,$data_root/AudioWAV/1001_DFA_ANG_XX.wav,1001,ang,ang,DFA,XX'
    """
    prepare_coded_corpus(CREMAD, data_folder, save_folder, fold, n_folds, label_map, skip=skip_prep)
