"""Tests of WA / UA against hand-computed values, and of gathering them across processes."""

import csv
import json
import math

import pytest
import torch
import torch.multiprocessing as mp

from hnsd_sb.metrics import (
    EmotionMetrics,
    confusion_matrix,
    per_class_recall,
    restrict_to_classes,
    unweighted_accuracy,
    weighted_accuracy,
)

# 10 utterances over 4 classes; class 3 never occurs as a target but is predicted once.
TARGETS = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
PREDICTIONS = [0, 0, 1, 3, 1, 0, 2, 2, 2, 1]
# Rows true, columns predicted, counted by hand.
CM = [[2, 1, 0, 1], [1, 1, 0, 0], [0, 1, 3, 0], [0, 0, 0, 0]]
WA = 6 / 10  # 2 + 1 + 3 correct
UA = (2 / 4 + 1 / 2 + 3 / 4) / 3  # mean recall over the 3 classes present
LABELS = ["neu", "hap", "sad", "ang"]


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(torch.tensor(TARGETS), torch.tensor(PREDICTIONS), 4)
    assert cm.dtype == torch.long and cm.tolist() == CM


def test_wa_ua_by_hand_with_absent_class():
    cm = torch.tensor(CM)
    assert weighted_accuracy(cm) == pytest.approx(WA)
    assert unweighted_accuracy(cm) == pytest.approx(0.5833333333)
    assert unweighted_accuracy(cm) == pytest.approx(UA)
    recall = per_class_recall(cm)
    assert recall[:3].tolist() == [0.5, 0.5, 0.75] and math.isnan(recall[3])


def test_perfect_balanced_and_degenerate():
    assert unweighted_accuracy(torch.eye(3, dtype=torch.long) * 5) == 1.0
    # Always predicting the majority class: WA flatters, UA does not.
    cm = confusion_matrix(torch.tensor([0] * 8 + [1, 2]), torch.zeros(10, dtype=torch.long), 3)
    assert weighted_accuracy(cm) == 0.8 and unweighted_accuracy(cm) == pytest.approx(1 / 3)
    empty = torch.zeros(3, 3, dtype=torch.long)
    assert math.isnan(weighted_accuracy(empty)) and math.isnan(unweighted_accuracy(empty))


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)


