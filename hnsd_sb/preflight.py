"""Checks of a recipe's train / valid / test manifests before anything is trained.

``check_manifests`` runs ``validate_manifest`` on each manifest (columns, IDs, durations, every
audio header, and the duration column against it), then what a header cannot tell: it decodes
the floating-point audio files to find NaN, Inf or absurd samples (integer PCM cannot hold them)
and the compressed ones (FLAC, OGG, MP3) to find streams cut short, checks that the training
manifest has ``n_classes`` emotions and that the validation and test manifests use no emotion
the training one lacks. Every error names the manifest, the line and the ID of each bad row. With
``skip_bad`` the bad rows are left out of cleaned copies instead, and counted.
"""

import csv
import logging
import os
from collections import Counter

import soundfile as sf
from tqdm import tqdm

from hnsd_sb.audio import AudioError, check_audio_header, check_decodes
from hnsd_sb.files import is_plain_file
from hnsd_sb.manifest import (
    ManifestError,
    ManifestProblem,
    read_rows,
    resolve_path,
    validate_manifest,
)

logger = logging.getLogger(__name__)

FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only sample formats that can hold NaN or Inf
# Containers whose header alone cannot show a stream cut short: only a full decode can.
DECODED_FORMATS = ("FLAC", "OGG", "MP3", "MPEG")


def undecodable_rows(csv_path, replacements=None, progress=True):
    """Finds the rows whose audio fails a full decode: NaN, Inf or absurd samples, or a
    compressed stream cut short.

    Only files stored as floating-point samples (the only ones that can hold such values) and
    compressed files (``DECODED_FORMATS``) are decoded; rows whose file is missing or
    unreadable are left to ``validate_manifest``.

    Arguments
    ---------
    csv_path : str
        Manifest with ``ID`` and ``wav`` columns.
    replacements : dict, optional
        Values for ``$key`` placeholders in ``wav``.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    list of hnsd_sb.manifest.ManifestProblem
        One per bad row, with its line number.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmpdir")
    >>> sf.write(tmp.join("nan.wav").strpath, np.full(800, np.nan), 16000, subtype="FLOAT")
    >>> _ = tmp.join("m.csv").write("ID,wav\\nu1,$root/nan.wav\\n")
    >>> [str(p) for p in undecodable_rows(tmp.join("m.csv"), {"root": tmp}, progress=False)]
    ["line 2 (ID 'u1'): ...nan.wav: 800 samples are NaN"]
    """
    replacements = {k: str(v) for k, v in (replacements or {}).items()}
    problems = []
    if not is_plain_file(csv_path):
        return problems  # validate_manifest reports it
    _, rows = read_rows(csv_path)
    desc = f"Decoding the float and compressed audio of {os.path.basename(csv_path)}"
    for line, row in tqdm(rows, desc=desc, disable=not progress):
        wav = row.get("wav") or ""
        wav = resolve_path(wav, replacements, keep_unknown=True)
        try:
            info = check_audio_header(wav, min_duration=0.0, allow_truncated=True)
            info = sf.info(os.fsencode(wav))  # after the header check: it may be a FIFO
        except (sf.LibsndfileError, RuntimeError, TypeError, OSError, AudioError):
            continue  # missing, unreadable or a bad header: validate_manifest says why, once
        if info.subtype not in FLOAT_SUBTYPES and info.format not in DECODED_FORMATS:
            continue
        try:
            # A truncated WAV is validate_manifest's to report; here only the decode counts.
            check_decodes(wav, allow_truncated=info.format not in DECODED_FORMATS)
        except AudioError as err:
            problems.append(ManifestProblem(line, row.get("ID") or "", str(err)))
    return problems


def _check_one(csv_path, labels, replacements, skip_bad, output_dir, min_duration, progress):
    """``validate_manifest`` with the rows that fail a full decode among its problems."""
    return validate_manifest(
        csv_path,
        labels=labels,
        replacements=replacements,
        skip_bad=skip_bad,
        output_dir=output_dir,
        min_duration=min_duration,
        progress=progress,
        extra_problems=undecodable_rows(csv_path, replacements, progress),
    )


def _training_labels(csv_path, n_classes, skipped_lines=()):
    """The emotions of the training manifest's rows (leaving out the skipped ones), and a
    ManifestError listing each with its rows if there are not ``n_classes`` of them; ``(None,
    None)`` when the manifest has no usable ``emo`` column."""
    if not is_plain_file(csv_path):
        return None, None  # validate_manifest reports it
    try:
        columns, rows = read_rows(csv_path)
    except (OSError, ManifestError, csv.Error):
        return None, None  # validate_manifest reports it
    if not columns or "emo" not in columns:
        return None, None
    emotions = [(line, row.get("emo") or "") for line, row in rows if line not in skipped_lines]
    counts = Counter(emo for _, emo in emotions)
    if n_classes is None or len(counts) == n_classes:
        return sorted(counts), None
    first = {}
    for line, emo in emotions:
        first.setdefault(emo, line)
    listing = [
        f"  {label!r}: {n} row{'s' if n > 1 else ''}, first on line {first[label]}"
        for label, n in sorted(counts.items(), key=lambda item: (item[1], item[0]))
    ]
    message = (
        f"{csv_path}: {len(counts)} emotions, but n_classes is {n_classes} in the hparams file "
        "(a misspelt label shows up as a rare one):"
    )
    return sorted(counts), ManifestError("\n".join([message, *listing]))


