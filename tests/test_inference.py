"""Tests of the model export and the EmotionRecognizer inference interface on a real recipe run."""

import csv
import importlib.util
import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
import torchaudio
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.batch import PaddedBatch

from hnsd_sb.audio import AudioError, load_audio
from hnsd_sb.checkpoints import find_checkpoint
from hnsd_sb.cli import main as cli_main
from hnsd_sb.export import FOLDER_FILES, export_model
from hnsd_sb.inference import EmotionRecognizer
from hnsd_sb.model_info import read_model_info
from hnsd_sb.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "IEMOCAP" / "hnsd"


@pytest.fixture(scope="module")
def run_folder(tiny_run):
    """A one-epoch run of the IEMOCAP recipe on a tiny synthetic corpus (``conftest.py``)."""
    return tiny_run


@pytest.fixture(scope="module")
def model_folder(tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def recognizer(model_folder):
    return EmotionRecognizer.from_folder(model_folder, run_opts={"device": "cpu"})


@pytest.fixture(scope="module")
def test_rows(run_folder):
    with open(run_folder / "test.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    corpus = run_folder.parent / "IEMOCAP_full_release"
    for row in rows:
        row["wav"] = row["wav"].replace("$data_root", str(corpus))
    return rows


def brain_log_probs(run_folder, rows, speakers):
    """The recipe Brain's own forward on a padded batch of the given rows (best checkpoint)."""
    spec = importlib.util.spec_from_file_location("hnsd_train", RECIPE / "train.py")
    train = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(RECIPE))
    try:
        spec.loader.exec_module(train)
    finally:
        sys.path.remove(str(RECIPE))
    with open(run_folder / "hyperparams.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f)
    brain = train.EmotionBrain(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts={"device": "cpu"},
        checkpointer=hparams["checkpointer"],
    )
    brain.checkpointer.recover_if_possible(max_key="UA")
    brain.modules.eval()
    batch = PaddedBatch(
        [
            {"id": row["ID"], "sig": load_audio(row["wav"]), "spk_id": spk}
            for row, spk in zip(rows, speakers)
        ]
    )
    with torch.no_grad():
        log_probs, _ = brain.compute_forward(batch, sb.Stage.TEST)
    return log_probs


def test_run_ends_saying_where_its_results_are_without_known_noise(run_folder):
    stdout = (run_folder.parent / "stdout.txt").read_text()
    console = stdout + (run_folder.parent / "stderr.txt").read_text()
    last = [line for line in stdout.splitlines() if line.strip()][-1]
    assert f"Results in {run_folder}: test_results.json" in last
    assert f"hnsd export {run_folder} MODEL_DIR" in last
    assert "torchvision is not available" not in console
    assert "CategoricalEncoder is not empty" not in console


def test_model_info_records_the_exported_checkpoint(model_folder, run_folder):
    info = read_model_info(model_folder)
    checkpoint = find_checkpoint(run_folder)
    assert info["labels"] == ["ang", "hap", "neu", "sad"] and info["chance_UA"] == 25.0
    assert info["validation"] == {"UA": checkpoint.meta["UA"], "WA": checkpoint.meta["WA"]}
    assert info["epoch"] == 1 and info["exported_from"] == str(checkpoint.path)


def test_model_card_is_filled_from_the_run(model_folder, run_folder, capsys):
    card = (model_folder / "README.md").read_text()
    results = json.loads((run_folder / "test_results.json").read_text())
    with open(run_folder / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    n_params = sum(t.numel() for t in torch.load(model_folder / "model.ckpt").values())
    assert f"{n_params:,} parameters" in card
    assert (
        "Corpus: **IEMOCAP** (acted speech, scripted and improvised dyadic sessions, in English"
        in card
    )
    for emo in sorted({row["emo"] for row in rows}):
        mine = [row for row in rows if row["emo"] == emo]
        hours = sum(float(row["duration"]) for row in mine) / 3600
        speakers = len({row["spk_id"] for row in mine})
        assert f"| {emo} | {len(mine)} | {hours:.2f} | {speakers} |" in card
    wa, ua = (f"{100 * results[k]:.2f}" for k in ("WA", "UA"))
    assert f"| test | {wa} | {ua} | {results['n']} |" in card
    info = read_model_info(model_folder)
    assert (
        f"| validation | {info['validation']['WA']:.2f} | {info['validation']['UA']:.2f} |" in card
    )
    assert results["epoch"] == info["epoch"]  # the tested checkpoint is the exported one
    assert f"python {RECIPE / 'train.py'} {RECIPE / 'hparams' / 'hnsd.yaml'}" in card
    assert "IEMOCAP release agreement" in card and "Not for decisions about people" in card
    # hnsd info prints it, after checking that the folder loads
    assert cli_main(["info", str(model_folder)]) == 0
    out = capsys.readouterr().out
    assert f"loads: yes ({n_params:,} parameters" in out and out.endswith(card)


def test_exported_folder_holds_inference_files_only(model_folder, run_folder):
    assert sorted(p.name for p in model_folder.iterdir()) == sorted(FOLDER_FILES)
    text = (model_folder / "hyperparams.yaml").read_text()
    assert "Pretrainer" in text and "load_weights" in text
    assert str(find_checkpoint(run_folder).path) in text  # where the weights come from
    assert (model_folder / "label_encoder.txt").read_text().startswith("'ang' => 0")


def test_classify_file_matches_the_brain_forward(recognizer, run_folder, test_rows):
    # Three files of different lengths in one padded batch, as the test stage sees them; known
    # speakers use the exported statistics, an unknown one the utterance fallback.
    rows = sorted(test_rows, key=lambda r: float(r["duration"]))[::3][:3]
    assert len({r["duration"] for r in rows}) == 3
    known = brain_log_probs(run_folder, rows, [r["spk_id"] for r in rows])
    unseen = brain_log_probs(run_folder, rows, ["nobody"] * len(rows))
    assert not torch.allclose(known, unseen, atol=1e-4)
    for i, row in enumerate(rows):
        probs, score, index, label = recognizer.classify_file(row["wav"], speaker=row["spk_id"])
        torch.testing.assert_close(probs[0], known[i].exp(), rtol=0, atol=1e-5)
        assert label == [recognizer.labels[int(index)]] and float(score) == float(probs.max())
        probs, _, _, _ = recognizer.classify_file(row["wav"])
        torch.testing.assert_close(probs[0], unseen[i].exp(), rtol=0, atol=1e-5)


def test_foreign_class_loads_the_folder_offline(model_folder, recognizer, test_rows, monkeypatch):
    from speechbrain.inference.interfaces import foreign_class
    from speechbrain.utils import fetching

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(fetching, "download_file", no_network)
    monkeypatch.setattr(fetching, "download_file_hf", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = foreign_class(
        source=str(model_folder),
        pymodule_file="custom_interface.py",
        classname="EmotionRecognizer",
        run_opts={"device": "cpu"},
    )
    assert type(loaded).__name__ == "EmotionRecognizer"
    path = test_rows[0]["wav"]
    torch.testing.assert_close(loaded.classify_file(path)[0], recognizer.classify_file(path)[0])


def test_folders_naming_the_old_hook_module_still_load(model_folder, recognizer, tmp_path):
    """Folders exported before hnsd_sb.weights name its hooks hnsd_sb.export.*: SpeechBrain's
    from_hparams still loads them, to the same outputs."""
    from speechbrain.inference.interfaces import foreign_class

    old = Path(shutil.copytree(model_folder, tmp_path / "old"))
    yaml_file = old / "hyperparams.yaml"
    text = yaml_file.read_text()
    assert "hnsd_sb.weights.load_weights" in text
    yaml_file.write_text(text.replace("hnsd_sb.weights.", "hnsd_sb.export."))
    loaded = foreign_class(
        source=str(old),
        pymodule_file="custom_interface.py",
        classname="EmotionRecognizer",
        run_opts={"device": "cpu"},
    )
    wav = torch.randn(1, 16000)
    torch.testing.assert_close(loaded.classify_batch(wav)[0], recognizer.classify_batch(wav)[0])


def test_folders_of_the_earlier_weight_layout_still_load(model_folder, recognizer, tmp_path):
    """Folders exported before HNSD was assembled from parts hold fc/output at the top of
    model.ckpt: both ways of loading still take them, to the same outputs."""
    from speechbrain.inference.interfaces import foreign_class

    old = Path(shutil.copytree(model_folder, tmp_path / "old_layout"))
    state = torch.load(old / "model.ckpt", weights_only=True)
    torch.save({k.replace("classifier.", "", 1): v for k, v in state.items()}, old / "model.ckpt")
    assert "fc.weight" in torch.load(old / "model.ckpt", weights_only=True)
    wav = torch.randn(1, 16000)
    expected = recognizer.classify_batch(wav)[0]
    loaded = EmotionRecognizer.from_folder(old, run_opts={"device": "cpu"})
    torch.testing.assert_close(loaded.classify_batch(wav)[0], expected)
    loaded = foreign_class(
        source=str(old),
        pymodule_file="custom_interface.py",
        classname="EmotionRecognizer",
        run_opts={"device": "cpu"},
    )
    torch.testing.assert_close(loaded.classify_batch(wav)[0], expected)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "FLOAT"), ("FLAC", "PCM_24"), ("OGG", "VORBIS")])
def test_44k_stereo_input_is_resampled_and_downmixed(recognizer, test_rows, tmp_path, fmt, subtype):
    mono = load_audio(test_rows[0]["wav"])
    high = torchaudio.functional.resample(mono, 16000, 44100)
    stereo = torch.stack([high, 0.5 * high], dim=1).numpy()  # downmix: 0.75 * mono
    path = tmp_path / f"stereo.{fmt.lower()}"
    sf.write(path, stereo, 44100, format=fmt, subtype=subtype)
    wav = recognizer.load_audio(path)
    assert abs(wav.numel() - mono.numel()) <= 2
    n = min(wav.numel(), mono.numel())
    corr = np.corrcoef(wav[:n].numpy(), mono[:n].numpy())[0, 1]
    assert corr > (0.9 if fmt == "OGG" else 0.999)
    if fmt != "OGG":
        assert float((wav[:n] - 0.75 * mono[:n]).abs().max()) < 0.01
    probs, _, _, label = recognizer.classify_file(path)
    assert probs.shape == (1, len(recognizer.labels)) and label[0] in recognizer.labels


def test_attention_over_time(recognizer, test_rows):
    path = test_rows[0]["wav"]
    times, weights = recognizer.attention_file(path)
    n_samples = load_audio(path).numel()
    assert weights.shape == times.shape == (1 + n_samples // 160,)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(times[1] - times[0]) == pytest.approx(0.01)


def test_enrolment_replaces_the_unseen_fallback(recognizer, test_rows):
    path = test_rows[0]["wav"]
    assert recognizer.mods.normalizer.unseen == "global"  # the recipes' fallback
    fallback = recognizer.classify_file(path)[0]
    # A speaker enrolled with this recording alone has exactly its statistics, those that the
    # "utterance" fallback takes.
    recognizer.enroll("solo", [path])
    recognizer.mods.normalizer.unseen = "utterance"
    try:
        own = recognizer.classify_file(path)[0]
    finally:
        recognizer.mods.normalizer.unseen = "global"
    torch.testing.assert_close(recognizer.classify_file(path, "solo")[0], own)
    assert not torch.allclose(own, fallback, atol=1e-6)
    others = [row["wav"] for row in test_rows[1:4]]
    assert recognizer.enroll("group", others) > 0
    assert not torch.allclose(recognizer.classify_file(path, "group")[0], fallback, atol=1e-6)


def test_bad_file_errors_name_it(recognizer, tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0), 16000)
    with pytest.raises(AudioError, match="empty.wav"):
        recognizer.classify_file(path)


class Payload:
    """Would create a file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weights_are_never_unpickled_as_objects(model_folder, tmp_path):
    marker = tmp_path / "was_unpickled"
    bad = tmp_path / "model.ckpt"
    with open(bad, "wb") as f:
        pickle.dump({"weight": Payload(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match="model.ckpt"):
        load_weights(torch.nn.Linear(1, 1), bad)
    folder = tmp_path / "tampered"
    folder.mkdir()
    for name in FOLDER_FILES:
        (folder / name).write_bytes((model_folder / name).read_bytes())
    (folder / "normalizer.ckpt").write_bytes(bad.read_bytes())
    with pytest.raises(ValueError, match="normalizer.ckpt"):
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})
    assert not marker.exists()


def test_export_refuses_to_clobber_and_names_missing_files(run_folder, model_folder, tmp_path):
    mine = copy_folder(model_folder, tmp_path / "mine")  # the shared folder stays as it is
    with pytest.raises(FileExistsError, match="already holds an exported model"):
        export_model(run_folder, mine)
    assert export_model(run_folder, mine, overwrite=True) == mine
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an exported model folder"):
        export_model(run_folder, other)
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        export_model(tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        EmotionRecognizer.from_folder(tmp_path)


def copy_folder(model_folder, destination):
    shutil.copytree(model_folder, destination)
    return destination


def test_loading_a_model_folder_runs_no_code_from_it(model_folder, tmp_path, capsys):
    # A stranger's folder whose YAML and Python files would create a marker file if run.
    folder = copy_folder(model_folder, tmp_path / "stranger")
    marker = tmp_path / "code_ran"
    yaml_text = (folder / "hyperparams.yaml").read_text()
    (folder / "hyperparams.yaml").write_text(
        f"__payload: !apply:pathlib.Path.touch [!new:pathlib.Path [{str(marker)!r}]]\n" + yaml_text
    )
    (folder / "custom_interface.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    recognizer = EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})
    assert recognizer.labels == ["ang", "hap", "neu", "sad"]
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    assert cli_main(["predict", "--model", str(folder), str(wav)]) == 0
    assert cli_main(["info", str(folder)]) == 0
    capsys.readouterr()
    assert not marker.exists()


TAMPERED = [  # (field of model_info.json, its new value, the error's words)
    ("architecture.model.evil", "x", "unknown field architecture.model.evil"),
    ("architecture.model.hidden_size", "16", "architecture.model.hidden_size must be int"),
    ("architecture.model.hidden_size", 10**9, "hidden_size is 1000000000, outside"),
    ("architecture.model.bidirectional", 1, "bidirectional must be bool"),
    ("architecture.model.pooling", "os.system", "pooling is 'os.system', not one of"),
    ("architecture.features.trim_db", float("nan"), "trim_db is nan, outside"),
    ("architecture.extra", {}, "architecture must be an object with the keys"),
    ("labels", ["ang", "hap", "neu"], "3 labels but the model has 4 outputs"),
    ("labels", ["ang", "ang", "neu", "sad"], "labels are not distinct"),
    ("architecture", None, "exported by an older hnsd-sb"),
    ("architecture.model.hidden_size", 10**400, "hidden_size is 1000"),  # no float overflow
    ("architecture.model.n_static", 30, "n_static is 30 but the features give 26"),
    ("architecture.features.hop_length", 0.2, "hop_length is 0.2, outside [1, 100]"),
    ("format", 2, "written by a newer hnsd-sb (format 2"),
    ("labels", [1, 2, 3, 4], "labels must be non-empty strings"),
    ("labels", [], "labels must be a non-empty list"),
    ("validation", {"UA": "high"}, "validation must map score names to numbers"),
    ("epoch", "3", "epoch must be a non-negative integer or null"),
    ("exported_from", ["x"], "exported_from must be a string without control characters or null"),
    (
        "labels",
        ["ang", "hap", "\x1b[2J", "sad"],
        "labels must be non-empty strings without control",
    ),
    (
        "labels",
        ["ang", "hap", "\ud800", "sad"],
        "labels must be non-empty strings without control",
    ),
]


@pytest.mark.parametrize("field, value, message", TAMPERED)
def test_tampered_model_info_is_refused_naming_the_field(
    model_folder, tmp_path, capsys, field, value, message
):
    folder = copy_folder(model_folder, tmp_path / "tampered")
    info = json.loads((folder / "model_info.json").read_text())
    *parents, key = field.split(".")
    node = info
    for parent in parents:
        node = node[parent]
    node[key] = value
    (folder / "model_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})
    assert str(folder) in str(error.value)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000), 16000)
    assert cli_main(["predict", "--model", str(folder), str(wav)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert cli_main(["info", str(folder)]) == 2
    assert message in capsys.readouterr().err


def write_info(folder, edit):
    """Applies ``edit`` to the folder's parsed model_info.json and writes it back."""
    info = json.loads((folder / "model_info.json").read_text())
    edit(info)
    (folder / "model_info.json").write_text(json.dumps(info))


def test_an_oversized_architecture_is_refused_before_any_memory_is_taken(model_folder, tmp_path):
    folder = copy_folder(model_folder, tmp_path / "huge")
    big = {"hidden_size": 4096, "num_layers": 8, "bidirectional": True, "fc_size": 4096}
    write_info(folder, lambda info: info["architecture"]["model"].update(big))
    with pytest.raises(ValueError, match="architecture.model cannot be built: .* parameters, more"):
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})


