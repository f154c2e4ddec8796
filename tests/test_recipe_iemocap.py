"""End-to-end tests of the IEMOCAP recipe on generated IEMOCAP-format corpora."""

import csv
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from hnsd_sb.report import split_file_names
from hnsd_sb.synthetic import make_synthetic_iemocap

pytestmark = pytest.mark.slow  # end-to-end runs of the recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "IEMOCAP", "hnsd")
TINY = ["--lstm_size=16", "--fc_size=8", "--num_workers=0"]


def run(script, *args, cwd=RECIPE):
    """Runs a recipe script in a subprocess on one thread; fails the test with its output."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, script, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release"
    make_synthetic_iemocap(root, utterances_per_emotion=2, dropped_per_speaker=1)
    return root


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "fold2"
    log = run(
        "train.py",
        "hparams/hnsd.yaml",
        f"--data_folder={corpus}",
        f"--output_folder={out}",
        "--fold=2",
        "--number_of_epochs=2",
        *TINY,
    )
    return out, log


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_training_logs_wa_ua_per_epoch_and_keeps_best_checkpoint(trained):
    out, _ = trained
    lines = open(out / "train_log.txt", encoding="utf-8").read().splitlines()
    epochs = [line for line in lines if line.startswith("epoch:")]
    assert len(epochs) == 2
    for line in epochs:
        for field in ("train loss", "train WA", "train UA", "valid WA", "valid UA", "padding"):
            assert field in line
    assert "test WA" in lines[-1] and "test UA" in lines[-1] and "recall" in lines[-1]
    ckpts = glob.glob(str(out / "save" / "CKPT+*"))
    assert len(ckpts) == 1  # keep_checkpoints: 1, the best by validation UA
    for name in ("model.ckpt", "normalizer.ckpt", "optimizer.ckpt", "counter.ckpt"):
        assert os.path.exists(os.path.join(ckpts[0], name))
    meta = open(os.path.join(ckpts[0], "CKPT.yaml"), encoding="utf-8").read()
    assert "UA:" in meta


def split_outputs(out, split):
    """What a run wrote for a split it scored: its results, its manifest's rows, and one
    prediction for each of them (checked here)."""
    names = split_file_names(split)
    results = json.load(open(out / names["results"], encoding="utf-8"))
    rows, predictions = read_csv(out / f"{split}.csv"), read_csv(out / names["predictions"])
    assert sorted(r["ID"] for r in predictions) == sorted(r["ID"] for r in rows)
    return results, rows, predictions


def test_test_stage_writes_consistent_results(trained):
    out, _ = trained
    results, test_rows, predictions = split_outputs(out, "test")
    assert results["labels"] == ["ang", "hap", "neu", "sad"]
    confusion = results["confusion"]
    assert sum(map(sum, confusion)) == len(test_rows) == results["n"]
    correct = sum(1 for r in predictions if r["prediction"] == r["target"])
    assert results["WA"] == pytest.approx(correct / len(test_rows))
    recalls = [confusion[i][i] / sum(confusion[i]) for i in range(4)]
    assert results["UA"] == pytest.approx(sum(recalls) / 4)
    assert os.path.getsize(out / "confusion.png") > 1000
    logged = re.search(r"test WA: ([\d.]+), test UA: ([\d.]+)", open(out / "train_log.txt").read())
    assert float(logged.group(1)) == pytest.approx(100 * results["WA"], abs=0.01)
    assert float(logged.group(2)) == pytest.approx(100 * results["UA"], abs=0.01)


def test_chosen_checkpoint_writes_its_validation_figures_beside_the_test_ones(trained):
    out, _ = trained
    results, valid_rows, _ = split_outputs(out, "valid")
    assert sum(map(sum, results["confusion"])) == len(valid_rows) == results["n"]
    assert os.path.getsize(out / "valid_confusion.png") > 1000
    # the kept checkpoint is the epoch with the best validation UA: scored again, it gives it
    lines = open(out / "train_log.txt", encoding="utf-8").read().splitlines()
    epochs = [
        float(re.search(r"valid UA: ([\d.]+)", line)[1])
        for line in lines
        if line.startswith("epoch:")
    ]
    assert 100 * results["UA"] == pytest.approx(max(epochs), abs=0.01)
    loaded = [line for line in lines if line.startswith("Epoch loaded") and "valid UA" in line]
    assert len(loaded) == 1 and "test" not in loaded[0]


def test_fold_holds_out_its_session_and_validates_on_training_sessions(trained):
    out, _ = trained
    speakers = {s: {r["spk_id"] for r in read_csv(out / f"{s}.csv")} for s in ("train", "valid")}
    test = {r["spk_id"] for r in read_csv(out / "test.csv")}
    assert test == {"Ses02F", "Ses02M"}
    assert not (speakers["train"] | speakers["valid"]) & test
    assert not speakers["train"] & speakers["valid"]


def test_rerun_of_a_finished_run_skips_prep_and_training(trained, corpus):
    out, _ = trained
    before = open(out / "train_log.txt", encoding="utf-8").read().count("epoch:")
    log = run(
        "train.py",
        "hparams/hnsd.yaml",
        f"--data_folder={corpus}",
        f"--output_folder={out}",
        "--fold=2",
        "--number_of_epochs=2",
        *TINY,
    )
    assert "Loading a checkpoint" in log
    assert open(out / "train_log.txt", encoding="utf-8").read().count("epoch:") == before


def test_cross_validation_driver_writes_mean_and_std(corpus, tmp_path):
    log = run(
        "cross_validate.py",
        "hparams/hnsd.yaml",
        f"--data_folder={corpus}",
        f"--cv_folder={tmp_path}",
        "--folds",
        "1",
        "3",
        "--number_of_epochs=1",
        *TINY,
    )
    report = open(tmp_path / "cv_results.md", encoding="utf-8").read()
    assert "mean ± std" in report and "mean ± std" in log
    folds = [json.load(open(tmp_path / f"fold{k}" / "test_results.json")) for k in (1, 3)]
    summed = [[sum(f["confusion"][i][j] for f in folds) for j in range(4)] for i in range(4)]
    for i, row in enumerate(summed):
        assert re.search(
            r"\| \*\*" + folds[0]["labels"][i] + r"\*\* \| " + r" \| ".join(map(str, row)), report
        )
    assert (tmp_path / "confusion_sum.png").exists()


def load_cross_validate():
    """The recipe's ``cross_validate.py`` as a module (a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "hnsd_cross_validate", os.path.join(RECIPE, "cross_validate.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_report_written_later_gives_the_arguments_its_folds_ran_with(tmp_path):
    """A ``--report_only`` run (or one with other arguments) must not relabel the folds."""
    import doctest

    cross_validate = load_cross_validate()
    assert doctest.testmod(cross_validate).failed == 0

    def write_fold(k, seed):
        folder = tmp_path / f"fold{k}"
        folder.mkdir(exist_ok=True)
        command = (
            f"python /elsewhere/train.py hparams/hnsd.yaml --fold={k} --output_folder={folder} "
            f"--seed={seed} '--wav_augmentations=[!ref <speed_perturb>]'"
        )
        results = {"labels": ["ang", "hap"], "confusion": [[2, 0], [1, 1]], "command": command}
        with open(folder / "test_results.json", "w", encoding="utf-8") as f:
            json.dump(results, f)

    def report():
        cross_validate.main(
            ["hparams/hnsd.yaml", f"--cv_folder={tmp_path}", "--folds", "1", "2", "3"]
            + ["--report_only", "--seed=1"]
        )
        return open(tmp_path / "cv_results.md", encoding="utf-8").read()

    write_fold(1, 7)
    write_fold(2, 7)
    text = report()
    assert (
        "Arguments given to train.py: `--seed=7 '--wav_augmentations=[!ref <speed_perturb>]'`"
        in text
    )
    assert "--seed=1" not in text and "Not finished: fold(s) 3" in text
    write_fold(2, 8)
    text = report()
    assert "per fold:" in text and "- fold 2: `--seed=8 " in text and "- fold 1: `--seed=7 " in text


