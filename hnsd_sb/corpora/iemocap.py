"""IEMOCAP data preparation: label-file parsing, speaker-independent folds and manifests.

Reads the official release layout::

    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt      (one record per labelled turn)
    Session{1..5}/sentences/wav/<dialog>/<utterance>.wav

and writes ``train.csv``, ``valid.csv`` and ``test.csv`` following the shared manifest layout
of ``hnsd_sb.corpora.common`` with the extra columns ``session, gender, utt_type, dialog,
valence, activation, dominance``.
"""

import logging
import re

from hnsd_sb.corpora.common import (
    apply_label_map,
    check_data_folder,
    check_fold,
    check_label_map,
    prepare_manifests,
)

logger = logging.getLogger(__name__)

N_SESSIONS = 5
RAW_LABELS = ("neu", "ang", "sad", "hap", "exc", "fru", "sur", "fea", "dis", "oth", "xxx")
# The usual 4-class benchmark: excited merged into happy, every other label dropped.
DEFAULT_LABEL_MAP = {"neu": "neu", "ang": "ang", "sad": "sad", "hap": "hap", "exc": "hap"}
FULL_RELEASE_4CLASS_TOTAL = 5531
SPEAKERS = tuple(f"Ses{s:02d}{g}" for s in range(1, N_SESSIONS + 1) for g in "FM")
PROTOCOLS = ("session", "speaker")
EXTRA_COLUMNS = ["session", "gender", "utt_type", "dialog", "valence", "activation", "dominance"]

_NUMBER = r"[-+]?\d+(?:\.\d*)?"
_RECORD = re.compile(
    rf"\[\s*({_NUMBER})\s*-\s*({_NUMBER})\s*\]\s+(\S+)\s+(\S+)\s+"
    rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]"
)
_RECORD_FIELDS = ("start", "end", "ID", "raw_emo", "valence", "activation", "dominance")
# Session, then the speaker's gender is the first letter of the last part of the id.
_UTTERANCE_ID = re.compile(r"Ses(\d{2})[FM]_\S+_([FM])[^_]*")


