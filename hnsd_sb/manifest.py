"""Reading and validation of SpeechBrain CSV manifests before training.

``validate_manifest`` finds every bad row of a manifest in one pass (duplicate IDs, missing or
unreadable audio, bad durations, unknown labels) so a run fails at start-up with the whole list
instead of hours later on the first bad file, or writes a cleaned copy without the bad rows.
``read_rows`` and ``resolve_path`` are the one way the package reads a manifest's rows and their
``$key`` placeholders; ``json_to_csv`` turns a SpeechBrain JSON annotation into such a manifest.
"""

import csv
import io
import json
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional

from tqdm import tqdm

from hnsd_sb.audio import AudioError, check_audio_header
from hnsd_sb.files import is_plain_file

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("ID", "duration", "wav", "spk_id", "emo")
# How far the duration column may be from the audio header's duration: rounding in the
# manifest, and resampled or re-encoded copies whose length moved by a few samples.
DURATION_TOLERANCE_S, DURATION_TOLERANCE_REL = 0.1, 0.01
MAX_LISTED = 20
_PLACEHOLDER = re.compile(r"\$([\w.]+)")  # same syntax as speechbrain.dataio.dataio.load_data_csv


class ManifestError(ValueError):
    """A manifest that cannot be used as it is; the message names the file and bad rows.

    Example
    -------
    >>> isinstance(ManifestError("train.csv: missing column(s) emo"), ValueError)
    True
    """


@dataclass
class ManifestProblem:
    """One bad row of a manifest.

    Arguments
    ---------
    line : int
        Line of the CSV file holding the row (the header is line 1).
    id : str
        The row's ``ID`` (empty if it has none).
    reason : str
        What is wrong with it.
    """

    line: int
    id: str
    reason: str

    def __str__(self):
        return f"line {self.line} (ID {self.id!r}): {self.reason}"


@dataclass
class ManifestCheck:
    """Outcome of ``validate_manifest``.

    Arguments
    ---------
    csv_path : str
        The manifest checked.
    n_rows : int
        Data rows in it.
    n_skipped : int
        Rows left out of the cleaned copy (0 unless ``skip_bad``).
    problems : list of ManifestProblem
        Every bad row found, in file order (a row can appear once per problem).
    clean_path : str or None
        The cleaned copy, written only when ``skip_bad`` and some rows were bad.
    """

    csv_path: str
    n_rows: int
    n_skipped: int = 0
    problems: List[ManifestProblem] = field(default_factory=list)
    clean_path: Optional[str] = None

    @property
    def path(self):
        """The manifest to train on: the cleaned copy if one was written, else the original."""
        return self.clean_path or self.csv_path