def test_features_too_costly_per_second_are_refused(model_folder, tmp_path):
    folder = copy_folder(model_folder, tmp_path / "costly")
    costly = {"n_fft": 16384, "hop_length": 2}  # each in range, 200 times the recipe's STFT
    write_info(folder, lambda info: info["architecture"]["features"].update(costly))
    with pytest.raises(ValueError, match="4.1e\\+06 STFT values per second of audio"):
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})


def test_an_oversized_weights_file_is_not_read(model_folder, tmp_path):
    folder = copy_folder(model_folder, tmp_path / "padded")
    with open(folder / "model.ckpt", "ab") as f:
        f.truncate(64 << 20)
    with pytest.raises(ValueError, match=r"model.ckpt: unpacks to 67,108,864 bytes, more than the"):
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})


@pytest.mark.parametrize(
    "content, message",
    [
        ("[" * 100_000 + "]" * 100_000, "not a valid model information file"),
        ('{"labels": ["a", "b"], "epoch": ' + "9" * 5000 + "}", "not a valid model information"),
        (" " * (2 << 20), "too large for a model information file"),
        ("[1, 2]", "not a JSON object"),
    ],
    ids=["deep", "digits", "huge", "list"],
)
def test_malformed_model_info_is_a_clear_error(model_folder, tmp_path, capsys, content, message):
    folder = copy_folder(model_folder, tmp_path / "malformed")
    (folder / "model_info.json").write_text(content)
    assert cli_main(["info", str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(folder) in err and "Traceback" not in err


NORMALIZER_DAMAGE = [  # (change to the saved statistics, the error's words)
    (lambda s: s.update(speakers=s["speakers"] + ["extra"]), "speakers but count"),
    (lambda s: s.update(speakers=[1] * len(s["speakers"])), "speakers must be a list of strings"),
    (lambda s: s["count"].fill_(float("nan")), "must be finite, with positive frame counts"),
    (lambda s: s.update(sum=s["sum"][:, :3], sumsq=s["sumsq"][:, :3]), "statistics of 3 features"),
    (lambda s: s.update(count=[1, 2]), "must be float tensors"),
]


@pytest.mark.parametrize("damage, message", NORMALIZER_DAMAGE)
def test_damaged_normalizer_statistics_are_named(model_folder, tmp_path, damage, message):
    folder = copy_folder(model_folder, tmp_path / "damaged")
    state = torch.load(folder / "normalizer.ckpt", weights_only=True)
    assert state["speakers"]  # the export holds the training speakers
    damage(state)
    torch.save(state, folder / "normalizer.ckpt")
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})
    assert "normalizer.ckpt" in str(error.value)