def read_emo_evaluation(label_file):
    r"""Parses the records of one ``EmoEvaluation/<dialog>.txt`` file.

    Only lines starting with ``[`` are records; the ``%`` header, the evaluator lines
    (``C-E2:``, ``A-F1:``, ...) and blank lines are skipped.

    Arguments
    ---------
    label_file : path-like
        The label file.

    Returns
    -------
    list of dict
        One dict per record with ``ID, raw_emo, start, end, valence, activation, dominance``
        (the numbers kept as the strings of the file).

    Example
    -------
    >>> from pathlib import Path
    >>> path = Path(getfixture("tmpdir")) / "Ses01F_impro01.txt"
    >>> _ = path.write_text("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    ...     "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
    ...     "C-E2:\tNeutral;\t()\n\n")
    >>> record = read_emo_evaluation(path)[0]
    >>> record["ID"], record["raw_emo"], record["valence"]
    ('Ses01F_impro01_F000', 'neu', '2.5000')
    """
    records = []
    with open(label_file, encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line.startswith("["):
                continue
            match = _RECORD.fullmatch(line)
            if match is None:
                raise ValueError(
                    f"Cannot parse IEMOCAP record at {label_file}:{line_number}: {line!r}"
                )
            records.append(dict(zip(_RECORD_FIELDS, match.groups()), line=line_number))
    return records


def iemocap_fold_speakers(fold, protocol="session"):
    """Test and validation speakers of a fold.

    ``protocol="session"`` (5 folds): fold ``k`` tests both speakers of Session ``k``; the
    validation speaker is one speaker of the next session ``(k mod 5) + 1``, female for odd
    ``k`` and male for even ``k`` (folds 1..5 validate on Ses02F, Ses03M, Ses04F, Ses05M,
    Ses01F), so training keeps 7 speakers.

    ``protocol="speaker"`` (10 folds, leave-one-speaker-out): fold ``k`` tests speaker ``k`` of
    Ses01F, Ses01M, Ses02F, ..., Ses05M and validates on the other speaker of that session, so
    training keeps 8 speakers.

    Arguments
    ---------
    fold : int
        From 1 to 5 (session) or 1 to 10 (speaker).
    protocol : str
        ``"session"`` or ``"speaker"``.

    Returns
    -------
    tuple
        ``(test_speakers, valid_speakers)``, two lists of speaker ids.

    Example
    -------
    >>> iemocap_fold_speakers(1)
    (['Ses01F', 'Ses01M'], ['Ses02F'])
    >>> iemocap_fold_speakers(4, protocol="speaker")
    (['Ses02M'], ['Ses02F'])
    """
    if protocol == "session":
        check_fold(fold, N_SESSIONS, "IEMOCAP session protocol")
        gender = "F" if fold % 2 else "M"
        return [f"Ses{fold:02d}F", f"Ses{fold:02d}M"], [f"Ses{fold % N_SESSIONS + 1:02d}{gender}"]
    if protocol == "speaker":
        check_fold(fold, len(SPEAKERS), "IEMOCAP speaker protocol")
        test = SPEAKERS[fold - 1]
        partner = test[:-1] + ("M" if test.endswith("F") else "F")
        return [test], [partner]
    raise ValueError(f"IEMOCAP protocol must be one of {PROTOCOLS}, got {protocol!r}")


def _session_label_folders(data_folder):
    """The ``EmoEvaluation`` folders by session number, with clear errors when not IEMOCAP."""
    folders = {}
    for session in range(1, N_SESSIONS + 1):
        session_folder = data_folder / f"Session{session}"
        if not session_folder.is_dir():
            continue
        label_folder = session_folder / "dialog" / "EmoEvaluation"
        if not label_folder.is_dir():
            raise FileNotFoundError(
                f"{session_folder} has no dialog/EmoEvaluation folder: not an IEMOCAP release"
            )
        folders[session] = label_folder
    if not folders:
        raise FileNotFoundError(
            f"{data_folder} is not an IEMOCAP release folder: expected Session1..Session5 "
            "folders holding dialog/EmoEvaluation (point data_folder at IEMOCAP_full_release)"
        )
    missing = sorted(set(range(1, N_SESSIONS + 1)) - set(folders))
    if missing:
        logger.warning("IEMOCAP sessions %s are missing from %s", missing, data_folder)
    return folders


def _session_utterances(data_folder, session, label_folder):
    """All labelled utterances of one session, as manifest rows without duration."""
    utterances = []
    # Only the files directly in EmoEvaluation: Categorical/, Attribute/ and Self-evaluation/
    # hold per-evaluator files in other formats. Dot files are macOS resource forks.
    label_files = sorted(
        p for p in label_folder.glob("*.txt") if p.is_file() and not p.name.startswith(".")
    )
    for label_file in label_files:
        for record in read_emo_evaluation(label_file):
            match = _UTTERANCE_ID.fullmatch(record["ID"])
            if match is None or int(match[1]) != session:
                raise ValueError(
                    f"Unexpected IEMOCAP utterance id {record['ID']!r} for Session{session} at "
                    f"{label_file}:{record['line']}"
                )
            gender = match[2]
            dialog = record["ID"].rsplit("_", 1)[0]
            wav = data_folder / f"Session{session}" / "sentences" / "wav" / dialog
            utterances.append(
                dict(
                    ID=record["ID"],
                    path=wav / f"{record['ID']}.wav",
                    spk_id=f"Ses{session:02d}{gender}",
                    raw_emo=record["raw_emo"],
                    session=session,
                    gender=gender,
                    utt_type="impro" if "_impro" in dialog else "script",
                    dialog=dialog,
                    valence=record["valence"],
                    activation=record["activation"],
                    dominance=record["dominance"],
                )
            )
    return utterances


def prepare_iemocap(
    data_folder,
    save_folder,
    fold=1,
    protocol="session",
    label_map=None,
    improvised_only=False,
    valid_speakers=None,
    skip_prep=False,
):
    """Writes the IEMOCAP ``train.csv``, ``valid.csv`` and ``test.csv`` of one fold.

    With the default label map (neu, ang, sad, hap with exc merged into hap) the full release
    gives 5531 utterances: neu 1708, ang 1103, sad 1084, hap 595 + exc 1041 = 1636.
    Speakers are ``Ses<NN><F|M>`` where the gender is the first letter of the last part of the
    utterance id (``Ses01F_impro01_M000`` is Ses01M). See ``iemocap_fold_speakers`` for the
    test/validation speakers of each fold; no speaker is ever in two splits. Nothing is done
    when ``save_folder`` already holds manifests prepared with the same options.

    Arguments
    ---------
    data_folder : path-like
        The release folder holding ``Session1`` ... ``Session5``.
    save_folder : path-like
        Where the manifests and ``prepare_options.json`` are written.
    fold : int
        1..5 for ``protocol="session"``, 1..10 for ``protocol="speaker"``.
    protocol : str
        ``"session"`` (leave-one-session-out) or ``"speaker"`` (leave-one-speaker-out).
    label_map : dict or None
        Raw label -> manifest label; unmapped labels are dropped. None: the 4-class default.
    improvised_only : bool
        Keep only the improvised dialogs (``impro`` in the utterance id).
    valid_speakers : list of str or None
        Overrides the validation speakers of the fold (e.g. ``["Ses02F", "Ses02M"]``); they
        must not be test speakers.
    skip_prep : bool
        If True, do nothing.

    Example
    -------
    >>> from pathlib import Path
    >>> from hnsd_sb.synthetic import make_synthetic_iemocap
    >>> tmp = Path(getfixture("tmpdir"))
    >>> _ = make_synthetic_iemocap(tmp / "iemocap", utterances_per_emotion=1,
    ...                            min_duration=0.2, max_duration=0.3)
    >>> prepare_iemocap(tmp / "iemocap", tmp / "save", fold=2)
    >>> print(open(tmp / "save" / "test.csv").readline().strip())
    ID,duration,wav,spk_id,emo,raw_emo,session,gender,utt_type,dialog,valence,activation,dominance
    """
    if skip_prep:
        return
    data_folder = check_data_folder(data_folder, "IEMOCAP")
    label_map = check_label_map(label_map, DEFAULT_LABEL_MAP, RAW_LABELS, "IEMOCAP")
    test_speakers, valid_default = iemocap_fold_speakers(fold, protocol)
    if valid_speakers is not None:
        valid_speakers = sorted(str(spk) for spk in valid_speakers)
        unknown = sorted(set(valid_speakers) - set(SPEAKERS))
        if unknown or set(valid_speakers) & set(test_speakers):
            raise ValueError(
                f"IEMOCAP valid_speakers {valid_speakers} must be speakers of {SPEAKERS} "
                f"outside the test speakers {test_speakers} of fold {fold}"
            )
    options = dict(
        corpus="IEMOCAP",
        data_folder=str(data_folder),
        fold=fold,
        protocol=protocol,
        label_map=label_map,
        improvised_only=bool(improvised_only),
        valid_speakers=valid_speakers,
    )

    def collect():
        """Reads every session's labels and returns the utterances kept by the label map."""
        utterances = []
        for session, label_folder in _session_label_folders(data_folder).items():
            utterances += _session_utterances(data_folder, session, label_folder)
        kept = apply_label_map(utterances, label_map)
        if improvised_only:
            kept = [utt for utt in kept if utt["utt_type"] == "impro"]
        missing = [str(utt["path"]) for utt in kept if not utt["path"].is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} labelled IEMOCAP utterances have no wav file, e.g. {missing[0]}"
            )
        return kept

    note = ""
    if label_map == DEFAULT_LABEL_MAP:
        note = f" (the full release gives {FULL_RELEASE_4CLASS_TOTAL} with all dialogs)"
    test_valid = (test_speakers, valid_default if valid_speakers is None else valid_speakers)
    prepare_manifests(
        "IEMOCAP", data_folder, save_folder, options, collect, test_valid, EXTRA_COLUMNS, note
    )