def test_cross_validation_runs_every_fold_of_the_corpus_by_default():
    """Without ``--folds`` the driver runs all folds: RAVDESS has 6, not IEMOCAP's 5."""
    cross_validate = load_cross_validate()

    def folds(recipe, hparams, *args):
        path = os.path.join(ROOT, "recipes", recipe, "hnsd", "hparams", hparams)
        return cross_validate.parse_args([path, *args])[0].folds

    assert (
        folds("RAVDESS", "hnsd.yaml")
        == folds("RAVDESS", "hnsd_improved.yaml")
        == [1, 2, 3, 4, 5, 6]
    )
    assert folds("RAVDESS", "hnsd.yaml", "--n_folds=3") == [1, 2, 3]
    assert folds("IEMOCAP", "hnsd.yaml") == [1, 2, 3, 4, 5]
    assert folds("IEMOCAP", "hnsd_improved.yaml", "--protocol=speaker") == list(range(1, 11))
    assert folds("IEMOCAP", "hnsd.yaml", "--folds", "2", "4") == [2, 4]


def test_wrong_number_of_classes_is_a_clear_error(corpus, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "hparams/hnsd.yaml",
            f"--data_folder={corpus}",
            f"--output_folder={tmp_path}",
            "--n_classes=5",
            *TINY,
        ],
        cwd=RECIPE,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "n_classes is 5" in output and f"{tmp_path}/train.csv" in output


# Brain run options the hparams file may set (sb.Brain reads them), as SpeechBrain's own check
# allows.
RUN_OPTIONS = {"ckpt_interval_minutes", "ckpt_interval_steps", "max_grad_norm", "precision"}


def test_every_hparams_key_is_used():
    """SpeechBrain's recipe rule: a top-level key is used by the script or by a !ref."""
    for yaml_file in glob.glob(os.path.join(ROOT, "recipes", "*", "hnsd", "hparams", "*.yaml")):
        recipe = os.path.dirname(os.path.dirname(yaml_file))
        code = "".join(open(p).read() for p in glob.glob(os.path.join(recipe, "*.py")))
        text = open(yaml_file, encoding="utf-8").read()
        keys = re.findall(r"^([A-Za-z]\w*):", text, re.M)  # __keys are run-time hooks
        for key in set(keys) - RUN_OPTIONS:
            used_in_yaml = re.search(rf"<{key}[>\[.]", text)
            used_in_code = re.search(
                rf"(\[[\"']{key}[\"']\]|\.{key}\b|\.get\([\"']{key}[\"']"
                rf"|getattr\([\w.]+, [\"']{key}[\"'])",
                code,
            )
            assert used_in_yaml or used_in_code, f"{yaml_file}: {key} is never used"


def test_every_hparams_file_takes_the_manifest_switches():
    """The README's ``--skip_bad_rows`` and ``--validate_manifests`` overrides work with every
    recipe's hparams file (hyperpyyaml refuses an override of a key the file lacks)."""
    files = glob.glob(os.path.join(ROOT, "recipes", "*", "hnsd", "hparams", "*.yaml"))
    assert len(files) >= 7
    for yaml_file in files:
        text = open(yaml_file, encoding="utf-8").read()
        for key, default in (("validate_manifests", "True"), ("skip_bad_rows", "False")):
            assert re.search(rf"^{key}: {default}\b", text, re.M), f"{yaml_file}: no {key}"


def test_every_hparams_file_sets_the_batch_with_one_override():
    """``--max_batch_length=N`` sets the training batch of every recipe's hparams file and keeps
    the sampler's other settings, its seed included (overriding ``dynamic_batch_sampler`` as a
    whole would drop them)."""
    from hyperpyyaml import resolve_references
    from ruamel.yaml import YAML

    files = glob.glob(os.path.join(ROOT, "recipes", "*", "hnsd", "hparams", "*.yaml"))
    assert len(files) >= 7
    for yaml_file in files:
        text = open(yaml_file, encoding="utf-8").read()
        overrides = {key: "unused" for key in re.findall(r"^(\w+): !PLACEHOLDER", text, re.M)}
        overrides.update(max_batch_length=7, seed=5)
        hparams = YAML(typ="rt").load(resolve_references(text, overrides).getvalue())
        sampler = dict(hparams["dynamic_batch_sampler"])
        assert sampler["max_batch_length"] == 7, yaml_file
        assert sampler["seed"] == 5 and sampler["num_buckets"] >= 40, yaml_file


def improved_brain(wav_augment=False, **overrides):
    """The recipe's ``EmotionBrain`` on a small ``hnsd_improved.yaml`` model with ``overrides``
    and the recipe's optimizer class, without the waveform augmentation unless ``wav_augment``
    (so only what a test switches on is random) and without ``vector_normalization`` unless
    asked (its passes need the recipe's datasets)."""
    import importlib.util

    from hyperpyyaml import load_hyperpyyaml

    spec = importlib.util.spec_from_file_location("hnsd_train", os.path.join(RECIPE, "train.py"))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    with open(os.path.join(RECIPE, "hparams", "hnsd_improved.yaml"), encoding="utf-8") as f:
        overrides = {"data_folder": "unused", "lstm_size": 16, "fc_size": 8,
                     "vector_normalization": False, **overrides}  # fmt: skip
        hparams = load_hyperpyyaml(f, overrides)
    if not wav_augment:
        del hparams["wav_augment"]
    return train.EmotionBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu"},
    )


def noise_batch():
    """A batch of four 1 s noise waveforms of one speaker, the same every call."""
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    gen = torch.Generator().manual_seed(0)
    return PaddedBatch(
        [{"id": str(i), "sig": torch.randn(16000, generator=gen), "spk_id": "s"} for i in range(4)]
    )