def test_folder_without_architecture_or_yaml_says_to_export_again(model_folder, tmp_path):
    folder = copy_folder(model_folder, tmp_path / "bare")
    write_info(folder, lambda info: info.update(architecture=None))
    (folder / "hyperparams.yaml").unlink()
    with pytest.raises(ValueError, match="no architecture .* export the run again") as error:
        EmotionRecognizer.from_folder(folder)
    assert "runs that code" not in str(error.value)  # there is no yaml to run


def test_defaults_of_the_schema_are_the_classes_own():
    import inspect

    from hnsd_sb.features import StaticDynamicFeatures
    from hnsd_sb.model import HNSD
    from hnsd_sb.model_info import DEFAULTS

    for module, cls in (("features", StaticDynamicFeatures), ("model", HNSD)):
        signature = inspect.signature(cls).parameters
        assert {k: signature[k].default for k in DEFAULTS[module]} == DEFAULTS[module]


@pytest.mark.parametrize(
    "features, message",
    [
        ({"n_mels": 40}, "n_static is 26 but the features give 40"),  # model sizes left out
        ({"win_length": 1000}, "win_length 1000 ms is 16000 samples, more than n_fft 400"),
        ({"f_min": 9000, "f_max": 100}, "needs f_min < f_max <= sample_rate / 2"),
        ({"f_max": 12000}, "needs f_min < f_max <= sample_rate / 2"),
    ],
)
def test_fields_left_to_their_defaults_are_checked_too(model_folder, tmp_path, features, message):
    folder = copy_folder(model_folder, tmp_path / "inconsistent")

    def edit(info):
        info["architecture"]["features"] = features
        for key in ("n_static", "n_dynamic"):
            info["architecture"]["model"].pop(key, None)

    write_info(folder, edit)
    with pytest.raises(ValueError, match=re.escape(message)):
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})