def scores_for(predictions, n_classes=4, seed=0):
    """Log-probabilities of shape [B, 1, C] whose argmax is ``predictions``."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(predictions), n_classes, generator=gen)
    logits[torch.arange(len(predictions)), torch.tensor(predictions)] += 10
    return torch.log_softmax(logits, dim=-1).unsqueeze(1)


def test_restricting_to_some_classes_keeps_their_utterances_and_scores():
    labels = ["ang", "cal", "hap", "sad"]
    probs = torch.tensor(
        [[0.3, 0.4, 0.2, 0.1], [0.1, 0.6, 0.2, 0.1], [0.1, 0.5, 0.3, 0.1], [0.3, 0.4, 0.1, 0.2]]
    )
    # the order of ``classes`` sets the columns and the new target indices
    kept, targets = restrict_to_classes(probs, [0, 1, 2, 3], labels, ["sad", "ang"])
    assert torch.equal(kept, probs[[0, 3]][:, [3, 0]])
    assert targets.tolist() == [1, 0]
    # calm wins every utterance over all labels; over angry and sad, the sad one is taken for angry
    assert kept.argmax(1).tolist() == [1, 1]
    cm = confusion_matrix(targets, kept.argmax(1), 2)
    assert unweighted_accuracy(cm) == 0.5 and weighted_accuracy(cm) == 0.5
    kept, targets = restrict_to_classes(probs[:2], [1, 1], labels, ["ang"])
    assert kept.shape == (0, 1) and targets.numel() == 0  # no utterance of the class
    with pytest.raises(ValueError, match=r"\['sur'\]: not among the labels"):
        restrict_to_classes(probs, [0, 1, 2, 3], labels, ["ang", "sur"])


def test_emotion_metrics_batches_and_fields():
    metrics = EmotionMetrics(label_names=LABELS)
    ids = [f"u{i}" for i in range(10)]
    metrics.append(ids[:6], scores_for(PREDICTIONS[:6]), torch.tensor(TARGETS[:6]).unsqueeze(1))
    metrics.append(ids[6:], torch.tensor(PREDICTIONS[6:]), torch.tensor(TARGETS[6:]))
    stats = metrics.summarize()
    assert stats["confusion"].tolist() == CM
    assert stats["WA"] == pytest.approx(WA) and stats["UA"] == pytest.approx(UA)
    assert stats["error_rate"] == pytest.approx(1 - WA) and stats["n"] == 10
    assert list(stats["recall"]) == LABELS and math.isnan(stats["recall"]["ang"])
    assert metrics.summarize("UA") == pytest.approx(UA)
    metrics.clear()
    assert metrics.ids == [] and metrics.summary == {}
    with pytest.raises(ValueError, match="2 ids, 1 predictions"):
        metrics.append(["a", "b"], torch.tensor([0]), torch.tensor([0, 1]))


def test_write_predictions_with_probabilities(tmp_path):
    metrics = EmotionMetrics(label_names=LABELS)
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # raw logits work too
    metrics.append(["a", "b"], logits, torch.tensor([0, 2]))
    path = metrics.write_predictions(tmp_path / "out" / "predictions.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["ID", "target", "prediction", "p_neu", "p_hap", "p_sad", "p_ang"]
    assert [(r["ID"], r["target"], r["prediction"]) for r in rows] == [
        ("a", "neu", "neu"),
        ("b", "sad", "ang"),
    ]
    probs = torch.softmax(logits, dim=-1)
    for row, p in zip(rows, probs):
        got = [float(row[f"p_{name}"]) for name in LABELS]
        assert got == pytest.approx(p.tolist(), abs=1e-6)
    # Index-only predictions: no probability columns, indices without label names.
    metrics = EmotionMetrics()
    metrics.append(["a"], torch.tensor([1]), torch.tensor([0]))
    metrics.write_predictions(tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().split() == ["ID,target,prediction", "a,0,1"]


# Each rank's shard; rank 1 ends with a repeat of u0, as DistributedSampler padding gives.
SHARDS = [
    (["u0", "u1", "u2", "u3", "u4"], [0, 1, 2, 3, 4]),
    (["u5", "u6", "u7", "u8", "u9", "u0"], [5, 6, 7, 8, 9, 0]),
]


def _sync_worker(rank, tmpdir):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmpdir}/rendezvous", rank=rank, world_size=2
    )
    try:
        ids, idx = SHARDS[rank]
        metrics = EmotionMetrics(label_names=LABELS)
        half = len(ids) // 2  # one batch of scores, one of indices
        preds, targets = [PREDICTIONS[i] for i in idx], torch.tensor([TARGETS[i] for i in idx])
        metrics.append(ids[:half], scores_for(preds[:half], seed=rank), targets[:half])
        metrics.append(ids[half:], torch.tensor(preds[half:]), targets[half:])
        local = metrics.summarize()["n"]
        metrics.sync()
        stats = metrics.summarize()
        written = metrics.write_predictions(f"{tmpdir}/predictions.csv")
        result = {
            "local_n": local,
            "n": stats["n"],
            "ids": metrics.ids,
            "WA": stats["WA"],
            "UA": stats["UA"],
            "confusion": stats["confusion"].tolist(),
            "wrote": written is not None,
        }
        with open(f"{tmpdir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        torch.distributed.destroy_process_group()


def test_sync_gathers_all_ranks(tmp_path):
    mp.spawn(_sync_worker, args=(str(tmp_path),), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["local_n"] for r in results] == [5, 6]
    for r in results:
        assert r["n"] == 10 and r["ids"] == [f"u{i}" for i in range(10)]
        assert r["confusion"] == CM
        assert r["WA"] == pytest.approx(WA) and r["UA"] == pytest.approx(UA)
    assert [r["wrote"] for r in results] == [True, False]
    assert len((tmp_path / "predictions.csv").read_text().split()) == 11


def test_sync_is_a_no_op_without_distributed():
    metrics = EmotionMetrics()
    metrics.append(["a"], torch.tensor([1]), torch.tensor([1]))
    metrics.sync()
    assert metrics.ids == ["a"] and metrics.summarize("WA") == 1.0