def check_manifests(
    manifests,
    replacements=None,
    n_classes=None,
    skip_bad=False,
    output_dir=None,
    min_duration=0.025,
    progress=True,
):
    """Checks a recipe's manifests before training, the training one first.

    Each manifest gets ``validate_manifest`` (columns, IDs, durations, audio headers: missing,
    empty, non-audio, truncated and too short files, durations that disagree with the column)
    and a decode of its floating-point and compressed audio (NaN, Inf or absurd samples,
    compressed streams cut short). The training manifest must have ``n_classes`` emotions; the
    others may only use the training manifest's emotions. All manifests are checked before an
    error is raised, so it lists every problem. With ``skip_bad`` the bad rows of each manifest
    are left out of a cleaned copy ``<name>.clean.csv`` in ``output_dir`` (and logged) instead
    of raising; a manifest whose rows are all bad, a missing column or a wrong number of
    training emotions still raise.

    Arguments
    ---------
    manifests : dict
        Split name -> CSV manifest, e.g. ``{"train": ..., "valid": ..., "test": ...}``; the
        ``"train"`` entry defines the known emotions.
    replacements : dict, optional
        Values for ``$key`` placeholders in ``wav``, e.g. ``{"data_root": "/data/iemocap"}``.
    n_classes : int, optional
        Number of emotions the training manifest must have.
    skip_bad : bool
        Write cleaned copies without the bad rows instead of raising.
    output_dir : str, optional
        Where cleaned copies go (default: next to each manifest).
    min_duration : float
        Shortest accepted audio in seconds.
    progress : bool
        Show tqdm progress bars.

    Returns
    -------
    dict
        Split name -> ``hnsd_sb.manifest.ManifestCheck``: ``.path`` is the manifest to use,
        ``.n_rows`` and ``.n_skipped`` count its rows.

    Raises
    ------
    hnsd_sb.manifest.ManifestError
        Naming the manifest and, for bad rows, each one's line, ID, file and problem.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmpdir")
    >>> sf.write(tmp.join("a.wav").strpath, np.zeros(16000), 16000)
    >>> head, row = "ID,duration,wav,spk_id,emo\\n", "{},1.0,$data_root/a.wav,s1,{}\\n"
    >>> _ = tmp.join("train.csv").write(head + row.format("u1", "neu") + row.format("u2", "sad"))
    >>> _ = tmp.join("test.csv").write(head + row.format("u3", "neu") + row.format("u4", "hap"))
    >>> manifests = {"train": tmp.join("train.csv").strpath, "test": tmp.join("test.csv").strpath}
    >>> check_manifests(manifests, {"data_root": tmp.strpath}, n_classes=2, progress=False)
    Traceback (most recent call last):
    ...
    hnsd_sb.manifest.ManifestError: ...test.csv: 1 of 2 rows are bad:
      line 3 (ID 'u4'): unknown emotion label 'hap' (known: neu, sad)
    >>> checks = check_manifests(manifests, {"data_root": tmp.strpath}, n_classes=2,
    ...                          skip_bad=True, progress=False)
    >>> checks["test"].n_skipped, os.path.basename(checks["test"].path)
    (1, 'test.clean.csv')
    """
    if "train" not in manifests:
        raise ValueError(f"no 'train' manifest among {sorted(manifests)}")
    replacements = {k: str(v) for k, v in (replacements or {}).items()}
    options = dict(
        replacements=replacements,
        skip_bad=skip_bad,
        output_dir=output_dir,
        min_duration=min_duration,
        progress=progress,
    )
    # Every manifest is checked before raising, so one run lists all that is wrong.
    checks, errors, skipped = {}, [], ()
    try:
        checks["train"] = _check_one(manifests["train"], None, **options)
        if checks["train"].n_skipped:
            skipped = {p.line for p in checks["train"].problems}
    except ManifestError as err:
        errors.append(str(err))
    labels, label_error = _training_labels(manifests["train"], n_classes, skipped)
    if label_error is not None:
        errors.append(str(label_error))
    for split, csv_path in manifests.items():
        if split != "train":
            try:
                checks[split] = _check_one(csv_path, labels, **options)
            except ManifestError as err:
                errors.append(str(err))
    if errors:
        raise ManifestError("\n".join(errors))
    return checks