def test_feature_masking_applies_in_training_only():
    """``time_masks`` (hnsd_improved.yaml): whole normalised frames are zeroed in training, the
    rest of each frame left alone; evaluation features are never masked."""
    import speechbrain as sb
    import torch

    brain = improved_brain(time_masks=3)
    batch = noise_batch()
    with torch.no_grad():
        clean = torch.cat(brain.compute_features(batch, sb.Stage.VALID)[:2], -1)
        assert not (clean == 0).all(-1).any()
        masked_batches = 0
        for seed in range(8):
            torch.manual_seed(seed)
            masked = torch.cat(brain.compute_features(batch, sb.Stage.TRAIN)[:2], -1)
            dropped = (masked == 0).all(-1)  # (batch, frames)
            assert torch.equal(masked[~dropped], clean[~dropped])
            masked_batches += bool(dropped.any())
            assert (dropped.sum(1) <= 3 * 19).all()  # at most 3 spans of 5-19 frames
        assert masked_batches >= 4  # 0-3 spans per batch: most batches lose some frames
        assert torch.equal(torch.cat(brain.compute_features(batch, sb.Stage.TEST)[:2], -1), clean)


def test_waveform_augmentation_switches_off_from_the_command_line():
    """``--wav_augment=null`` trains on the clean waveforms (the loss too: no replicated labels)
    ``--speeds=[100]`` leaves the speed alone and ``--wav_augmentations`` picks the augmentations;
    by default every training batch is speed-perturbed, at one speed drawn per batch."""
    import importlib.util

    import speechbrain as sb
    import torch
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.dataio.batch import PaddedBatch

    spec = importlib.util.spec_from_file_location("hnsd_train", os.path.join(RECIPE, "train.py"))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    gen = torch.Generator().manual_seed(0)
    batch = PaddedBatch(
        [
            {
                "id": str(i),
                "sig": torch.randn(16000, generator=gen),
                "spk_id": "s",
                "emo_encoded": torch.tensor([i % 2]),
            }
            for i in range(4)
        ]
    )

    def brain(overrides=""):  # yaml text, as SpeechBrain makes of --key=value arguments
        path = os.path.join(RECIPE, "hparams", "hnsd_improved.yaml")
        with open(path, encoding="utf-8") as f:
            sizes = "data_folder: unused\nlstm_size: 16\nfc_size: 8\n"
            sizes += "vector_normalization: False\n"  # its passes need the recipe's datasets
            hparams = load_hyperpyyaml(f, sizes + overrides)
        return hparams, train.EmotionBrain(
            modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"}
        )

    hparams, plain = brain("wav_augment: null")
    assert hparams["wav_augment"] is None
    with torch.no_grad():
        clean = torch.cat(plain.compute_features(batch, sb.Stage.VALID)[:2], -1)
        for seed in range(3):
            torch.manual_seed(seed)
            trained_on = torch.cat(plain.compute_features(batch, sb.Stage.TRAIN)[:2], -1)
            assert torch.equal(trained_on, clean)
        plain.label_encoder = sb.dataio.encoder.CategoricalEncoder()
        plain.label_encoder.update_from_iterable(["neu", "ang"])
        plain.on_stage_start(sb.Stage.TRAIN)
        loss = plain.compute_objectives(
            plain.compute_forward(batch, sb.Stage.TRAIN), batch, sb.Stage.TRAIN
        )
        assert torch.isfinite(loss)

        hparams, augmented = brain()
        assert list(hparams["wav_augment"].augmentations.values()) == [hparams["speed_perturb"]]
        frames = set()
        for seed in range(10):
            torch.manual_seed(seed)
            trained_on = torch.cat(augmented.compute_features(batch, sb.Stage.TRAIN)[:2], -1)
            frames.add(trained_on.shape[1])
            if trained_on.shape == clean.shape:  # drawn at 100 %: untouched
                assert torch.equal(trained_on, clean)
        # one speed per batch, all three drawn: at s % the second lasts 100/s s (10 ms frames)
        assert frames == {16000 * 100 // s // 160 + 1 for s in (90, 100, 110)} == {112, 101, 91}

    hparams, _ = brain("speeds: [100]")
    assert hparams["speed_perturb"].speeds == [100]
    wavs = torch.randn(2, 16000)
    assert torch.equal(hparams["speed_perturb"](wavs), wavs)
    # an augmentation added from the command line, beside the speed perturbation (README)
    added = "!new:speechbrain.augment.time_domain.DropChunk"
    hparams, _ = brain(f"wav_augmentations: [!ref <speed_perturb>, {added} ]")
    picked = list(hparams["wav_augment"].augmentations.values())
    assert picked[0] is hparams["speed_perturb"] and type(picked[1]).__name__ == "DropChunk"


TOY_FUSION = '''"""A fusion of one's own: the mean of the two streams' frames (no weights)."""

import torch


class MeanFusion(torch.nn.Module):
    """Averages the static and dynamic encoders' frames (they must have one size)."""

    def __init__(self, static_size, dynamic_size):
        super().__init__()
        assert static_size == dynamic_size
        self.out_size = static_size

    def forward(self, static, dynamic):
        return (static + dynamic) / 2
'''


def test_a_new_fusion_is_one_class_and_one_yaml(corpus, tmp_path):
    """What a newcomer writes to try a fusion of their own: a class in a file of theirs and a
    copy of the hparams file whose fusion entry names it. Training, validation and test run
    as usual; `hnsd export` then says a model folder cannot hold the part."""
    (tmp_path / "my_fusion.py").write_text(TOY_FUSION)
    text = open(os.path.join(RECIPE, "hparams", "hnsd.yaml"), encoding="utf-8").read()
    gmu = "fusion: !name:hnsd_sb.GatedMultiFeatureUnit\n    out_size: !ref <lstm_size>\n"
    assert gmu in text
    (tmp_path / "mean_fusion.yaml").write_text(
        text.replace(gmu, "fusion: !name:my_fusion.MeanFusion\n")
    )
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "train.py", str(tmp_path / "mean_fusion.yaml"), f"--data_folder={corpus}",
         f"--output_folder={out}", "--number_of_epochs=1", *TINY],
        cwd=RECIPE, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test UA" in (out / "train_log.txt").read_text()
    state = json.loads((out / "test_results.json").read_text())
    assert 0 <= state["UA"] <= 1
    proc = subprocess.run(
        [sys.executable, "-m", "hnsd_sb.cli", "export", str(out), str(tmp_path / "model")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "modules.model.fusion is my_fusion.MeanFusion" in proc.stderr
    assert "hnsd_sb's own parts" in proc.stderr


def test_band_masking_drops_the_same_bands_from_every_stream():
    """``freq_masks`` (hnsd_improved.yaml): in training, whole Mel bands are zeroed in the static
    stream and in both of its deltas alike, the other bands left alone; evaluation features are
    never masked."""
    import speechbrain as sb
    import torch

    brain = improved_brain(freq_masks=2)
    batch = noise_batch()
    with torch.no_grad():
        clean = torch.cat(brain.compute_features(batch, sb.Stage.VALID)[:2], -1)
        masked_batches = 0
        for seed in range(16):
            torch.manual_seed(seed)
            masked = torch.cat(brain.compute_features(batch, sb.Stage.TRAIN)[:2], -1)
            dropped = (masked == 0).all(1)  # (batch, 78): columns zero in every frame
            blocks = dropped.view(4, 3, 26)
            assert torch.equal(blocks[:, 0], blocks[:, 1])
            assert torch.equal(blocks[:, 0], blocks[:, 2])
            assert torch.equal(masked[:, :, ~dropped.any(0)], clean[:, :, ~dropped.any(0)])
            assert (blocks[:, 0].sum(1) <= 2 * 6).all()  # at most 2 spans of 2-6 bands
            masked_batches += bool(dropped.any())
        assert masked_batches >= 7  # 0-2 masks per batch: about two batches in three
        assert torch.equal(torch.cat(brain.compute_features(batch, sb.Stage.TEST)[:2], -1), clean)


def test_band_masking_off_draws_no_random_number():
    """With ``freq_masks: 0`` (the default) the masking draws nothing from torch's generator,
    so runs with it off repeat the runs from before it existed, epoch for epoch."""
    import torch

    from hnsd_sb.augment import BandDrop

    feats = torch.randn(2, 5, 78)
    state = torch.get_rng_state()
    assert BandDrop(drop_count_high=0)(feats) is feats
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="n_bands=26"):
        BandDrop(drop_count_high=1)(torch.zeros(1, 5, 30))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_label_smoothing_in_training_loss_only(smoothing):
    """``label_smoothing`` (hnsd_improved.yaml): the training loss is the class-weighted
    cross-entropy against targets with that share spread evenly over the emotions (worked out
    here by hand); validation loss stays the plain weighted likelihood, and 0 is exactly it."""
    import speechbrain as sb
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    brain = improved_brain(label_smoothing=smoothing)
    brain.class_weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
    targets = [0, 2, 3, 3, 1]
    batch = PaddedBatch(
        [{"id": str(i), "emo_encoded": torch.tensor([t])} for i, t in enumerate(targets)]
    )
    log_probs = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    target = torch.tensor(targets)
    w = brain.class_weights
    smooth = (1 - smoothing) * torch.nn.functional.one_hot(target, 4) + smoothing / 4
    # torch's weighted smoothing: each class term carries its own weight, the sum is
    # normalised by the weights of the true classes
    expected = -(smooth * w * log_probs).sum() / w[target].sum()
    plain = torch.nn.functional.nll_loss(log_probs, target, weight=w)
    lens = torch.ones(5)
    for stage, want in [(sb.Stage.TRAIN, expected), (sb.Stage.VALID, plain)]:
        brain.metrics = brain.hparams.error_stats(label_names=["a", "b", "c", "d"])
        brain.padded_frames = [0.0, 0.0]
        loss = brain.compute_objectives((log_probs, lens), batch, stage)
        assert torch.allclose(loss, want, atol=1e-6), (stage, loss, want)
    if smoothing == 0:
        brain.metrics = brain.hparams.error_stats(label_names=["a", "b", "c", "d"])
        assert torch.equal(
            brain.compute_objectives((log_probs, lens), batch, sb.Stage.TRAIN), plain
        )
    else:
        assert not torch.allclose(expected, plain, atol=1e-3)


def test_mixup_mixes_training_features_and_losses_alike():
    """``mixup_alpha`` (hnsd_improved.yaml): in training each utterance's normalised features
    are mixed with its partner's, and the loss is the same mixture of the two labels'
    class-weighted losses; validation features and losses are never mixed."""
    import speechbrain as sb
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    brain = improved_brain(mixup_alpha=0.4)
    brain.class_weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
    gen = torch.Generator().manual_seed(0)
    batch = PaddedBatch(  # of different lengths: a mixture covers both utterances whole
        [
            {"id": str(i), "sig": torch.randn(n, generator=gen), "spk_id": "s"}
            for i, n in enumerate((16000, 12000, 9000, 16000))
        ]
    )
    targets = torch.tensor([0, 2, 3, 1])
    labels = PaddedBatch([{"id": str(i), "emo_encoded": t.view(1)} for i, t in enumerate(targets)])
    log_probs = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    nll = torch.nn.functional.nll_loss
    w, lens = brain.class_weights, torch.ones(4)
    with torch.no_grad():
        *streams, clean_lens = brain.compute_features(batch, sb.Stage.VALID)
        clean = torch.cat(streams, -1)
        mixed_batches = 0
        for seed in range(6):
            torch.manual_seed(seed)
            *streams, lens_out = brain.compute_features(batch, sb.Stage.TRAIN)
            mixed = torch.cat(streams, -1)
            partner, lam = brain.hparams.mixup.pairing
            assert 0.5 <= lam <= 1.0
            assert torch.allclose(mixed, lam * clean + (1 - lam) * clean[partner], atol=1e-5)
            assert torch.equal(lens_out, torch.maximum(clean_lens, clean_lens[partner]))
            mixed_batches += not torch.equal(partner, torch.arange(4))
            brain.metrics = brain.hparams.error_stats(label_names=["a", "b", "c", "d"])
            brain.padded_frames = [0.0, 0.0]
            loss = brain.compute_objectives((log_probs, lens), labels, sb.Stage.TRAIN)
            want = lam * nll(log_probs, targets, weight=w)
            want = want + (1 - lam) * nll(log_probs, targets[partner], weight=w)
            assert torch.allclose(loss, want, atol=1e-6)
            assert brain.hparams.mixup.pairing is None  # used once
        assert mixed_batches >= 4
        brain.metrics = brain.hparams.error_stats(label_names=["a", "b", "c", "d"])
        loss = brain.compute_objectives((log_probs, lens), labels, sb.Stage.VALID)
        assert torch.equal(loss, nll(log_probs, targets, weight=w))


def test_crop_cuts_training_utterances_to_spans_and_leaves_evaluation_whole():
    """``crop_fraction`` (hnsd_improved.yaml): in training each utterance's normalised features
    are one contiguous span of its own real frames, at least ``crop_fraction`` of them, moved
    to the start and zero-padded, with its new length; before mixup, so a mixture mixes spans;
    validation and test read whole utterances."""
    import speechbrain as sb
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    brain = improved_brain(crop_fraction=0.5)
    gen = torch.Generator().manual_seed(0)
    batch = PaddedBatch(
        [
            {"id": str(i), "sig": torch.randn(n, generator=gen), "spk_id": "s"}
            for i, n in enumerate((16000, 12000, 9000, 16000))
        ]
    )
    with torch.no_grad():
        *streams, clean_lens = brain.compute_features(batch, sb.Stage.VALID)
        clean = torch.cat(streams, -1)
        real = torch.round(clean_lens * clean.shape[1]).long()
        seen = set()
        for seed in range(8):
            torch.manual_seed(seed)
            *streams, lens = brain.compute_features(batch, sb.Stage.TRAIN)
            cropped = torch.cat(streams, -1)
            kept = torch.round(lens * cropped.shape[1]).long()
            assert lens.max() == 1.0
            for i in range(4):
                n, k = int(real[i]), int(kept[i])
                assert (n + 1) // 2 <= k <= n
                assert torch.all(cropped[i, k:] == 0)
                starts = [
                    s
                    for s in range(n - k + 1)
                    if torch.allclose(cropped[i, :k], clean[i, s : s + k])
                ]
                assert starts, f"utterance {i}: the span is not a slice of its frames"
                seen.add((i, starts[0], k))
        assert len(seen) > 16  # spans differ from batch to batch
        assert len({start for _, start, _ in seen}) > 2  # and start inside the utterances
        for stage in (sb.Stage.VALID, sb.Stage.TEST):
            *streams, lens = brain.compute_features(batch, stage)
            assert torch.equal(torch.cat(streams, -1), clean) and torch.equal(lens, clean_lens)
        # before mixup: the mixture is of the spans that the same random numbers cut
        mixed = improved_brain(crop_fraction=0.5, mixup_alpha=0.4)
        torch.manual_seed(3)
        *streams, lens = brain.compute_features(batch, sb.Stage.TRAIN)
        spans = torch.cat(streams, -1)
        torch.manual_seed(3)
        *streams, mixed_lens = mixed.compute_features(batch, sb.Stage.TRAIN)
        partner, lam = mixed.hparams.mixup.pairing
        assert not torch.equal(partner, torch.arange(4))
        want = lam * spans + (1 - lam) * spans[partner]
        assert torch.allclose(torch.cat(streams, -1), want, atol=1e-5)
        assert torch.equal(mixed_lens, torch.maximum(lens, lens[partner]))


def test_crop_off_draws_no_random_number_and_checks_its_fraction():
    """``crop_fraction: 1.0`` (the default) leaves the features and the RNG alone, so runs with
    it off repeat the runs from before it existed; a fraction outside (0, 1] is a clear error."""
    import torch

    from hnsd_sb.augment import RandomCrop

    feats, lens = torch.randn(3, 5, 78), torch.tensor([1.0, 0.6, 0.2])
    state = torch.get_rng_state()
    out = RandomCrop(min_fraction=1.0)(feats, lens)
    assert out[0] is feats and out[1] is lens
    assert torch.equal(torch.get_rng_state(), state)
    for bad in (0.0, -0.5, 1.5, True):
        with pytest.raises(ValueError, match="min_fraction must be in"):
            RandomCrop(min_fraction=bad)
    out, new_lens = RandomCrop(min_fraction=0.2)(feats, lens)  # a one-frame utterance stays one
    assert torch.round(new_lens[2] * out.shape[1]) == 1


def test_mixup_off_draws_no_random_number_and_checks_its_input():
    """``mixup_alpha: 0.0`` (the default) leaves the features and the RNG alone, so runs with it
    off repeat the runs from before it existed; a negative alpha and a loss for a batch of
    another size are clear errors."""
    import torch

    from hnsd_sb.augment import Mixup

    feats = torch.randn(3, 5, 78)
    state = torch.get_rng_state()
    lens = torch.tensor([1.0, 0.6, 0.2])
    out = Mixup(alpha=0.0)(feats, lens)
    assert out[0] is feats and out[1] is lens
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="alpha must be 0"):
        Mixup(alpha=-0.2)
    mixup = Mixup(alpha=0.2)
    mixup(feats, lens)
    with pytest.raises(RuntimeError, match="3 utterances, the loss got 2 labels"):
        mixup.loss(torch.nn.functional.nll_loss, torch.zeros(2, 4), torch.tensor([0, 1]))