def test_compressed_weights_are_sized_before_they_are_read(model_folder, tmp_path):
    import zipfile

    folder = copy_folder(model_folder, tmp_path / "zipbomb")
    state = torch.load(folder / "model.ckpt", weights_only=True)
    state["classifier.output.bias"] = torch.zeros(4 << 20)  # 16 MiB of zeros: deflates to KiB
    torch.save(state, tmp_path / "plain.ckpt")
    with (
        zipfile.ZipFile(tmp_path / "plain.ckpt") as src,
        zipfile.ZipFile(folder / "model.ckpt", "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry))
    assert (folder / "model.ckpt").stat().st_size < 1 << 20
    with pytest.raises(ValueError, match=r"model.ckpt: unpacks to 16,\d{3},\d{3} bytes, more than"):
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})


@pytest.mark.parametrize("name", ["model.ckpt", "normalizer.ckpt", "model_info.json", "README.md"])
def test_a_fifo_in_a_model_folder_does_not_block(model_folder, tmp_path, capsys, name):
    folder = copy_folder(model_folder, tmp_path / "fifo")
    (folder / name).unlink()
    os.mkfifo(folder / name)
    assert cli_main(["info", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder / name}: " in err and "not a regular file" in err


def test_unsafe_pickles_are_refused_without_advice_to_unpickle(model_folder, tmp_path):
    folder = copy_folder(model_folder, tmp_path / "pickled")

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"x": Payload()}, folder / "model.ckpt")
    with pytest.raises(ValueError, match="only a full unpickling, which can run code") as error:
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})
    assert "weights_only=False" not in str(error.value)


