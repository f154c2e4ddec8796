"""Tests of the statistics baseline: functionals, the linear classifier and the recipe script."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from hnsd_sb.baseline import LinearClassifier, utterance_functionals
from hnsd_sb.synthetic import make_synthetic_iemocap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "IEMOCAP", "hnsd")


def test_functionals_match_a_direct_computation_and_ignore_padding():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 30, 3, generator=gen)
    x[1, 17:] = 1e6  # padding must not count
    out = utterance_functionals(x, torch.tensor([1.0, 17 / 30]), quantiles=(0.1, 0.5, 0.9))
    assert out.shape == (2, 3 * 7)
    for b, n in enumerate((30, 17)):
        real = x[b, :n].double()
        expected = torch.cat(
            [
                real.mean(0),
                real.std(0, unbiased=False),
                real.min(0).values,
                real.max(0).values,
                *[torch.quantile(real, q, dim=0) for q in (0.1, 0.5, 0.9)],
            ]
        ).float()
        torch.testing.assert_close(out[b], expected)


def test_functionals_subsets_keep_the_order_and_bad_names_are_refused():
    x = torch.randn(2, 10, 3)
    full = utterance_functionals(x, quantiles=(0.5,))
    mean_std = utterance_functionals(x, quantiles=(), statistics=("mean", "std"))
    torch.testing.assert_close(mean_std, full[:, :6])
    only_median = utterance_functionals(x, quantiles=(0.5,), statistics=())
    torch.testing.assert_close(only_median, full[:, -3:])
    with pytest.raises(ValueError, match="'median'"):
        utterance_functionals(x, statistics=("mean", "median"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        utterance_functionals(x, quantiles=(50,))
    torch.testing.assert_close(
        utterance_functionals(x, quantiles=(), statistics="mean"), full[:, :3]
    )
    with pytest.raises(ValueError, match="at least one"):
        utterance_functionals(x, quantiles=(), statistics=())


def test_classifier_separates_classes_by_their_means_and_prefers_simpler_with_more_l2():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(40)
    x = torch.randn(120, 5, generator=gen) + 3 * torch.nn.functional.one_hot(y, 5)
    clf = LinearClassifier(l2=1e-3).fit(x, y, n_classes=3)
    assert float((clf(x).argmax(1) == y).float().mean()) > 0.95
    strong = LinearClassifier(l2=10.0).fit(x, y, n_classes=3)
    assert strong.linear.weight.norm() < clf.linear.weight.norm()
    log_probs = clf(x)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(120, dtype=torch.float64))


def test_classifier_class_weights_favour_the_rare_class():
    # two overlapping classes, the first 9 times as frequent: weighting moves the boundary
    gen = torch.Generator().manual_seed(1)
    y = torch.cat([torch.zeros(180), torch.ones(20)]).long()
    x = torch.randn(200, 1, generator=gen) + y.unsqueeze(1).float()
    plain = LinearClassifier(l2=1e-3).fit(x, y, 2)
    weighted = LinearClassifier(l2=1e-3).fit(x, y, 2, class_weights=torch.tensor([0.1, 0.9]))
    assert (weighted(x).argmax(1) == 1).sum() > (plain(x).argmax(1) == 1).sum()


def test_unfitted_classifier_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearClassifier()(torch.zeros(1, 2))


def test_baseline_recipe_selects_on_valid_and_writes_the_results_of_a_train_run(tmp_path):
    corpus = tmp_path / "IEMOCAP_full_release"
    make_synthetic_iemocap(corpus, utterances_per_emotion=3, dropped_per_speaker=0)
    out = tmp_path / "cv"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "cross_validate.py",
        "hparams/hnsd.yaml",
        "--script=baseline.py",
        f"--data_folder={corpus}",
        f"--cv_folder={out}",
        "--folds",
        "2",
        "--num_workers=0",
    ]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fold = out / "fold2"
    for name in ("predictions.csv", "confusion.csv", "confusion.png", "train_log.txt"):
        assert (fold / name).exists(), name
    results = json.load(open(fold / "test_results.json", encoding="utf-8"))
    assert results["labels"] == ["ang", "hap", "neu", "sad"] and results["n"] > 0
    selection = json.load(open(fold / "baseline_selection.json", encoding="utf-8"))
    best = max(selection["grid"], key=lambda row: (row["valid_UA"], row["l2"]))
    assert selection["chosen_l2"] == best["l2"] and len(selection["grid"]) == 5
    # the chosen classifier's validation figures, as a train.py run writes them
    valid = json.load(open(fold / "valid_results.json", encoding="utf-8"))
    assert valid["UA"] == pytest.approx(best["valid_UA"])
    with open(fold / "valid.csv", newline="", encoding="utf-8") as f:
        valid_ids = {row["ID"] for row in csv.DictReader(f)}
    with open(fold / "valid_predictions.csv", newline="", encoding="utf-8") as f:
        assert {row["ID"] for row in csv.DictReader(f)} == valid_ids
    # the synthetic emotions differ in pitch and energy: functionals find them
    assert results["UA"] > 0.5
    report = open(out / "cv_results.md", encoding="utf-8").read()
    assert "Arguments given to baseline.py" in report
    assert selection["speaker_zscore"] is False

    # --speaker_zscore reaches the functionals, and the selection file says so
    out = tmp_path / "cv_zscored"
    cmd = [*cmd[:5], f"--cv_folder={out}", *cmd[6:], "--speaker_zscore"]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    zscored = json.load(open(out / "fold2" / "baseline_selection.json", encoding="utf-8"))
    assert zscored["speaker_zscore"] is True
    assert [row["valid_UA"] for row in zscored["grid"]] != [
        row["valid_UA"] for row in selection["grid"]
    ]


def test_speaker_zscore_of_the_functionals_uses_each_speakers_own_rows():
    """``baseline.py --speaker_zscore``: each utterance's functionals minus its speaker's mean,
    over its speaker's standard deviation (population), as HNSD's vector normalisation."""
    sys.path.insert(0, RECIPE)
    try:
        import baseline
    finally:
        sys.path.remove(RECIPE)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=gen) * 4 + 2
    speakers = ["a", "b", "a", "a", "b", "b", "b"]
    got = baseline.speaker_zscored(x, speakers)
    for speaker in "ab":
        rows = [i for i, s in enumerate(speakers) if s == speaker]
        expected = (x[rows] - x[rows].mean(0)) / x[rows].std(0, unbiased=False)
        torch.testing.assert_close(got[rows], expected, rtol=1e-5, atol=1e-5)