def labelled_batch():
    """Four noise waveforms of one speaker, of different lengths, with emotion labels."""
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    gen = torch.Generator().manual_seed(0)
    return PaddedBatch(
        [
            {
                "id": str(i),
                "sig": torch.randn(n, generator=gen),
                "spk_id": "s",
                "emo_encoded": torch.tensor([i]),
            }
            for i, n in enumerate((16000, 12000, 9000, 16000))
        ]
    )


def ready_to_train(brain):
    """Gives a test brain its optimizer and fresh training statistics."""
    brain.init_optimizers()
    brain.metrics = brain.hparams.error_stats(label_names=["a", "b", "c", "d"])
    brain.padded_frames = [0.0, 0.0]
    return brain


def test_sam_steps_with_the_gradient_at_the_perturbed_weights_under_the_same_draws():
    """``sam_rho`` (hnsd_improved.yaml): the optimizer gets the gradient at the weights moved
    ``sam_rho`` up the first pass's gradient, computed with the same speed perturbation, crop,
    mixup and dropout as the first pass; the weights are put back exactly, the loss reported is
    the first pass's, and the random generators move on as after one plain pass."""
    import random

    import speechbrain as sb
    import torch

    brain = ready_to_train(
        improved_brain(wav_augment=True, crop_fraction=0.5, mixup_alpha=0.4, sam_rho=0.05)
    )
    batch, train = labelled_batch(), sb.Stage.TRAIN
    params = dict(brain.modules.named_parameters())
    start = {n: p.detach().clone() for n, p in params.items()}
    stepped = []  # the gradients the optimizer would step with
    brain.optimizers_step = lambda: stepped.append(
        {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
    )
    torch.manual_seed(1)
    random.seed(1)
    loss = brain.fit_batch(batch)
    after = torch.get_rng_state(), random.getstate()
    assert all(torch.equal(p, start[n]) for n, p in params.items())
    assert brain.padded_frames[1] == 4 and len(brain.metrics.ids) == 4  # counted once

    def pass_at(shift):
        """Loss and gradients at the start weights plus ``shift``, with the step's draws."""
        brain.modules.zero_grad(set_to_none=True)
        with torch.no_grad():
            for n, e in shift.items():
                params[n].add_(e)
        torch.manual_seed(1)
        random.seed(1)
        value, _ = brain.emotion_loss(brain.compute_forward(batch, train), batch, train)
        value.backward()
        grads = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(start[n])
        return value, grads

    first_loss, first = pass_at({})
    assert torch.equal(loss, first_loss.detach())
    norm = torch.sqrt(sum(g.pow(2).sum() for g in first.values()))
    second_loss, second = pass_at({n: 0.05 * g / norm for n, g in first.items()})
    assert torch.equal(torch.get_rng_state(), after[0]) and random.getstate() == after[1]
    assert len(stepped) == 1 and stepped[0].keys() == second.keys()
    for n, g in second.items():
        assert torch.allclose(stepped[0][n], g, atol=1e-6), n
    assert second_loss > first_loss  # up the gradient
    assert any(not torch.allclose(second[n], first[n], atol=1e-4) for n in first)


def test_sam_off_is_one_plain_pass_and_a_vanishing_rho_takes_the_plain_step():
    """``sam_rho: 0.0`` (the default) trains with SpeechBrain's one-pass step, so runs with it
    off repeat the runs from before it existed; a rho too small to move the weights takes the
    same step through both passes, draws included. Bad radii and misuse are clear errors."""
    import random

    import torch

    from hnsd_sb.sharpness import SharpnessAware

    plain = ready_to_train(improved_brain(wav_augment=True, mixup_alpha=0.4))
    tiny = ready_to_train(improved_brain(wav_augment=True, mixup_alpha=0.4, sam_rho=0.05))
    tiny.modules.load_state_dict(plain.modules.state_dict())
    tiny.hparams.sam.rho = 1e-30
    forwards = []
    for brain in (plain, tiny):
        forward = brain.compute_forward
        brain.compute_forward = lambda *a, f=forward: forwards.append(1) or f(*a)
        torch.manual_seed(2)
        random.seed(2)
        loss = brain.fit_batch(labelled_batch())
        brain.rng = torch.get_rng_state(), random.getstate(), loss
    assert len(forwards) == 3  # one pass, then two
    assert torch.equal(plain.rng[0], tiny.rng[0]) and plain.rng[1] == tiny.rng[1]
    assert torch.equal(plain.rng[2], tiny.rng[2])
    for p, q in zip(plain.modules.parameters(), tiny.modules.parameters()):
        assert torch.allclose(p, q, atol=1e-7)
    for bad in (-0.1, True, "0.1"):
        with pytest.raises(ValueError, match="rho must be a number >= 0"):
            SharpnessAware(rho=bad)
    sam = SharpnessAware(rho=0.1)
    with pytest.raises(RuntimeError, match="without perturb"):
        sam.restore()
    with pytest.raises(RuntimeError, match="no parameter has a gradient"):
        sam.perturb(plain.optimizer)
    w = torch.nn.Parameter(torch.ones(2))  # a gradient that is not finite moves nothing
    w.grad = torch.tensor([float("nan"), 1.0])
    sam.perturb(torch.optim.SGD([w], lr=0.1))
    assert torch.equal(w.detach(), torch.ones(2)) and w.grad is None
    with pytest.raises(RuntimeError, match="called twice"):
        sam.perturb(torch.optim.SGD([w], lr=0.1))
    sam.restore()


def test_distillation_adds_the_soft_term_weighted_like_the_label_loss(tmp_path):
    """``teacher_folder`` (hnsd_improved.yaml): the training loss is ``(1 - w)`` times the
    class-weighted label loss plus ``w * T**2`` times the class-weighted mean of
    ``KL(q_T || p_T)``, the teachers' and the model's distributions at temperature ``T``; with
    mixup both parts pair alike; validation keeps the label loss; off by default."""
    import speechbrain as sb
    import torch

    from hnsd_sb.distill import write_teacher_targets

    labels, ids = ["a", "b", "c", "d"], ["0", "1", "2", "3"]
    q = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.1, 0.1, 0.6, 0.2], [0.25] * 4])
    write_teacher_targets(str(tmp_path / "fold3" / "teacher.csv"), ids, labels, q)
    weights = torch.tensor([1.0, 2.0, 0.5, 1.5])

    def by_hand(log_probs, emo, q, w=0.3):
        label = torch.nn.functional.nll_loss(log_probs, emo, weight=weights)
        log_p = torch.log_softmax(log_probs / 2.0, dim=1)
        q_t = q.sqrt() / q.sqrt().sum(1, keepdim=True)
        kl = (q_t * (q_t.log() - log_p)).sum(1)
        soft = 4.0 * (weights[emo] * kl).sum() / weights[emo].sum()
        return (1 - w) * label + w * soft

    batch, train = labelled_batch(), sb.Stage.TRAIN
    emo = batch.emo_encoded.data.view(-1)
    for mixup_alpha in (0.0, 0.4):
        brain = improved_brain(
            teacher_folder=str(tmp_path), fold=3, distill_weight=0.3, mixup_alpha=mixup_alpha
        )
        brain.hparams.teacher.load(labels, ids)
        brain.class_weights = weights
        torch.manual_seed(3)
        predictions = brain.compute_forward(batch, train)
        pairing = brain.hparams.mixup.pairing
        loss, _ = brain.emotion_loss(predictions, batch, train)
        log_probs = predictions[0]
        if pairing is None:
            expected = by_hand(log_probs, emo, q)
        else:
            partner, lam = pairing
            assert partner.tolist() != [0, 1, 2, 3] and lam < 0.9  # a real mix
            expected = lam * by_hand(log_probs, emo, q) + (1 - lam) * by_hand(
                log_probs, emo[partner], q[partner]
            )
        torch.testing.assert_close(loss, expected)
        valid, _ = brain.emotion_loss(predictions, batch, sb.Stage.VALID)
        torch.testing.assert_close(
            valid, torch.nn.functional.nll_loss(log_probs, emo, weight=weights)
        )
    # An augmenter that also keeps the original waveforms doubles the batch (the recipe's
    # speaker statistics do not follow, so the loss is given the doubled outputs directly):
    # the soft targets are replicated with the labels
    brain = improved_brain(wav_augment=True, teacher_folder=str(tmp_path), fold=3)
    brain.hparams.teacher.load(labels, ids)
    brain.class_weights = weights
    augment = brain.hparams.wav_augment
    augment.concat_original = True
    assert augment(*batch.sig)[0].shape[0] == 8
    log_probs = torch.log_softmax(torch.randn(8, 4), dim=1)
    loss, doubled = brain.emotion_loss((log_probs, torch.ones(8)), batch, train)
    assert doubled.tolist() == emo.tolist() * 2
    teacher = brain.hparams.teacher
    assert (teacher.weight, teacher.temperature) == (0.5, 2.0)  # the yaml's defaults
    torch.testing.assert_close(loss, by_hand(log_probs, doubled, torch.cat([q, q]), w=0.5))
    assert not improved_brain().hparams.teacher.enabled
    unweighted = improved_brain(teacher_folder=str(tmp_path), distill_weight=0)
    assert not unweighted.hparams.teacher.enabled