def test_non_finite_weights_and_overflowing_statistics_are_named(model_folder, tmp_path):
    folder = copy_folder(model_folder, tmp_path / "nan")
    state = torch.load(folder / "model.ckpt", weights_only=True)
    state["classifier.output.bias"][0] = float("nan")
    torch.save(state, folder / "model.ckpt")
    with pytest.raises(ValueError, match="model.ckpt: the weights hold NaN or Inf"):
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})
    folder = copy_folder(model_folder, tmp_path / "overflow")
    stats = torch.load(folder / "normalizer.ckpt", weights_only=True)
    stats["sum"][0] = 3e38
    torch.save(stats, folder / "normalizer.ckpt")
    with pytest.raises(ValueError, match="normalizer.ckpt: the statistics of speaker .* overflow"):
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})


def test_info_escapes_control_characters_of_the_card(model_folder, tmp_path, capsys):
    folder = copy_folder(model_folder, tmp_path / "escapes")
    (folder / "README.md").write_text("# card\n\x1b[2Jvalidation: UA 99.9 %\n")
    assert cli_main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2Jvalidation: UA 99.9 %" in out
    (folder / "README.md").write_bytes(b"caf\xe9")
    assert cli_main(["info", str(folder)]) == 2
    assert f"{folder / 'README.md'}: not a readable UTF-8 model card" in capsys.readouterr().err


def test_export_through_a_link_keeps_it_and_refuses_the_current_folder(
    run_folder, tmp_path, monkeypatch
):
    real = export_model(run_folder, tmp_path / "real")
    (real / "NOTES.md").write_text("mine")
    (tmp_path / "link").symlink_to(real)
    export_model(run_folder, tmp_path / "link", overwrite=True)
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link" / "model_info.json").is_file()
    assert (real / "NOTES.md").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # nothing left over
    monkeypatch.chdir(real)
    with pytest.raises(FileExistsError, match="is \\(or holds\\) the current folder"):
        export_model(run_folder, ".", overwrite=True)


def test_a_model_at_an_odd_sampling_rate_is_refused(model_folder, tmp_path):
    folder = copy_folder(model_folder, tmp_path / "odd_rate")
    write_info(folder, lambda info: info["architecture"]["features"].update(sample_rate=16001))
    with pytest.raises(ValueError, match="sample_rate is 16001, not one of"):
        EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})


