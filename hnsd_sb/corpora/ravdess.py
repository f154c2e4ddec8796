"""RAVDESS data preparation (speech, audio-only), with actor-independent folds.

File names follow the published layout ``Actor_NN/03-01-EE-II-SS-RR-AA.wav``: modality (03
audio-only), vocal channel (01 speech, 02 song), emotion, intensity (01 normal, 02 strong),
statement, repetition and actor (odd male, even female). Both the official 48 kHz release and
resampled copies work: durations come from the wav headers.
"""

from hnsd_sb.corpora.common import CodedCorpus, prepare_coded_corpus

EMOTIONS = {
    "01": "neu",
    "02": "cal",
    "03": "hap",
    "04": "sad",
    "05": "ang",
    "06": "fea",
    "07": "dis",
    "08": "sur",
}
LABEL_SETS = {
    "all": {label: label for label in EMOTIONS.values()},
    "four": {label: label for label in ("neu", "hap", "sad", "ang")},
}


def _refine(fields):
    """Speaker, gender and intensity of an audio-only speech file; None for anything else."""
    if fields["modality"] != "03" or fields["channel"] != "01":
        return None
    actor = fields["actor"]
    return dict(
        fields,
        spk_id=f"Actor_{actor}",
        gender="M" if int(actor) % 2 else "F",
        intensity="normal" if fields["intensity"] == "01" else "strong",
    )


RAVDESS = CodedCorpus(
    name="RAVDESS",
    name_pattern=(
        r"(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emo>0[1-8])-(?P<intensity>0[12])"
        r"-(?P<statement>\d{2})-(?P<repetition>\d{2})-(?P<actor>\d{2})\.wav"
    ),
    emotions=EMOTIONS,
    speakers=tuple(f"Actor_{actor:02d}" for actor in range(1, 25)),
    extras=("actor", "gender", "intensity", "statement", "repetition"),
    refine=_refine,
    skipped_what="song (vocal channel 02) or non-audio-only",
)


def prepare_ravdess(
    data_folder,
    save_folder,
    fold=1,
    n_folds=6,
    label_set="all",
    label_map=None,
    skip_prep=False,
    train_groups=None,
):
    """Writes the RAVDESS ``train.csv``, ``valid.csv`` and ``test.csv`` of one fold.

    Folds by actor: the 24 actors, in order, are cut into ``n_folds`` contiguous groups. With
    the default 6 folds, fold ``k`` tests actors ``4k-3 .. 4k`` (two male, two female) and
    validates on the 4 actors of fold ``k + 1`` (fold 6 validates on actors 1-4); the other 16
    actors train. Labels are neu, cal, hap, sad, ang, fea, dis, sur; the full speech release has
    1440 files, 60 per actor (4 neutral, 8 of each other emotion), 672 in the four-class set.
    Song files (vocal channel 02) and wav files with other names are skipped. Nothing is done
    when ``save_folder`` already holds manifests prepared with the same options.

    Arguments
    ---------
    data_folder : path-like
        Folder holding the ``Actor_NN`` folders (searched recursively).
    save_folder : path-like
        Where the manifests and ``prepare_options.json`` are written.
    fold : int
        From 1 to ``n_folds``.
    n_folds : int
        Number of actor groups (2 to 24); groups are gender-balanced when ``24 / n_folds`` is
        even.
    label_set : str
        ``"all"`` (8 classes) or ``"four"`` (neu, hap, sad, ang).
    label_map : dict or None
        Raw label -> manifest label (e.g. ``{"neu": "neu", "cal": "neu"}``); when given it
        replaces the map of ``label_set``. Unmapped labels are dropped.
    skip_prep : bool
        If True, return without reading or writing anything.
    train_groups : int or None
        How many of the other actor groups train, in order after the validation group (1 to
        ``n_folds - 2``; e.g. 3 of the default 4: 12 training actors); None: all of them. For
        a learning curve over training actors; test and validation actors stay the same.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> from pathlib import Path
    >>> root = Path(getfixture("tmpdir"))
    >>> for actor in (1, 5, 9):
    ...     (root / f"Actor_{actor:02d}").mkdir()
    ...     name = f"Actor_{actor:02d}/03-01-05-02-01-01-{actor:02d}.wav"
    ...     sf.write(root / name, np.zeros(4800), 48000)
    >>> prepare_ravdess(root, root / "save", fold=1)
    >>> import csv
    >>> row = next(csv.DictReader(open(root / "save" / "test.csv")))
    >>> row["wav"], row["duration"], row["spk_id"], row["emo"], row["intensity"]
    ('$data_root/Actor_01/03-01-05-02-01-01-01.wav', '0.10000', 'Actor_01', 'ang', 'strong')
    """
    if skip_prep:
        return
    if label_set not in LABEL_SETS:
        raise ValueError(
            f"RAVDESS label_set must be one of {sorted(LABEL_SETS)}, got {label_set!r}"
        )
    prepare_coded_corpus(
        RAVDESS,
        data_folder,
        save_folder,
        fold,
        n_folds,
        LABEL_SETS[label_set] if label_map is None else label_map,
        options={"label_set": label_set},
        train_groups=train_groups,
    )