def test_an_ensembles_soft_targets_train_a_student_and_a_missing_file_stops_before_training(
    trained, corpus, tmp_path, capsys
):
    """``ensemble.py --teacher-targets`` writes the ensemble's probabilities of every training
    utterance of the fold, and ``--teacher_folder`` trains on them; a folder without the fold's
    file stops the run before training, naming the file it looked for."""
    import importlib.util

    import torch

    from hnsd_sb.metrics import confusion_matrix, unweighted_accuracy

    out, _ = trained
    spec = importlib.util.spec_from_file_location(
        "ravdess_ensemble", os.path.join(ROOT, "recipes", "RAVDESS", "hnsd", "ensemble.py")
    )
    ensemble = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ensemble)
    targets = tmp_path / "teachers"
    ensemble.main([str(out.parent), f"--data_folder={corpus}", "--folds", "2",
                   "--teacher-targets", str(targets)])  # fmt: skip
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    written = read_csv(targets / "fold2" / "teacher.csv")
    train = read_csv(out / "train.csv")
    train_ids = [row["ID"] for row in train]
    assert [row["ID"] for row in written] == train_ids
    for row in written:
        assert abs(sum(float(v) for k, v in row.items() if k.startswith("p_")) - 1) < 1e-5
    # each column holds the probability of the emotion it names: the file's most probable
    # emotions give the training UA and mean probability of the truth that the ensemble printed
    labels = sorted({row["emo"] for row in train})
    probs = torch.tensor([[float(row[f"p_{label}"]) for label in labels] for row in written])
    truth = torch.tensor([labels.index(row["emo"]) for row in train])
    cm = confusion_matrix(truth, probs.argmax(1), len(labels))
    assert round(100 * float(unweighted_accuracy(cm)), 2) == printed["ensemble train UA"]
    p_true = float(probs[torch.arange(len(train)), truth].mean())
    assert abs(p_true - printed["ensemble train p(true)"]) < 1e-4

    student = tmp_path / "student"
    args = ["hparams/hnsd_improved.yaml", f"--data_folder={corpus}", "--fold=2",
            "--number_of_epochs=1", *TINY]  # fmt: skip
    log = run("train.py", *args, f"--output_folder={student}", f"--teacher_folder={targets}")
    assert f"Soft targets of {len(train_ids)} utterances from {targets}/fold2/teacher.csv" in log
    assert (student / "test_results.json").exists()

    env = dict(os.environ, OMP_NUM_THREADS="1")
    missing = tmp_path / "elsewhere"
    proc = subprocess.run(
        [sys.executable, "train.py", *args, f"--output_folder={tmp_path / 'x'}",
         f"--teacher_folder={missing}"],
        cwd=RECIPE, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{missing}/fold2/teacher.csv: no soft targets" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not glob.glob(str(tmp_path / "x" / "save" / "CKPT*"))  # nothing trained


def test_speaker_adversary_adds_its_loss_in_training_only_with_the_speakers_replicated():
    """``adversary_weight`` (hnsd_improved.yaml): the training loss is the emotion loss plus
    the speaker head's cross-entropy on the batch's pooled vectors, its speakers replicated as
    the labels are when an augmenter doubles the batch; validation keeps the emotion loss; the
    head's hits are counted for the log; off by default, and never beside mixup."""
    import speechbrain as sb
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    assert not improved_brain().hparams.speaker_adversary.enabled
    batch = labelled_batch()
    items = [{k: batch[k][i] for k in ("id", "spk_id")} for i in range(4)]
    sigs, lens = batch.sig
    batch = PaddedBatch(
        [
            {**item, "spk_id": spk, "sig": sig[: int(round(float(n) * sig.numel()))],
             "emo_encoded": torch.tensor([i])}
            for i, (item, spk, sig, n) in enumerate(zip(items, "tsst", sigs, lens))
        ]
    )  # fmt: skip
    emo = batch.emo_encoded.data.view(-1)
    weights = torch.tensor([1.0, 2.0, 0.5, 1.5])
    for wav_augment in (False, True):
        brain = ready_to_train(improved_brain(wav_augment=wav_augment, adversary_weight=0.3))
        adversary = brain.hparams.speaker_adversary
        adversary.attach(brain.hparams.model, ["s", "t", "u"])
        brain.modules["speaker_adversary"] = adversary
        brain.class_weights = weights
        if wav_augment:
            # an augmenter that also keeps the original waveforms doubles the batch (the
            # recipe's speaker statistics do not follow, so the loss is given doubled outputs)
            brain.hparams.wav_augment.concat_original = True
            assert brain.hparams.wav_augment(*batch.sig)[0].shape[0] == 8
            predictions = (torch.log_softmax(torch.randn(8, 4), dim=1), torch.ones(8))
            adversary._pooled["u"] = u = torch.randn(8, 16)
            loss, labels = brain.emotion_loss(predictions, batch, sb.Stage.TRAIN)
            hits = brain.speaker_counts
        else:
            torch.manual_seed(3)
            predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
            u = adversary._pooled["u"]
            loss = brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
            labels, hits = emo, brain.speaker_hits
        n = labels.numel()
        log_probs = predictions[0]
        speakers = torch.tensor([1, 0, 0, 1] * (n // 4))
        emotion = torch.nn.functional.nll_loss(log_probs, labels, weight=weights)
        logits = adversary.head(u)
        head = torch.nn.functional.cross_entropy(logits, speakers)
        torch.testing.assert_close(loss, emotion + head)
        assert hits[:2] == [int((logits.argmax(1) == speakers).sum()), n] and hits[3] == 1
        assert abs(hits[2] - float(head.detach())) < 1e-6
        if not wav_augment:
            adversary._pooled["u"] = u
            valid, _ = brain.emotion_loss(predictions, batch, sb.Stage.VALID)
            torch.testing.assert_close(valid, emotion)
            assert "u" in adversary._pooled  # validation leaves the speaker head alone


def assert_refused_with_mixup(args, out, option):
    """Runs the recipe with ``args`` and mixup into ``out``: it must stop before training with
    status 2, saying that ``option`` does not combine with mixup, and leave no checkpoint."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "train.py", *args, f"--output_folder={out}", "--mixup_alpha=0.2"],
        cwd=RECIPE, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{option} does not combine with mixup_alpha > 0" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not glob.glob(str(out / "save" / "CKPT*"))


def test_speaker_adversary_trains_beside_the_model_and_refuses_mixup(corpus, tmp_path):
    """``--adversary_weight`` trains the head with the model, logs its loss and accuracy per
    epoch and checkpoints it beside the model; the test figures come from HNSD alone. Asked
    together with mixup, the run stops before training with a clear message."""
    args = ["hparams/hnsd_improved.yaml", f"--data_folder={corpus}", "--fold=2",
            "--number_of_epochs=1", "--adversary_weight=0.3", *TINY]  # fmt: skip
    out = tmp_path / "adversary"
    log = run("train.py", *args, f"--output_folder={out}")
    train = read_csv(out / "train.csv")
    n_speakers = len({row["spk_id"] for row in train})
    assert f"Speaker adversary over {n_speakers} training speakers" in log
    epoch = (out / "train_log.txt").read_text().splitlines()[0]
    assert re.search(r"train speaker_loss: [0-9.e+-]+, train speaker_acc: [0-9.]+ ", epoch)
    assert "valid speaker" not in epoch
    assert glob.glob(str(out / "save" / "CKPT*" / "speaker_adversary.ckpt"))
    assert (out / "test_results.json").exists()

    # (the vectors' z-score, on in the file, refuses mixup too: off, so the adversary speaks)
    plain = [*args, "--vector_normalization=False"]
    assert_refused_with_mixup(plain, tmp_path / "x", "adversary_weight > 0")


def test_vector_normalization_replicates_the_speakers_as_the_labels_in_training_only():
    """``vector_normalization`` (hnsd_improved.yaml): the speakers whose statistics z-score the
    pooled vectors line up with the labels when an augmenter doubles the training batch; in
    validation they are the batch's own; off by default, where it sets no speakers."""
    import contextlib

    import speechbrain as sb
    import torch

    off = improved_brain()
    assert not off.hparams.pooled_normalizer.enabled
    assert isinstance(off.vector_speakers(["a"], sb.Stage.TRAIN), contextlib.nullcontext)
    brain = improved_brain(wav_augment=True, vector_normalization=True)
    brain.hparams.wav_augment.concat_original = True
    norm, speakers = brain.hparams.pooled_normalizer, ["t", "s", "s", "u"]
    assert brain.hparams.wav_augment(torch.randn(4, 8000), torch.ones(4))[0].shape[0] == 8
    labels = brain.hparams.wav_augment.replicate_labels(torch.arange(4))  # of that last call
    with brain.vector_speakers(speakers, sb.Stage.TRAIN):
        assert norm._state["speakers"] == [speakers[i] for i in labels.tolist()]
    with brain.vector_speakers(speakers, sb.Stage.VALID):
        assert norm._state["speakers"] == speakers
    assert norm._state["speakers"] is None


def test_vector_normalization_gathers_each_splits_statistics_and_exports_them(corpus, tmp_path):
    """``--vector_normalization=True`` gathers the pooled vectors' statistics of the training
    speakers before each epoch and of the scored ones before validation and test, and at the
    end those of every speaker for ``hnsd export``: the model folder, told each test file's
    speaker, gives the probabilities of the run's own test predictions. Mixup is refused before
    training."""
    from hnsd_sb.checkpoints import find_checkpoint
    from hnsd_sb.export import export_model
    from hnsd_sb.inference import EmotionRecognizer

    args = ["hparams/hnsd_improved.yaml", f"--data_folder={corpus}", "--fold=2",
            "--number_of_epochs=2", "--vector_normalization=True", *TINY]  # fmt: skip
    out = tmp_path / "vecnorm"
    log = run("train.py", *args, f"--output_folder={out}")
    saved = list((out / "save").glob("CKPT*/vector_normalizer.ckpt"))
    assert [p.parent for p in saved] == [find_checkpoint(out, max_key="UA").path]
    speakers = {}
    for split in ("train", "valid", "test"):
        speakers[split] = {row["spk_id"] for row in read_csv(out / f"{split}.csv")}
        assert f"Pooled-vector statistics of {len(speakers[split])} speakers ({split})" in log
    everyone = set().union(*speakers.values())
    assert f"Pooled-vector statistics of {len(everyone)} speakers (model folder)" in log
    recognizer = EmotionRecognizer.from_folder(export_model(out, tmp_path / "model"))
    assert recognizer.vector_norms[0].statistics.speakers == sorted(everyone)
    rows = {row["ID"]: row for row in read_csv(out / "test.csv")}
    for prediction in read_csv(out / "predictions.csv"):
        row = rows[prediction["ID"]]
        wav = row["wav"].replace("$data_root", str(corpus))
        probs = recognizer.classify_file(wav, speaker=row["spk_id"])[0][0]
        want = [float(prediction[f"p_{label}"]) for label in recognizer.labels]
        assert probs.tolist() == pytest.approx(want, abs=2e-5), prediction["ID"]

    assert_refused_with_mixup(args, tmp_path / "x", "vector_normalization")


def test_vector_statistics_come_from_the_network_and_split_each_stage_scores():
    """``fit_vector_statistics``: before training, the trained network over the training
    speakers; before validation and test, the weight average over the scored split (or the
    training split where ``normalize_eval_speakers`` is off). The pass leaves the network's
    mode and torch's random state as they were."""
    import copy
    import types

    import speechbrain as sb
    import torch
    from speechbrain.dataio.dataset import DynamicItemDataset

    gen = torch.Generator().manual_seed(0)

    def dataset(speakers):
        data = {f"{s}{i}": {"sig": torch.randn(6000 + 800 * i, generator=gen), "spk_id": s}
                for s in speakers for i in range(3)}  # fmt: skip
        items = DynamicItemDataset(data)
        items.set_output_keys(["id", "sig", "spk_id"])
        return items

    brain = improved_brain(vector_normalization=True, num_workers=0)
    norm, model = brain.hparams.pooled_normalizer, brain.hparams.model
    norm.attach(model)
    average = copy.deepcopy(model)  # attached before the copy, as the recipe does
    with torch.no_grad():
        for p in average.parameters():
            p.add_(0.1)
    brain.averaged = types.SimpleNamespace(module=average)
    brain.vector_sets = {"train": dataset("ab"), "valid": dataset("c"), "test": dataset("de")}
    brain.modules.normalizer.accumulate(torch.randn(1, 50, 78), torch.ones(1), ["x"])

    def expected(network, split):
        """The statistics of a pass made by hand over ``split`` with ``network``."""
        with torch.no_grad(), norm.collecting():
            for item in brain.vector_sets[split]:
                wav = item["sig"].unsqueeze(0)
                with norm.for_speakers([item["spk_id"]]):
                    network(*brain.modules.normalizer(
                        torch.cat(brain.modules.features(wav), -1), None, [item["spk_id"]]
                    ).split([26, 52], -1))  # fmt: skip
        return norm.statistics.state()

    model.train()
    cases = [(sb.Stage.TRAIN, model, "train"), (sb.Stage.VALID, average, "valid")]
    brain.evaluated_split = "test"
    cases.append((sb.Stage.TEST, average, "test"))
    for stage, network, split in cases:
        want = expected(network.eval(), split)
        model.train()
        rng = torch.get_rng_state()
        brain.fit_vector_statistics(stage)
        assert torch.equal(torch.get_rng_state(), rng) and model.training
        got = norm.statistics.state()
        assert got["speakers"] == want["speakers"], stage
        torch.testing.assert_close(got["sum"], want["sum"])
    brain.hparams.normalize_eval_speakers = False
    brain.fit_vector_statistics(sb.Stage.TEST)
    assert norm.statistics.speakers == ["a", "b"]