def read_manifest_text(csv_path):
    """The text of a CSV manifest, with the errors of its bytes named.

    Arguments
    ---------
    csv_path : str
        The manifest.

    Returns
    -------
    io.StringIO
        Its text, ready for ``csv.reader`` (newlines kept as they are).

    Raises
    ------
    ManifestError
        The file starts with a UTF-8 byte-order mark (SpeechBrain's CSV reader would take it
        as part of the first column's name), or is not UTF-8: the line and byte are named.

    Example
    -------
    >>> path = getfixture("tmpdir").join("m.csv")
    >>> _ = path.write_binary(b"ID,wav\\nu1,caf\\xe9.wav\\n")
    >>> read_manifest_text(path.strpath)
    Traceback (most recent call last):
    ...
    hnsd_sb.manifest.ManifestError: ...m.csv: line 2 is not UTF-8 (byte 0xe9 at column 7)...
    """
    with open(csv_path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        raise ManifestError(
            f"{csv_path}: starts with a UTF-8 byte-order mark (BOM), which SpeechBrain's CSV "
            "reader takes as part of the first column's name; save it as UTF-8 without BOM"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ManifestError(
            f"{csv_path}: line {line} is not UTF-8 (byte 0x{data[err.start]:02x} at column "
            f"{column}); save the manifest as UTF-8"
        ) from None
    return io.StringIO(text, newline="")


def read_rows(csv_path):
    """The header and the data rows of a CSV manifest, each row with its line number.

    Arguments
    ---------
    csv_path : str
        The manifest (UTF-8, see ``read_manifest_text``).

    Returns
    -------
    columns : list of str or None
        The header's column names (None for an empty file).
    rows : list of (int, dict)
        ``(line, row)`` per data row; the header is line 1. ``csv.DictReader`` files surplus
        fields under ``None`` and fills missing ones with ``None``.

    Example
    -------
    >>> path = getfixture("tmpdir").join("m.csv")
    >>> _ = path.write("ID,wav\\nu1,a.wav\\n")
    >>> read_rows(path.strpath)
    (['ID', 'wav'], [(2, {'ID': 'u1', 'wav': 'a.wav'})])
    """
    reader = csv.DictReader(read_manifest_text(csv_path), skipinitialspace=True)
    columns = reader.fieldnames
    return columns, [(reader.line_num, row) for row in reader]


def resolve_path(value, replacements, keep_unknown=False):
    """A manifest's ``wav`` value with its ``$key`` placeholders replaced, as SpeechBrain's
    ``load_data_csv`` does (same syntax: ``$`` then letters, digits, ``_`` or ``.``).

    Arguments
    ---------
    value : str
        E.g. ``"$data_root/Ses01/a.wav"``.
    replacements : dict
        Key -> value, e.g. ``{"data_root": "/data/iemocap"}``.
    keep_unknown : bool
        Leave placeholders without a replacement as they are instead of raising ``KeyError``.

    Returns
    -------
    str
        The path.

    Example
    -------
    >>> resolve_path("$data_root/a.wav", {"data_root": "/data"})
    '/data/a.wav'
    >>> resolve_path("$other/a.wav", {}, keep_unknown=True)
    '$other/a.wav'
    """
    if keep_unknown:
        return _PLACEHOLDER.sub(lambda m: str(replacements.get(m[1], m[0])), value)
    return _PLACEHOLDER.sub(lambda m: str(replacements[m[1]]), value)


def json_to_csv(json_path, csv_path):
    """Writes a SpeechBrain JSON annotation as a CSV manifest of this recipe.

    SpeechBrain's JSON annotations (``DynamicItemDataset.from_json``) map each utterance ID to
    its fields and write placeholders as ``{data_root}``; the CSV manifests that this package
    checks and reads write them as ``$data_root``. The fields ``duration``, ``wav``, ``spk_id``
    and ``emo`` are kept, in the CSV's ``ID, duration, wav, spk_id, emo`` columns.

    Arguments
    ---------
    json_path : str
        The JSON annotation.
    csv_path : str
        The CSV manifest to write (its folder is created).

    Returns
    -------
    int
        The number of rows written.

    Raises
    ------
    ManifestError
        The file is not a JSON object of objects, or an utterance lacks a field; the message
        names the file and the utterance.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> entry = {"wav": "{data_root}/a.wav", "duration": 2.5, "spk_id": "s1", "emo": "sad"}
    >>> _ = tmp.join("a.json").write(json.dumps({"u1": entry}))
    >>> json_to_csv(tmp.join("a.json").strpath, tmp.join("a.csv").strpath)
    1
    >>> print(tmp.join("a.csv").read().strip())
    ID,duration,wav,spk_id,emo
    u1,2.5,$data_root/a.wav,s1,sad
    """
    json_path = os.fspath(json_path)
    if not is_plain_file(json_path):
        raise ManifestError(f"{json_path}: not found, or not a regular file")
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ManifestError(f"{json_path}: not a UTF-8 JSON file ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ManifestError(f"{json_path}: expected an object of utterance ID -> fields")
    fields = REQUIRED_COLUMNS[1:]
    rows = []
    for uid, entry in data.items():
        missing = [name for name in fields if name not in entry]
        if missing:
            raise ManifestError(f"{json_path}: utterance {uid!r} lacks {', '.join(missing)}")
        values = [str(entry[name]) for name in fields]

        # {key} placeholders (SpeechBrain's JSON syntax) become $key (its CSV syntax), which
        # ends at the first character that cannot be part of a name: "{root}_16k" has no
        # CSV spelling, and is refused rather than read as "$root_16k".
        def to_csv(match, uid=uid, wav=values[1]):
            """``$key`` for the placeholder ``match``, or a ManifestError naming the file."""
            following = wav[match.end() : match.end() + 1]
            if following and re.match(r"[\w.]", following):
                raise ManifestError(
                    f"{json_path}: utterance {uid!r}: the placeholder in {wav!r} is followed by "
                    f"{following!r}, which a CSV manifest would read as part of its name"
                )
            return "$" + match[1]

        values[1] = re.sub(r"\{([\w.]+)\}", to_csv, values[1])
        rows.append([str(uid), *values])
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(REQUIRED_COLUMNS)
        writer.writerows(rows)
    return len(rows)


def _format_problems(csv_path, problems, n_rows):
    """Error text listing the first ``MAX_LISTED`` problems and how many there are."""
    n_bad = len({p.line for p in problems})
    lines = [f"{csv_path}: {n_bad} of {n_rows} rows are bad:"]
    lines += [f"  {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more problems")
    return "\n".join(lines)


def _check_row(row, replacements, labels, check_audio, audio_kwargs):
    """Reasons why one well-formed row is bad (empty list if it is fine); a column the
    manifest lacks is not checked."""
    reasons = []
    if "duration" in row:
        try:
            duration = float(row["duration"])
        except ValueError:
            duration = float("nan")
        if not 0 < duration < float("inf"):
            reasons.append(f"duration {row['duration']!r} is not a positive number")
    if labels is not None and "emo" in row and row["emo"] not in labels:
        known = ", ".join(sorted(labels))
        reasons.append(f"unknown emotion label {row['emo']!r} (known: {known})")
    if "wav" not in row:
        return reasons
    unknown = sorted(set(_PLACEHOLDER.findall(row["wav"])) - set(replacements))
    if unknown:
        names = ", ".join(f"${k}" for k in unknown)
        reasons.append(f"no replacement given for {names} in wav {row['wav']!r}")
        return reasons
    wav = resolve_path(row["wav"], replacements)
    if not wav:
        reasons.append("empty wav path")
    elif check_audio:
        try:
            info = check_audio_header(wav, **audio_kwargs)
        except AudioError as err:
            reasons.append(str(err))
        else:
            # The sampler batches by this column: a long file listed as short would make a
            # batch that does not fit in memory.
            try:
                listed = float(row.get("duration") or "nan")
            except ValueError:
                listed = float("nan")  # reported above
            tolerance = max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_REL * info.duration)
            if 0 < listed < math.inf and abs(listed - info.duration) > tolerance:
                reasons.append(
                    f"{wav}: the duration column says {listed:g} s but the file holds "
                    f"{info.duration:.4g} s"
                )
    elif not os.path.isfile(wav):
        reasons.append(f"{wav}: file not found")
    return reasons


def validate_manifest(
    csv_path,
    labels=None,
    replacements=None,
    check_audio=True,
    skip_bad=False,
    required=REQUIRED_COLUMNS,
    output_dir=None,
    min_duration=0.025,
    progress=True,
    extra_problems=(),
):
    """Checks a SpeechBrain CSV manifest row by row.

    Checks that the required columns exist, IDs are unique, ``duration`` is a positive number,
    ``emo`` is a known label (when ``labels`` is given) and each ``wav`` exists after ``$key``
    replacement. With ``check_audio`` it also reads each file's header (not its samples, so
    10k rows take seconds) to reject unreadable, truncated, empty and too short audio.

    A file-level problem (missing file, no header row, missing columns) always raises. Bad rows
    raise too, unless ``skip_bad``: then a copy without them is written as
    ``<name>.clean.csv`` next to the manifest (or in ``output_dir``), with the values exactly as
    in the original (``$data_root`` left unreplaced), and the skipped rows are logged. Of rows
    sharing an ID the first is kept. If every row is bad it raises even with ``skip_bad``.

    Arguments
    ---------
    csv_path : str
        Manifest to check.
    labels : iterable of str, optional
        The known emotion labels.
    replacements : dict, optional
        Values for ``$key`` placeholders in ``wav``, e.g. ``{"data_root": "/data/iemocap"}``.
    check_audio : bool
        Read each audio header; otherwise only check that the file exists.
    skip_bad : bool
        Write a cleaned copy instead of raising on bad rows.
    required : tuple of str
        Columns that must be present.
    output_dir : str, optional
        Where the cleaned copy goes (default: next to ``csv_path``).
    min_duration : float
        Shortest accepted audio in seconds (with ``check_audio``).
    progress : bool
        Show a tqdm progress bar.
    extra_problems : iterable of ManifestProblem
        Bad rows found by other checks (e.g. ``hnsd_sb.preflight.undecodable_rows``): they are
        reported, or skipped, with this function's own, in one list.

    Returns
    -------
    ManifestCheck
        Row count, skipped count, problems and the cleaned copy's path (``.path`` is the
        manifest to use).

    Raises
    ------
    ManifestError
        Naming the file and listing the first 20 bad rows with their line numbers.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmpdir")
    >>> sf.write(tmp.join("a.wav").strpath, np.zeros(16000), 16000)
    >>> csv_path = tmp.join("train.csv").strpath
    >>> with open(csv_path, "w") as f:
    ...     _ = f.write("ID,duration,wav,spk_id,emo\\n")
    ...     _ = f.write("u1,1.0,$data_root/a.wav,s1,neu\\n")
    ...     _ = f.write("u2,1.0,$data_root/b.wav,s1,hap\\n")
    >>> replacements = {"data_root": tmp.strpath}
    >>> validate_manifest(csv_path, ["neu", "hap"], replacements, progress=False)
    Traceback (most recent call last):
    ...
    hnsd_sb.manifest.ManifestError: ...train.csv: 1 of 2 rows are bad:
      line 3 (ID 'u2'): ...b.wav: file not found
    >>> check = validate_manifest(csv_path, ["neu", "hap"], replacements, skip_bad=True,
    ...                           progress=False)
    >>> check.n_rows, check.n_skipped, check.path.endswith("train.clean.csv")
    (2, 1, True)
    """
    csv_path = os.fspath(csv_path)
    if not os.path.exists(csv_path):
        raise ManifestError(f"{csv_path}: manifest not found")
    if not is_plain_file(csv_path):  # a FIFO would block
        raise ManifestError(f"{csv_path}: not a regular file")
    replacements = dict(replacements or {})
    labels = None if labels is None else {str(label) for label in labels}
    audio_kwargs = {"min_duration": min_duration}

    columns, rows = read_rows(csv_path)
    if not columns:
        raise ManifestError(f"{csv_path}: empty file, no header row")
    missing = [c for c in required if c not in columns]
    if missing:
        raise ManifestError(
            f"{csv_path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns)})"
        )
    if not rows:
        raise ManifestError(f"{csv_path}: no data rows, only the header")

    problems, bad_lines, first_line = [], set(), {}
    id_counts = Counter(row.get("ID") for _, row in rows)
    for line, row in tqdm(
        rows, desc=f"Checking {os.path.basename(csv_path)}", disable=not progress
    ):
        # csv.DictReader files surplus fields under None and fills missing ones with None.
        if None in row:
            n_fields = len(columns) + len(row[None])
            reasons = [f"{n_fields} fields, but the header has {len(columns)}"]
        elif any(row[c] is None for c in columns):
            reasons = [f"fewer fields than the {len(columns)} of the header"]
        else:
            reasons = _check_row(row, replacements, labels, check_audio, audio_kwargs)
        uid = row.get("ID") or ""
        if not uid:
            reasons.append("empty ID")
        elif id_counts[uid] > 1:
            if uid in first_line:
                reasons.append(f"duplicate ID, first used on line {first_line[uid]}")
            else:
                first_line[uid] = line
        for reason in reasons:
            problems.append(ManifestProblem(line, uid, reason))
        if reasons:
            bad_lines.add(line)

    for problem in extra_problems:
        problems.append(problem)
        bad_lines.add(problem.line)
    problems.sort(key=lambda p: p.line)  # stable: a row's own problems keep their order
    check = ManifestCheck(csv_path, len(rows), problems=problems)
    if not problems:
        return check
    message = _format_problems(csv_path, problems, len(rows))
    if not skip_bad or len(bad_lines) == len(rows):
        raise ManifestError(message)

    stem = os.path.splitext(os.path.basename(csv_path))[0]
    out_dir = os.fspath(output_dir) if output_dir is not None else os.path.dirname(csv_path)
    os.makedirs(out_dir or ".", exist_ok=True)
    check.clean_path = os.path.join(out_dir, f"{stem}.clean.csv")
    with open(check.clean_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(row for line, row in rows if line not in bad_lines)
    check.n_skipped = len(bad_lines)
    logger.warning("%s\nSkipped them; wrote %s", message, check.clean_path)
    return check
