"""Tests of the soft targets of distillation (``hnsd_sb.distill``)."""

import pytest
import torch

from hnsd_sb.distill import TeacherTargets, write_teacher_targets

LABELS = ["ang", "hap", "neu", "sad"]


def targets_file(tmp_path, text):
    """A ``fold1/teacher.csv`` with ``text`` in ``tmp_path``; returns its TeacherTargets."""
    (tmp_path / "fold1").mkdir(exist_ok=True)
    (tmp_path / "fold1" / "teacher.csv").write_text(text)
    return TeacherTargets(str(tmp_path), fold=1, weight=0.5, temperature=2.0)


def test_targets_round_trip_in_the_runs_class_order_at_the_temperature(tmp_path):
    """The file's columns may come in any order: each target lands under the run's class index;
    at ``T`` the distribution is ``q**(1/T)`` normalised."""
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    path = tmp_path / "fold1" / "teacher.csv"
    write_teacher_targets(str(path), ["u1", "u2"], LABELS[::-1], probs.flip(1))
    teacher = TeacherTargets(str(tmp_path), fold=1, temperature=2.0)
    teacher.load(LABELS, ["u2"])
    got = teacher.targets(["u2", "u1"]).exp()
    expected = probs[[1, 0]].sqrt() / probs[[1, 0]].sqrt().sum(1, keepdim=True)
    torch.testing.assert_close(got, expected)
    plain = TeacherTargets(str(tmp_path / "fold1"), temperature=1.0)  # no fold: folder's file
    plain.load(LABELS, [])
    torch.testing.assert_close(plain.targets(["u1"]).exp(), probs[:1])


def test_soft_loss_is_zero_at_the_teachers_distribution_and_grows_away_from_it():
    teacher = TeacherTargets(temperature=3.0)
    q = torch.log_softmax(torch.tensor([[2.0, 0.0, -1.0, 0.5]]), dim=1)
    same = q * 3.0  # the student's logits giving q at T = 3
    assert abs(float(teacher.soft_loss(same, q, torch.ones(1)))) < 1e-6
    other = torch.log_softmax(torch.tensor([[-1.0, 2.0, 0.0, 0.0]]), dim=1)
    assert float(teacher.soft_loss(other, q, torch.ones(1))) > 0.1


@pytest.mark.parametrize(
    "text, message",
    [
        ("ID,p_ang,p_hap\nu1,0.5,0.5\n", "columns"),
        ("ID,p_ang,p_hap,p_neu,p_sad,p_sad\nu1,0.5,0.5,0,0,0\n", "columns"),
        ("ID,p_ang,p_hap,p_neu,p_sad\nu1,0.5,0.5,x,0\n", "line 2: a probability is not a number"),
        ("ID,p_ang,p_hap,p_neu,p_sad\nu1,0.5,0.5,nan,0\n", "line 2: probabilities must be in"),
        ("ID,p_ang,p_hap,p_neu,p_sad\nu1,1.5,-0.5,0,0\n", "line 2: probabilities must be in"),
        ("ID,p_ang,p_hap,p_neu,p_sad\nu1,0.5,0.4,0,0\n", "line 2: probabilities sum to 0.9"),
        ("ID,p_ang,p_hap,p_neu,p_sad\nu1,1,0,0,0\nu1,1,0,0,0\n", "line 3: ID u1 repeats"),
        ("ID,p_ang,p_hap,p_neu,p_sad\nu2,1,0,0,0\n", "no soft target for 1 training"),
    ],
)
def test_bad_targets_are_clear_errors_naming_the_file(tmp_path, text, message):
    teacher = targets_file(tmp_path, text)
    with pytest.raises(ValueError, match=message) as err:
        teacher.load(LABELS, ["u1"])
    assert str(tmp_path / "fold1" / "teacher.csv") in str(err.value)


def test_misuse_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no soft targets"):
        TeacherTargets(str(tmp_path), fold=2).load(LABELS, [])
    for bad in (-0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="weight must be in"):
            TeacherTargets(weight=bad)
    for bad in (0, -1.0, None, True, float("inf")):
        with pytest.raises(ValueError, match="temperature must be finite and > 0"):
            TeacherTargets(temperature=bad)
    with pytest.raises(RuntimeError, match="call load"):
        TeacherTargets(str(tmp_path)).targets(["u1"])
    teacher = targets_file(tmp_path, "ID,p_ang,p_hap,p_neu,p_sad\nu1,1,0,0,0\n")
    teacher.load(LABELS, ["u1"])
    with pytest.raises(KeyError, match="no soft target for u9"):
        teacher.targets(["u1", "u9"])
    with pytest.raises(ValueError, match="3 utterances and 4 labels"):
        write_teacher_targets(str(tmp_path / "t.csv"), ["a", "b", "c"], LABELS, torch.ones(2, 4))
    assert not TeacherTargets().enabled and TeacherTargets(str(tmp_path)).enabled
    empty = targets_file(tmp_path, "ID,p_ang,p_hap,p_neu,p_sad\n")
    empty.load(LABELS, [])  # no rows, no training utterances: nothing to look up
    assert empty.targets([]).shape == (0, 4)
