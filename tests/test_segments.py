"""Emotion over time: window planning, window-by-window classification, the CLI's --segment."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import hnsd_sb.segments as segments
from hnsd_sb import HNSD
from hnsd_sb.audio import load_audio
from hnsd_sb.cli import main
from hnsd_sb.export import write_model_folder
from hnsd_sb.inference import EmotionRecognizer
from hnsd_sb.segments import classify_windows, plan_windows

LABELS = ["ang", "hap", "neu", "sad"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    spec = {"model": ("hnsd_sb.HNSD", {"hidden_size": 16, "fc_size": 8, "n_classes": 4})}
    state = HNSD(hidden_size=16, fc_size=8, n_classes=4).state_dict()
    folder = tmp_path_factory.mktemp("segments") / "model"
    return write_model_folder(folder, LABELS, state, modules=spec)


@pytest.fixture(scope="module")
def recognizer(model):
    return EmotionRecognizer.from_folder(model, run_opts={"device": "cpu"})


def speech_like(seconds, rate=16000, seed=0):
    """Noise under a slow amplitude envelope with pauses: not silence, not stationary."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 0.3 * t), 0.05, None)
    return (0.2 * envelope * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("n_frames", [1, 63999, 64000, 64001, 95999, 160000, 161234])
@pytest.mark.parametrize("segment, hop", [(4.0, 2.0), (4.0, 4.0), (3.0, 0.5)])
def test_windows_cover_the_recording_at_full_length(n_frames, segment, hop):
    windows = plan_windows(n_frames, 16000, segment, hop)
    length, step = int(segment * 16000), int(hop * 16000)
    assert windows[0][0] == 0 and windows[-1][1] == n_frames
    if n_frames <= length:
        assert windows == [(0, n_frames)]
        return
    assert all(end - start == length for start, end in windows)
    starts = [start for start, _ in windows]
    assert all(b - a == step for a, b in zip(starts[:-2], starts[1:-1]))
    assert 0 < starts[-1] - starts[-2] <= step  # the last one, aligned to the end
    assert len(windows) == segments.window_count(n_frames, 16000, segment, hop)


def test_windows_match_the_recognizer_on_the_same_audio(recognizer, tmp_path):
    """Each window record is what classify_batch gives the window's samples; the summary is
    the mean of the window probabilities."""
    path = tmp_path / "long.wav"
    sf.write(path, speech_like(11.0), 16000)
    recognizer.enroll("alice", [speech_like(5.0, seed=1)])
    records = list(classify_windows(recognizer, str(path), 4.0, 2.0, speaker="alice"))
    *windows, summary = records
    wav = load_audio(str(path))
    assert [(r["start"], r["end"]) for r in windows] == [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)]
    batch = torch.stack([wav[int(r["start"] * 16000) : int(r["end"] * 16000)] for r in windows])
    probs, score, _, label = recognizer.classify_batch(batch, speakers="alice")
    for record, p, s, lab in zip(windows, probs, score, label):
        assert record["label"] == lab and record["score"] == pytest.approx(float(s), abs=1e-5)
        got = torch.tensor([record["probabilities"][k] for k in LABELS])
        torch.testing.assert_close(got, p, atol=1e-5, rtol=0)
    mean = probs.mean(0)
    assert summary["window"] == "summary" and summary["windows"] == 5
    assert (summary["start"], summary["end"]) == (0.0, 11.0)
    assert summary["label"] == LABELS[int(mean.argmax())]
    got = torch.tensor([summary["probabilities"][k] for k in LABELS])
    torch.testing.assert_close(got, mean, atol=1e-5, rtol=0)


def test_recording_normalises_itself_and_leaves_no_speaker_behind(recognizer, tmp_path):
    path = tmp_path / "talk.wav"
    sf.write(path, speech_like(9.0, seed=2), 16000)
    before = list(recognizer.mods.normalizer.speakers)
    own = list(classify_windows(recognizer, str(path)))
    assert recognizer.mods.normalizer.speakers == before
    # the same statistics, gathered by hand under a name, give the same records
    with segments.Recording(str(path), 16000) as recording:
        segments.first_pass(recognizer, recording, "by hand")
    named = list(classify_windows(recognizer, str(path), speaker="by hand"))
    assert [r["probabilities"] for r in own] == [r["probabilities"] for r in named]
    # and they are not those of each window alone (the "unseen" fallback)
    alone = recognizer.classify_batch(load_audio(str(path))[: 4 * 16000].unsqueeze(0))[0][0]
    assert not torch.allclose(torch.tensor(list(own[0]["probabilities"].values())), alone)


