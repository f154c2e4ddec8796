"""Tests of the ``hnsd`` command line: predict on good and bad files, formats, export."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.checkpoints import Checkpointer

from hnsd_sb import HNSD, SpeakerNormalization
from hnsd_sb.cli import main
from hnsd_sb.export import write_model_folder
from hnsd_sb.synthetic import synthesize_utterance

LABELS = ["ang", "hap", "neu", "sad"]
SPEC = {"model": ("hnsd_sb.HNSD", {"hidden_size": 16, "fc_size": 8, "n_classes": 4})}
VOICE = dict(f0=120.0, formants=1.0, gain=0.0, tempo=1.0, breath=0.1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cli") / "model"
    norm = SpeakerNormalization()
    norm.accumulate(torch.randn(1, 50, 78), torch.ones(1), ["Ses01F"])
    state = HNSD(hidden_size=16, fc_size=8, n_classes=4).state_dict()
    return write_model_folder(folder, LABELS, state, norm.state(), modules=SPEC)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder of good recordings (16 kHz mono, 44.1 kHz stereo FLAC) and bad files."""
    folder = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(0)
    for i, emotion in enumerate(("ang", "sad")):
        sf.write(folder / f"good{i}.wav", synthesize_utterance(rng, VOICE, emotion, 1.0), 16000)
    (folder / "sub").mkdir()
    stereo = np.stack([synthesize_utterance(rng, VOICE, "hap", 1.5, 44100)] * 2, axis=1)
    sf.write(folder / "sub" / "stereo44k.flac", stereo, 44100)
    sf.write(folder / "empty.wav", np.zeros(0), 16000)
    sf.write(folder / "short.wav", np.zeros(200), 16000)
    nan = np.zeros(8000, dtype=np.float32)
    nan[100] = np.nan
    sf.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    (folder / "junk.wav").write_bytes(b"this is not audio")
    sf.write(folder / "truncated.wav", np.zeros(16000), 16000)
    with open(folder / "truncated.wav", "r+b") as f:
        f.truncate(10000)
    (folder / "notes.txt").write_text("not an input")
    loud = np.full(8000, 1e29, dtype=np.float32)  # finite, but no audio reaches 1e29
    sf.write(folder / "loud.wav", loud, 16000, subtype="FLOAT")
    sf.write(folder / "one_hertz.wav", np.zeros(1000), 1)  # would resample to 16 M samples
    full = synthesize_utterance(rng, VOICE, "sad", 2.0)
    sf.write(folder / "half.flac", full, 16000)
    data = (folder / "half.flac").read_bytes()
    (folder / "half.flac").write_bytes(data[: len(data) // 2])
    return folder


GOOD = {"good0.wav", "good1.wav", "stereo44k.flac"}
BAD = {"empty.wav", "short.wav", "nan.wav", "junk.wav", "truncated.wav", "loud.wav"}
BAD |= {"one_hertz.wav", "half.flac"}
ERRORS = {  # what the error record of some bad files says
    "loud.wav": "samples reach 1e+29: float audio is nominally within [-1, 1]",
    "one_hertz.wav": "implausible sampling rate 1 Hz",
    "half.flac": "cannot decode samples",
}


def strict_json(line):
    """json.loads that refuses NaN and Infinity, which are not JSON."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def read_jsonl(path):
    return [strict_json(line) for line in Path(path).read_text().splitlines()]


def test_predict_folder_with_good_and_bad_files(model, inputs, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    status = main(["predict", "--model", str(model), str(inputs), "-o", str(out)])
    assert status == 1  # some files failed
    records = read_jsonl(out)
    names = [Path(r["path"]).name for r in records]
    assert [r["path"] for r in records] == sorted(r["path"] for r in records)
    assert set(names) == GOOD | BAD  # notes.txt is not audio
    for record in records:
        name = Path(record["path"]).name
        if name in GOOD:
            assert record["error"] is None and record["label"] in LABELS
            assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert record["score"] == max(record["probabilities"].values())
        else:
            assert record["label"] is None and name in record["error"]
            assert ERRORS.get(name, "") in record["error"]
    durations = {Path(r["path"]).name: r["duration"] for r in records}
    assert durations["good0.wav"] == 1.0 and durations["stereo44k.flac"] == pytest.approx(1.5)
    err = capsys.readouterr().err
    assert "8 of 11 files failed" in err and "hnsd predict" in err  # summary and progress bar


def test_predict_refuses_recordings_longer_than_max_duration(model, inputs, capsys):
    good = str(inputs / "good0.wav")  # 1 s
    assert main(["predict", "--model", str(model), "--max-duration", "0.5", good]) == 1
    record = strict_json(capsys.readouterr().out)
    assert record["error"] == (
        f"{good}: too long: 1 s, maximum 0.5 s; classify it window by window, in bounded "
        "memory, with --segment"
    )
    assert main(["predict", "--model", str(model), "--max-duration", "0", good]) == 0


def test_predict_csv_exit_zero_when_all_files_are_good(model, inputs, tmp_path):
    out = tmp_path / "out.csv"
    files = [str(inputs / "good0.wav"), str(inputs / "sub")]
    assert (
        main(["predict", "--model", str(model), "--format", "csv", "-q", "-o", str(out), *files])
        == 0
    )
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["good0.wav", "stereo44k.flac"]
    assert list(rows[0]) == ["path", "label", "score", "duration"] + [f"p_{x}" for x in LABELS] + [
        "error"
    ]
    assert sum(float(rows[0][f"p_{x}"]) for x in LABELS) == pytest.approx(1.0, abs=1e-5)
    assert rows[0]["error"] == ""


def test_predict_attention_enrolment_and_speakers(model, inputs, capsys):
    good = str(inputs / "good0.wav")
    assert main(["predict", "--model", str(model), "--attention", good]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["attention"]["weights"]) == 1 + 16000 // 160
    assert record["attention"]["frame_shift"] == pytest.approx(0.01)
    # Known speaker, enrolled speaker, unknown speaker.
    assert main(["predict", "--model", str(model), "--speaker", "Ses01F", good]) == 0
    assert main(["predict", "--model", str(model), "--enroll", str(inputs / "sub"), good]) == 0
    assert "enrolled 1 reference files (1.5 s) as speaker 'reference speaker'" in (
        capsys.readouterr().err
    )
    silent = inputs.parent / "silent.wav"
    sf.write(silent, np.zeros(16000), 16000)
    assert main(["predict", "--model", str(model), "--enroll", str(silent), good]) == 0
    assert f"enrolment recording {silent} is silent (peak 0.0e+00)" in capsys.readouterr().err
    assert main(["predict", "--model", str(model), "--speaker", "nobody", good]) == 2
    assert "no statistics for speaker 'nobody'" in capsys.readouterr().err


def test_predict_usage_errors(model, tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert "no audio files" in capsys.readouterr().err
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600), 16000)
    assert main(["predict", "--model", str(tmp_path / "nope"), str(wav)]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    assert main(["predict", "--model", str(model), "--format", "csv", "--attention", str(wav)]) == 2


def test_export_command(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "save").mkdir(parents=True)
    (run / "hyperparams.yaml").write_text(
        "model: !new:hnsd_sb.HNSD\n    hidden_size: 8\n    n_classes: 2\n"
        "normalizer: !new:hnsd_sb.SpeakerNormalization\n"
        "modules:\n    model: !ref <model>\n    normalizer: !ref <normalizer>\n"
    )
    recoverables = {"model": HNSD(hidden_size=8, n_classes=2), "normalizer": SpeakerNormalization()}
    Checkpointer(run / "save", recoverables).save_checkpoint(meta={"UA": 50.0})
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(["neg", "pos"])
    encoder.save(run / "save" / "label_encoder.txt")
    assert main(["export", str(run), str(tmp_path / "model")]) == 0
    assert main(["export", str(run), str(tmp_path / "model")]) == 1
    assert "already holds an exported model" in capsys.readouterr().err
    assert main(["export", str(run), str(tmp_path / "model"), "--overwrite"]) == 0
    assert 'labels: ["neg", "pos"]' in (tmp_path / "model" / "hyperparams.yaml").read_text()
    # A validation UA of 50 % on two classes is chance: the export says so, and so do
    # `hnsd info` and `hnsd predict` with that folder.
    err = capsys.readouterr().err
    assert "warning: validation UA 50.0 % is near chance (50.0 % for 2 classes)" in err
    assert main(["info", str(tmp_path / "model")]) == 0
    out = capsys.readouterr().out
    assert "labels: neg, pos" in out and "validation: UA 50.0 %" in out
    assert "exported from: " + str(run / "save" / "CKPT+") in out and "near chance" in out
    wav = tmp_path / "a.wav"
    sf.write(wav, synthesize_utterance(np.random.default_rng(0), VOICE, "ang", 1.0), 16000)
    assert main(["predict", "--model", str(tmp_path / "model"), str(wav)]) == 0
    assert "near chance" in capsys.readouterr().err


def test_info_without_and_with_a_model_folder(model, tmp_path, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hnsd-sb ") and "torch: " in out and "speechbrain: " in out
    # `model` has no validation scores: no warning.
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "labels: ang, hap, neu, sad (chance UA 25.0 %)" in out and "warning" not in out
    assert main(["info", str(tmp_path)]) == 2
    assert f"{tmp_path}: not a model folder (no model_info.json)" in capsys.readouterr().err
    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    (bad / "model_info.json").write_text("{not json")
    assert main(["info", str(bad)]) == 2
    assert "model_info.json: not a valid model information file" in capsys.readouterr().err
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000), 16000)
    assert main(["predict", "--model", str(bad), str(wav)]) == 2
    assert "not a valid model information file" in capsys.readouterr().err
    (bad / "model_info.json").write_text("")
    assert main(["predict", "--model", str(bad), str(wav)]) == 2
    err = capsys.readouterr().err
    assert "model_info.json: not a valid model information file" in err
    assert "Traceback" not in err


def test_help_info_and_usage_errors_do_not_import_torch():
    # They answer at once: torch and SpeechBrain take seconds to import.
    code = (
        "import sys\n"
        "from hnsd_sb.cli import main\n"
        "assert main(['info']) == 0\n"
        "assert main(['predict', '--model', 'm', '/no/such/folder/']) == 2\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted({'torch', 'speechbrain', 'torchaudio'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_known_speechbrain_notices_are_dropped_and_others_kept(tmp_path):
    code = (
        "import logging\n"
        "import hnsd_sb\n"
        "import speechbrain.utils.train_logger\n"
        "logging.getLogger('speechbrain.utils.train_logger').warning('a real problem')\n"
        "from speechbrain.dataio.encoder import CategoricalEncoder\n"
        "encoder = CategoricalEncoder()\n"
        "encoder.update_from_iterable(['a', 'b'])\n"
        "encoder.save('enc.txt')\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "encoder.load('enc.txt')\n"
    )
    run = dict(capture_output=True, text=True, cwd=tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], **run)
    assert proc.returncode == 0, proc.stderr
    assert "a real problem" in proc.stderr
    assert "torchvision" not in proc.stderr and "not empty" not in proc.stderr


def test_help_documents_both_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "predict" in text and "export" in text and "exit status" in text
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "--enroll" in capsys.readouterr().out


def test_console_script_single_file(model, inputs):
    script = shutil.which("hnsd", path=os.path.dirname(sys.executable)) or shutil.which("hnsd")
    command = [script] if script else [sys.executable, "-m", "hnsd_sb.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        command + ["predict", "--model", str(model), str(inputs / "good1.wav")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    (record,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert record["label"] in LABELS and proc.stderr == ""


def test_non_utf8_file_names_get_their_records_losslessly(model, inputs, tmp_path, capsys):
    folder = tmp_path / "names"
    folder.mkdir()
    good = synthesize_utterance(np.random.default_rng(1), VOICE, "ang", 1.0)
    names = [b"caf\xe9.wav", b"z_ok.wav"]  # Latin-1 bytes, not UTF-8
    for name in names:
        sf.write(os.path.join(os.fsencode(folder), name), good, 16000)
    (folder / "bad_\udcff.wav").write_bytes(b"junk")  # a bad file with such a name too
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"out.{fmt}"
        args = ["--format", fmt, "-o", str(out), str(folder)]
        assert main(["predict", "--model", str(model), *args]) == 1  # the junk file
        text = out.read_text(encoding="utf-8")  # valid UTF-8
        if fmt == "csv":
            paths = [row["path"] for row in csv.DictReader(text.splitlines())]
        else:
            paths = [strict_json(line)["path"] for line in text.splitlines()]
        shown = ("bad_\\xff.wav", "caf\\xe9.wav", "z_ok.wav")  # sorted by the original bytes
        assert paths == [f"{folder}/{name}" for name in shown]
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["error"] is None for r in records] == [False, True, True]
    assert "bad_\\xff.wav: unreadable as audio" in records[0]["error"]
    assert capsys.readouterr().err.count("1 of 3 files failed") == 2


def test_output_that_cannot_be_written_is_named_with_status_2(model, inputs, tmp_path, capsys):
    good = str(inputs / "good0.wav")
    (tmp_path / "a_file").write_text("")
    targets = {
        str(tmp_path / "no" / "such" / "out.jsonl"): "No such file or directory",
        str(tmp_path / "a_file" / "out.jsonl"): "Not a directory",
        "/dev/full": "No space left on device",
    }
    for target, reason in targets.items():
        assert main(["predict", "--model", str(model), "-o", target, good]) == 2
        err = capsys.readouterr().err
        assert f"hnsd predict: cannot write {target}: {reason}" in err and "Traceback" not in err
    assert not (tmp_path / "no").exists()


def test_output_that_is_an_input_is_refused(model, inputs, tmp_path, capsys):
    victim = tmp_path / "victim.wav"
    shutil.copy(inputs / "good0.wav", victim)
    before = victim.read_bytes()
    assert main(["predict", "--model", str(model), "-o", str(victim), str(victim)]) == 2
    assert "is one of the inputs or enrolment recordings; writing" in capsys.readouterr().err
    assert victim.read_bytes() == before
    other = inputs / "good0.wav"
    args = ["predict", "--model", str(model), "--enroll", str(victim), "-o", str(victim)]
    assert main([*args, str(other)]) == 2
    assert victim.read_bytes() == before