def test_damaged_archives_and_proc_links_are_named(model_folder, tmp_path, capsys):
    import struct

    folder = copy_folder(model_folder, tmp_path / "damaged_zip")
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, 46, 0, 0)
    (folder / "model.ckpt").write_bytes(b"PK\x03\x04" + bytes(100) + end)
    assert cli_main(["info", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'model.ckpt'}: " in err and "Traceback" not in err
    folder = copy_folder(model_folder, tmp_path / "proc")
    (folder / "model_info.json").unlink()
    (folder / "model_info.json").symlink_to("/proc/self/status")
    assert cli_main(["info", str(folder)]) == 2
    assert f"{folder / 'model_info.json'}: not a regular file" in capsys.readouterr().err


def test_error_messages_show_escape_sequences_without_obeying_them(model_folder, tmp_path, capfd):
    folder = copy_folder(model_folder, tmp_path / "escapes_in_fields")
    write_info(folder, lambda info: info["architecture"]["model"].update({"\x1b[2Jevil": 1}))
    assert cli_main(["info", str(folder)]) == 2
    err = capfd.readouterr().err
    assert "\x1b" not in err and "\\x1b[2Jevil" in err


def test_export_names_unreadable_run_files(run_folder, tmp_path):
    run = Path(shutil.copytree(run_folder, tmp_path / "run"))
    checkpoint = next((run / "save").glob("CKPT+*"))
    (checkpoint / "CKPT.yaml").write_text("a: [")
    with pytest.raises(ValueError, match="a checkpoint's CKPT.yaml cannot be read"):
        export_model(run, tmp_path / "out")
    run = Path(shutil.copytree(run_folder, tmp_path / "run2"))
    (run / "save" / "label_encoder.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="label_encoder.txt: not a label encoder file"):
        export_model(run, tmp_path / "out")


def test_export_checks_the_yaml_route_too(run_folder, tmp_path, monkeypatch):
    """SpeechBrain users load hyperparams.yaml: an export whose yaml would not give the model
    is refused, and nothing is written."""
    import hnsd_sb.export as export

    render = export.render_hparams

    def broken(*args):
        return render(*args).replace("model: !new:hnsd_sb.HNSD", "model: !new:nope.X")

    monkeypatch.setattr(export, "render_hparams", broken)
    with pytest.raises(ValueError, match="hyperparams.yaml: the exported file does not load"):
        export_model(run_folder, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_export_records_only_hnsd_sb_classes(tmp_path):
    from hnsd_sb.export import architecture_of

    for path in ("hnsd_sb.evil.HNSD", "mypackage.HNSD"):
        with pytest.raises(ValueError, match=f"modules.model is {path}; a model folder can only"):
            architecture_of({"model": (path, {"n_classes": 2})}, {}, "x")
    for path in ("hnsd_sb.HNSD", "hnsd_sb.model.HNSD"):
        assert architecture_of({"model": (path, {"n_classes": 2})}, {}, "x")["model"]


def test_interrupted_overwrite_loses_none_of_the_users_files(run_folder, tmp_path, monkeypatch):
    import hnsd_sb.export as export

    folder = export_model(run_folder, tmp_path / "model")
    (folder / "NOTES.md").write_text("mine")
    real_replace = os.replace

    def fail_on(call):
        calls = []

        def replace(src, dst):
            calls.append(src)
            if len(calls) == call:
                raise OSError("simulated failure")
            real_replace(src, dst)

        return replace

    # The new folder cannot be moved into place: the previous export is back, unchanged.
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(export.os, "replace", fail_on(2))
    with pytest.raises(OSError, match="cannot move the new model into place.*nothing was changed"):
        export_model(run_folder, folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # The user's file cannot be moved over: the error says where it is, and it is there.
    monkeypatch.setattr(export.os, "replace", fail_on(3))
    with pytest.raises(OSError, match="some of your files stayed in") as error:
        export_model(run_folder, folder, overwrite=True)
    kept = Path(re.search(r"stayed in (\S+) \(", str(error.value)).group(1))
    assert (kept / "NOTES.md").read_text() == "mine"
    assert (folder / "model_info.json").is_file()  # the new export is in place
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["model"]


def test_folder_exported_before_model_info_gets_re_export_instructions(model_folder, tmp_path):
    folder = copy_folder(model_folder, tmp_path / "old")
    (folder / "model_info.json").unlink()
    with pytest.raises(ValueError, match="Export the run again with `hnsd export RUN_DIR"):
        EmotionRecognizer.from_folder(folder)
    assert cli_main(["info", str(folder)]) == 2


def test_export_is_atomic_on_a_full_disk(run_folder, model_folder, tmp_path, monkeypatch):
    import hnsd_sb.export as export

    def full_disk(obj, path, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(export.torch, "save", full_disk)
    with pytest.raises(OSError, match="no space left on the device.*nothing was written"):
        export_model(run_folder, tmp_path / "new_model")
    # A previous export is left as it was.
    before = {p.name: p.read_bytes() for p in model_folder.iterdir()}
    with pytest.raises(OSError, match="nothing was written"):
        export_model(run_folder, model_folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in model_folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial folder left
    assert not [p for p in model_folder.parent.iterdir() if p.name.startswith(".")]


def test_overwrite_keeps_the_users_own_files(run_folder, tmp_path, capsys):
    folder = export_model(run_folder, tmp_path / "model")
    (folder / "NOTES.md").write_text("mine")
    assert cli_main(["export", str(run_folder), str(folder)]) == 1
    assert "(pass --overwrite to replace it)" in capsys.readouterr().err
    export_model(run_folder, folder, overwrite=True)
    assert (folder / "NOTES.md").read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FOLDER_FILES, "NOTES.md"])


def vector_normalized_folder(folder, seed=0, **export):
    """A small model whose classifier reads its pooled vectors z-scored per speaker, with the
    statistics of speakers ``a`` and ``b``, exported to ``folder`` (``export``: more arguments
    of ``write_model_folder``); returns what it was made of (network, hook, features and
    normaliser, in memory) and the speakers' waveforms."""
    from hnsd_sb import HNSD, SpeakerNormalization, StaticDynamicFeatures
    from hnsd_sb.export import write_model_folder
    from hnsd_sb.normalization import PooledSpeakerNormalization
    from hnsd_sb.pipeline import accumulate_statistics, classify

    gen = torch.Generator().manual_seed(0)  # the same audio (and feature statistics) for all
    wavs = {s: [torch.randn(16000 + 3000 * i, generator=gen) * (1 + i) for i in range(3)]
            for s in "ab"}  # fmt: skip
    torch.manual_seed(seed)
    model = HNSD(hidden_size=8, fc_size=4, n_classes=2).eval()
    features, normalizer = StaticDynamicFeatures(), SpeakerNormalization()
    for speaker, recordings in wavs.items():
        for wav in recordings:
            accumulate_statistics(features, normalizer, wav[None], torch.ones(1), [speaker])
    norm = PooledSpeakerNormalization()
    norm.attach(model)
    with torch.no_grad(), norm.collecting():
        for speaker, recordings in wavs.items():
            for wav in recordings:
                with norm.for_speakers([speaker]):
                    classify(features, normalizer, model, wav[None], torch.ones(1), [speaker])
    spec = {"model": ("hnsd_sb.HNSD", {"hidden_size": 8, "fc_size": 4, "n_classes": 2})}
    write_model_folder(
        folder, ["neg", "pos"], model.state_dict(), normalizer.state(), modules=spec,
        vector_state=norm.statistics.state(), **export,
    )  # fmt: skip
    return (model, norm, features, normalizer), wavs


def test_a_folder_z_scores_the_pooled_vectors_as_the_model_it_came_from(tmp_path):
    """A model trained with ``vector_normalization`` exports the pooled vectors' statistics
    (``vector_normalizer.ckpt``); its folder classifies as the model in memory did, for known
    speakers (their statistics), for unknown ones and None (all speakers' statistics), by both
    of SpeechBrain's routes and with int8 weights (ONNX: the next test)."""
    from hnsd_sb.pipeline import classify
    from hnsd_sb.weights import VECTOR_NORMALIZER_FILE

    folder = tmp_path / "model"
    (model, norm, features, normalizer), wavs = vector_normalized_folder(folder)
    assert (folder / VECTOR_NORMALIZER_FILE).is_file()
    info = json.loads((folder / "model_info.json").read_text())
    assert info["architecture"]["vector_normalizer"] == {"unseen": "global"}
    assert "pooled vector z-scored with its speaker's" in (folder / "README.md").read_text()
    recognizer = EmotionRecognizer.from_folder(folder, run_opts={"device": "cpu"})
    from_yaml = EmotionRecognizer.from_hparams(source=str(folder), savedir=str(folder))
    batch = torch.stack([wavs["a"][0][:16000], wavs["b"][1][:16000]])
    for speakers in (["a", "b"], ["b", "a"], ["nobody", "a"], None):
        with torch.no_grad(), norm.for_speakers(speakers or [None, None]):
            want, _, _ = classify(features, normalizer, model, batch, torch.ones(2), speakers)
        for loaded in (recognizer, from_yaml):
            got, _, _ = loaded.infer_batch(batch, speakers=speakers)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    int8 = EmotionRecognizer.from_folder(folder, backend="torch-int8")
    assert int8.mods.model.classifier._forward_pre_hooks  # the z-score, on the int8 network
    for speakers in (["a", "b"], ["nobody", "nobody"]):
        got = int8.classify_batch(batch, speakers=speakers)[0]
        want = recognizer.classify_batch(batch, speakers=speakers)[0]
        torch.testing.assert_close(got, want, rtol=0, atol=0.02)
    known = recognizer.classify_batch(batch, speakers=["a", "b"])[0]
    assert not torch.allclose(known, want, atol=1e-3)  # the speakers' statistics matter
    # a plain export over it leaves no statistics of the vectors behind
    from hnsd_sb.export import write_model_folder

    vector_bytes = (folder / VECTOR_NORMALIZER_FILE).read_bytes()
    spec = {"model": ("hnsd_sb.HNSD", {"hidden_size": 8, "fc_size": 4, "n_classes": 2})}
    write_model_folder(folder, ["neg", "pos"], model.state_dict(), modules=spec, overwrite=True)
    assert not (folder / VECTOR_NORMALIZER_FILE).exists()
    assert EmotionRecognizer.from_folder(folder).vector_norms == []
    # statistics copied in by hand, which the architecture would ignore, are refused
    (folder / VECTOR_NORMALIZER_FILE).write_bytes(vector_bytes)
    with pytest.raises(ValueError, match=f"{VECTOR_NORMALIZER_FILE}: .*no vector_normalizer"):
        EmotionRecognizer.from_folder(folder)


def test_an_onnx_graph_z_scores_the_pooled_vectors_as_pytorch_does(tmp_path):
    """``--format onnx`` of a model that z-scores its pooled vectors per speaker: the graph
    takes each utterance's moments of the vectors (the statistics stay in PyTorch) and returns
    the vectors, so the folder classifies alike on every backend for known speakers, unknown
    ones and None, and enrolling a speaker gathers the same statistics through the graph."""
    pytest.importorskip("onnxruntime")
    from hnsd_sb.backends import OnnxNetwork

    folder = tmp_path / "model"
    _, wavs = vector_normalized_folder(folder, onnx=True, int8=True)
    assert [i.name for i in OnnxNetwork(folder / "model.onnx").session.get_inputs()][3:] == [
        "vector_mean", "vector_std",
    ]  # fmt: skip
    plain = EmotionRecognizer.from_folder(folder)
    batch = torch.stack([wavs["a"][0][:16000], wavs["b"][1][:16000]])
    onnx_recognizers = {}
    for backend, atol in (("onnx", 1e-4), ("onnx-int8", 0.1)):
        onnx_recognizers[backend] = EmotionRecognizer.from_folder(folder, backend=backend)
        for speakers in (["a", "b"], ["b", "a"], ["nobody", "a"], None):
            want = plain.infer_batch(batch, speakers=speakers)[0]
            got = onnx_recognizers[backend].infer_batch(batch, speakers=speakers)[0]
            torch.testing.assert_close(got, want, rtol=0, atol=atol)
    gen = torch.Generator().manual_seed(5)
    recordings = [torch.randn(16000 * 20, generator=gen), torch.randn(16000 * 16, generator=gen)]
    for recognizer in (plain, onnx_recognizers["onnx"]):
        recognizer.enroll("c", recordings)  # 9 windows of about 4 s
    for want, got in zip(
        plain.vector_norms[0].statistics.speaker_moments("c"),
        onnx_recognizers["onnx"].vector_norms[0].statistics.speaker_moments("c"),
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    want = plain.infer_batch(batch, speakers=["c", "c"])[0]
    got = onnx_recognizers["onnx"].infer_batch(batch, speakers=["c", "c"])[0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_enrolment_gathers_a_speakers_vector_statistics_from_all_its_recordings(tmp_path, caplog):
    """``enroll`` on a model that z-scores its pooled vectors: the speaker's statistics of the
    vectors are those of all its enrolled recordings' windows (about 4 s each), each
    normalised with the speaker's feature statistics as they are after the last one (so
    enrolling in two calls is enrolling at once). With at least 8 windows they replace what
    the model had for the speaker; with fewer, a warning, and the speaker keeps what it had
    (a trained speaker's; none: all speakers'). Other speakers' statistics are left alone."""
    from hnsd_sb import HNSD
    from hnsd_sb.normalization import PooledSpeakerNormalization
    from hnsd_sb.pipeline import classify

    folder = tmp_path / "model"
    (model, _, features, _), wavs = vector_normalized_folder(folder)
    gen = torch.Generator().manual_seed(1)
    recordings = [torch.randn(16000 + 500 * i, generator=gen) * 0.5 for i in range(9)]
    once = EmotionRecognizer.from_folder(folder)
    before = once.vector_norms[0].statistics.state()
    once.enroll("c", recordings)
    twice = EmotionRecognizer.from_folder(folder)
    with caplog.at_level("WARNING"):
        twice.enroll("c", recordings[:4])  # 4 windows: too few
    assert "4 enrolment windows" in caplog.text and "all speakers'" in caplog.text
    assert "With fewer than 5, enrolling a new speaker scored below not enrolling" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # a trained speaker keeps its own: no such advice
        EmotionRecognizer.from_folder(folder).enroll("a", recordings[:2])
    assert "its trained statistics" in caplog.text and "With fewer than" not in caplog.text
    assert "c" not in twice.vector_norms[0].statistics.speakers
    twice.enroll("c", recordings[4:])
    got = [r.vector_norms[0].statistics.state() for r in (once, twice)]
    # by hand: the folder's feature statistics plus all nine recordings, then the vectors
    network = HNSD(hidden_size=8, fc_size=4, n_classes=2).eval()
    network.load_state_dict(model.state_dict())
    hand = PooledSpeakerNormalization()
    hand.attach(network)
    with torch.no_grad(), hand.collecting():
        for wav in recordings:
            with hand.for_speakers(["c"]):
                classify(features, once.mods.normalizer, network, wav[None], torch.ones(1), ["c"])
    want = hand.statistics.state()
    for state in got:
        assert state["speakers"] == ["a", "b", "c"] and state["count"][2] == 9
        torch.testing.assert_close(state["sum"][2], want["sum"][0], rtol=1e-5, atol=1e-5)
        for row in (0, 1):  # the trained speakers' statistics are untouched
            torch.testing.assert_close(state["sum"][row], before["sum"][row])
    # a long recording gives a vector per window; too few keep a trained speaker's statistics
    once.enroll("d", [torch.randn(16000 * 40, generator=gen)])
    assert once.vector_norms[0].statistics.state()["count"][3] == 10
    with caplog.at_level("WARNING"):
        once.enroll("a", recordings[:2])
    assert "keep its trained statistics" in caplog.text
    torch.testing.assert_close(once.vector_norms[0].statistics.state()["sum"][0], before["sum"][0])


def test_an_ensemble_keeps_each_members_vector_statistics(tmp_path):
    """``from_folders`` of models that z-score their pooled vectors: each member z-scores with
    its own statistics (they depend on its weights), the ensemble averages the members'
    probabilities as for plain models, and enrolment reaches every member."""
    folders = [tmp_path / "m1", tmp_path / "m2"]
    _, wavs = vector_normalized_folder(folders[0], seed=0)
    vector_normalized_folder(folders[1], seed=1)
    both = EmotionRecognizer.from_folders(folders)
    alone = [EmotionRecognizer.from_folder(f) for f in folders]
    assert len(both.vector_norms) == 2
    batch = torch.stack([wavs["a"][0][:16000], wavs["b"][0][:16000]])
    for speakers in (["a", "b"], None):
        mean = sum(r.classify_batch(batch, speakers=speakers)[0] for r in alone) / 2
        torch.testing.assert_close(both.classify_batch(batch, speakers=speakers)[0], mean)
    both.enroll("c", wavs["b"])
    for r in alone:
        r.enroll("c", wavs["b"])
    mean = sum(r.classify_batch(batch, speakers="c")[0] for r in alone) / 2
    torch.testing.assert_close(both.classify_batch(batch, speakers="c")[0], mean)