def test_memory_is_bounded_by_the_window_not_the_file(recognizer, tmp_path, monkeypatch):
    path = tmp_path / "hour_like.wav"
    sf.write(path, speech_like(60.0, seed=3), 16000)
    largest = []
    real_read = segments.sf.SoundFile.read

    def read(self, frames=-1, *args, **kwargs):
        largest.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(segments.sf.SoundFile, "read", read)
    records = list(classify_windows(recognizer, str(path), 4.0, 2.0))
    assert len(records) == 29 + 1
    assert 0 < max(largest) <= 4 * 16000  # never the whole minute


def test_predict_segment_writes_windows_summary_and_plot(model, tmp_path, capsys):
    wav = tmp_path / "call.wav"
    sf.write(wav, speech_like(10.0, seed=4), 16000)
    out, plots = tmp_path / "out.jsonl", tmp_path / "plots"
    assert main(["predict", "--model", str(model), "--segment", "-o", str(out),
                 "--plot", str(plots), "-q", str(wav)]) == 0  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["window"] for r in records] == [0, 1, 2, 3, "summary"]
    assert records[-1]["summary"] == "mean of the window probabilities"
    assert (plots / "call.png").stat().st_size > 10_000
    # CSV: window, start and end columns
    out_csv = tmp_path / "out.csv"
    assert main(["predict", "--model", str(model), "--segment", "2", "--hop", "1", "--format",
                 "csv", "-o", str(out_csv), "-q", str(wav)]) == 0  # fmt: skip
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["path", "window", "start", "end", "label", "score"]
    assert len(rows) == 9 + 1 and rows[-1]["window"] == "summary"


def test_predict_segment_usage_and_file_errors(model, tmp_path, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, speech_like(3.0), 16000)
    for args in (["--hop", "1"], ["--plot", str(tmp_path)], ["--segment", "4", "--hop", "5"],
                 ["--segment", "--attention"]):  # fmt: skip
        assert main(["predict", "--model", str(model), *args, str(wav)]) == 2
        assert "Traceback" not in capsys.readouterr().err
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    out = tmp_path / "o.jsonl"
    assert main(["predict", "--model", str(model), "--segment", "-q", "-o", str(out),
                 str(bad), str(wav)]) == 1  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert (
        records[0]["window"] == "summary" and "bad.wav: unreadable as audio" in records[0]["error"]
    )
    assert records[-1]["window"] == "summary" and records[-1]["error"] is None


def test_too_long_without_segment_points_to_it(model, tmp_path, capsys):
    wav = tmp_path / "long.wav"
    sf.write(wav, speech_like(6.0), 16000)
    assert main(["predict", "--model", str(model), "--max-duration", "5", str(wav)]) == 1
    record = json.loads(capsys.readouterr().out)
    assert "too long" in record["error"] and "with --segment" in record["error"]


def test_a_failing_window_becomes_an_error_record_and_the_run_goes_on(
    model, tmp_path, monkeypatch, capsys
):
    first, second = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(first, speech_like(6.0), 16000)
    sf.write(second, speech_like(6.0), 16000)
    real = EmotionRecognizer.infer_batch
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("DefaultCPUAllocator: not enough memory")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EmotionRecognizer, "infer_batch", flaky)
    out = tmp_path / "o.jsonl"
    assert main(["predict", "--model", str(model), "--segment", "-q", "-o", str(out),
                 str(first), str(second)]) == 1  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["window"] == "summary"
    assert records[0]["error"] == f"{first}: DefaultCPUAllocator: not enough memory"
    assert records[-1]["window"] == "summary" and records[-1]["error"] is None
    assert "Traceback" not in capsys.readouterr().err


def test_segment_bounds_the_window_plan_and_names_plots_with_dollars(model, tmp_path, capsys):
    from test_audio import flac_declaring

    huge = flac_declaring(tmp_path / "huge.flac", (1 << 36) - 1)
    records = list(classify_windows(EmotionRecognizer.from_folder(model), str(huge)))
    assert (
        len(records) == 1 and "windows, more than 50000; use a larger --hop" in records[0]["error"]
    )
    wav = tmp_path / "a$\\frac{$b.wav"
    sf.write(wav, speech_like(6.0), 16000)
    plots = tmp_path / "plots"
    args = ["predict", "--model", str(model), "--segment", "-q", "--plot", str(plots), str(wav)]
    assert main(args) == 0
    assert len(list(plots.glob("*.png"))) == 1


def test_a_file_name_after_segment_gets_a_clear_message(model, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--model", str(model), "--segment", "talk.wav"])
    assert exit_.value.code == 2
    assert "put --segment after the input files" in capsys.readouterr().err
