"""Tests of the synthetic IEMOCAP-format corpus: exact format, determinism, learnable cues."""

import hashlib
import re
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf

from hnsd_sb.synthetic import main, make_synthetic_iemocap

RECORD = re.compile(
    r"\[\d+\.\d{4} - \d+\.\d{4}\]\t(Ses\d{2}[FM]_(?:impro\d{2}|script\d{2}_\d)_[FM]\d{3})\t"
    r"([a-z]{3})\t\[\d\.\d{4}, \d\.\d{4}, \d\.\d{4}\]"
)
EVALUATOR = re.compile(r"[CA]-[EFM]\d:\t.+")


# Four utterances per class and speaker, long enough for pitch estimates: about 200 s of audio.
SMALL = {"utterances_per_emotion": 4, "min_duration": 0.8, "max_duration": 1.2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, make_synthetic_iemocap(root, **SMALL)


def parse_strictly(label_file):
    """(id, label) of each record, asserting the release layout line by line."""
    lines = label_file.read_text().split("\n")
    assert lines[0] == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
    assert lines[1] == "" and lines[-1] == ""
    records, i = [], 2
    while i < len(lines) - 1:
        match = RECORD.fullmatch(lines[i])
        assert match, f"{label_file}:{i + 1}: {lines[i]!r}"
        records.append(match.groups())
        i += 1
        while lines[i]:
            assert EVALUATOR.fullmatch(lines[i]), f"{label_file}:{i + 1}: {lines[i]!r}"
            i += 1
        i += 1  # The blank line closing the record.
    return records


def test_exact_release_format(corpus):
    root, utterances = corpus
    parsed = {}
    for session in range(1, 6):
        label_folder = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        assert list((label_folder / "Categorical").iterdir())
        assert list((label_folder / "Attribute").iterdir())
        for label_file in label_folder.glob("*.txt"):
            for utt_id, emo in parse_strictly(label_file):
                assert utt_id.startswith(label_file.stem + "_")
                parsed[utt_id] = emo
    assert parsed == {utt["ID"]: utt["raw_emo"] for utt in utterances}
    assert set(parsed.values()) == {"neu", "ang", "sad", "hap", "exc", "fru", "xxx"}
    assert {utt["spk_id"] for utt in utterances} == {
        f"Ses{s:02d}{g}" for s in range(1, 6) for g in "FM"
    }
    assert {utt["utt_type"] for utt in utterances} == {"impro", "script"}
    # Both speakers talk in the dialogs either of them leads.
    assert any(utt["ID"][5] == "F" and utt["spk_id"][-1] == "M" for utt in utterances)
    assert any(utt["ID"][5] == "M" and utt["spk_id"][-1] == "F" for utt in utterances)
    for utt in utterances[:20]:
        expected = root / f"Session{utt['session']}/sentences/wav/{utt['dialog']}/{utt['ID']}.wav"
        info = sf.info(expected)
        assert info.samplerate == 16000 and info.channels == 1
        assert 0.8 <= info.duration <= 1.2
        assert info.duration == pytest.approx(utt["duration"])


def digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    hasher = hashlib.sha1()
    for path in files:
        hasher.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return hasher.hexdigest()


def test_deterministic_given_seed(tmp_path):
    small = dict(
        utterances_per_emotion=1, dropped_per_speaker=1, min_duration=0.2, max_duration=0.3
    )
    make_synthetic_iemocap(tmp_path / "a", seed=7, **small)
    make_synthetic_iemocap(tmp_path / "b", seed=7, **small)
    make_synthetic_iemocap(tmp_path / "c", seed=8, **small)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def f0_estimate(signal, sample_rate):
    """Median autocorrelation pitch of the loudest 40 ms frames."""
    frame = int(0.04 * sample_rate)
    frames = signal[: len(signal) // frame * frame].reshape(-1, frame)
    energy = (frames**2).mean(axis=1)
    low, high = sample_rate // 500, sample_rate // 60
    pitches = []
    for chunk in frames[energy >= np.percentile(energy, 70)]:
        chunk = chunk - chunk.mean()
        autocorr = np.correlate(chunk, chunk, "full")[frame - 1 :]
        pitches.append(sample_rate / (low + np.argmax(autocorr[low:high])))
    return np.median(pitches)


def test_emotions_differ_in_energy_and_pitch(corpus):
    root, utterances = corpus
    stats = defaultdict(list)
    for utt in utterances:
        signal, rate = sf.read(utt["path"])
        rms = np.sqrt(np.mean(signal**2))
        stats[utt["spk_id"], utt["raw_emo"]].append((rms, f0_estimate(signal, rate)))
    for spk in {utt["spk_id"] for utt in utterances}:
        rms = {emo: np.mean([s[0] for s in stats[spk, emo]]) for emo in ("ang", "neu", "sad")}
        f0 = {emo: np.median([s[1] for s in stats[spk, emo]]) for emo in ("ang", "neu", "sad")}
        assert rms["ang"] > rms["neu"] > rms["sad"], spk
        assert f0["ang"] > f0["neu"] > f0["sad"], spk
    # Speakers differ too: female voices are higher than male ones in the same emotion.
    female = np.median([s[1] for (spk, emo), v in stats.items() if spk[-1] == "F" for s in v])
    male = np.median([s[1] for (spk, emo), v in stats.items() if spk[-1] == "M" for s in v])
    assert female > 1.4 * male


def test_options_and_cli(tmp_path):
    female_only = {"speakers_per_session": 1, "n_sessions": 2, "dropped_per_speaker": 0}
    short = {"utterances_per_emotion": 1, "min_duration": 0.2, "max_duration": 0.2}
    utterances = make_synthetic_iemocap(tmp_path / "one", sample_rate=8000, **female_only, **short)
    assert {utt["spk_id"] for utt in utterances} == {"Ses01F", "Ses02F"}
    assert sf.info(utterances[0]["path"]).samplerate == 8000
    with pytest.raises(ValueError, match="speakers_per_session"):
        make_synthetic_iemocap(tmp_path / "bad", speakers_per_session=3)
    cli = main(
        [
            str(tmp_path / "cli"),
            "--utterances-per-emotion",
            "1",
            "--min-duration",
            "0.2",
            "--max-duration",
            "0.3",
        ]
    )
    assert len(cli) == 10 * (4 + 2)
