"""Interrupted and repeated runs of the IEMOCAP recipe: kill -9 at chosen points, then rerun.

Each killed run is the recipe's own ``train.py`` run by a small launcher that sends itself
SIGKILL at a chosen point (during the speaker statistics, after an optimizer step, or half-way
through writing a checkpoint file). Rerunning the plain command must resume from the last
complete checkpoint and end with the same test WA/UA, predictions and weights as a run that was
never interrupted; two uninterrupted runs with the same seed must agree bit for bit.
"""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from hnsd_sb.checkpoints import AtomicCheckpointer, checkpoint_problem
from hnsd_sb.synthetic import make_synthetic_iemocap

pytestmark = pytest.mark.slow  # end-to-end runs of the recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "IEMOCAP", "hnsd")
# Tiny model, a learning rate that moves the weights, 16 batches per epoch and a checkpoint every
# 4 steps (steps 4, 8, 12 and 16, then the end-of-epoch one: 5 saves of 3 tensor files each).
OPTIONS = [
    "hparams/hnsd.yaml",
    "--number_of_epochs=2",
    "--lstm_size=16",
    "--fc_size=8",
    "--num_workers=0",
    "--lr=0.01",
    "--dynamic_batch_sampler={max_batch_length: 25, num_buckets: 40}",  # pinned: 16 batches
    "--ckpt_interval_minutes=0",
    "--ckpt_interval_steps=4",
]

# Runs train.py (argv[1:]) in this process and SIGKILLs it at KILL_AT:
#   stats:N  in the N-th batch of the speaker statistics pass (before any checkpoint)
#   step:N   right after the N-th optimizer step
#   save:N   half-way through writing the N-th tensor file of a checkpoint
LAUNCHER = r"""
import io, os, runpy, signal, sys
import torch
import hnsd_sb.normalization

where, count = os.environ["KILL_AT"].split(":")
count, calls = int(count), [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def counted(original, hit):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == count:
            hit(*args, **kwargs)
        return original(*args, **kwargs)
    return wrapper

if where == "stats":
    cls = hnsd_sb.normalization.SpeakerNormalization
    cls.accumulate = counted(cls.accumulate, lambda *a, **k: die())
elif where == "step":
    original_step = torch.optim.Adam.step
    def step(self, *args, **kwargs):
        out = original_step(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == count:
            die()
        return out
    torch.optim.Adam.step = step
elif where == "save":
    original_save = torch.save
    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and "CKPT+" in str(f):
            calls[0] += 1
            if calls[0] == count:
                buffer = io.BytesIO()
                original_save(obj, buffer, *args, **kwargs)
                with open(f, "wb") as out:
                    out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                die()
        return original_save(obj, f, *args, **kwargs)
    torch.save = save

sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(args, kill_at=None, launcher=None):
    """Runs train.py on one thread; returns (return code, output)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "train.py", *args]
    if kill_at is not None:
        env["KILL_AT"] = kill_at
    if launcher is not None:
        cmd = [sys.executable, str(launcher), *cmd[1:]]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def run_ok(args):
    code, output = run(args)
    assert code == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release"
    make_synthetic_iemocap(root, n_sessions=5, utterances_per_emotion=2, dropped_per_speaker=0)
    return root


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    path = tmp_path_factory.mktemp("launcher") / "kill_at.py"
    path.write_text(LAUNCHER)
    return path


def command(corpus, out):
    return [*OPTIONS[:1], f"--data_folder={corpus}", f"--output_folder={out}", *OPTIONS[1:]]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    run_ok(command(corpus, out))
    return out


def last_checkpoint(out):
    """The latest end-of-epoch checkpoint folder of a run."""
    ckpts = AtomicCheckpointer(out / "save").find_checkpoints(
        max_num_checkpoints=None, ckpt_predicate=lambda c: c.meta["end-of-epoch"]
    )
    return max(ckpts, key=lambda c: c.meta["unixtime"]).path


def epoch_stats(out):
    """Per epoch, the loss and validation statistics of its last log line (a killed run may
    have logged an epoch that the rerun logs again)."""
    stats = {}
    for line in open(out / "train_log.txt", encoding="utf-8"):
        found = re.match(r"epoch: (\d+), .*train loss: ([\d.e+-]+), .*( - valid .*)$", line)
        if found:
            stats[int(found[1])] = (found[2], found[3])
    return stats


def assert_same_results(out, reference):
    """Same test results, predictions, validation statistics and final weights."""
    assert (out / "predictions.csv").read_text() == (reference / "predictions.csv").read_text()
    results, expected = (
        json.loads((d / "test_results.json").read_text()) for d in (out, reference)
    )
    assert results.pop("command") != expected.pop("command")  # their output folders differ
    assert results == expected
    assert epoch_stats(out) == epoch_stats(reference)
    assert sorted(epoch_stats(out)) == [1, 2]
    final, expected = last_checkpoint(out), last_checkpoint(reference)
    for name in ("model.ckpt", "normalizer.ckpt", "optimizer.ckpt"):
        a, b = torch.load(final / name), torch.load(expected / name)
        assert repr(a) == repr(b), name  # every tensor and value, bit for bit in the repr
        if name == "model.ckpt":
            assert all(torch.equal(a[k], b[k]) for k in b) and a.keys() == b.keys()
    for name in ("counter.ckpt", "brain.ckpt"):
        assert (final / name).read_text() == (expected / name).read_text(), name


def test_two_runs_with_the_same_seed_agree(corpus, reference, tmp_path):
    run_ok(command(corpus, tmp_path))
    assert_same_results(tmp_path, reference)
    results = json.loads((tmp_path / "test_results.json").read_text())
    assert results["n"] == 16


# Runs train.py (argv[1:]) in this process, counting the calls that give memory back to the system
COUNTING_LAUNCHER = r"""
import atexit, runpy, sys
import hnsd_sb.host_memory as host_memory

calls, original = [0], host_memory.release_freed_memory
def counted():
    calls[0] += 1
    return original()
host_memory.release_freed_memory = counted  # before train.py imports it
atexit.register(lambda: print(f"release calls: {calls[0]}"))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_releasing_memory_every_batch_changes_no_result(corpus, reference, tmp_path):
    """``--release_memory_every=1`` gives memory back after every training batch (2 epochs of 16)
    and leaves every figure, prediction and weight as in a run without it."""
    launcher = tmp_path / "count_releases.py"
    launcher.write_text(COUNTING_LAUNCHER)
    out = tmp_path / "run"
    code, output = run([*command(corpus, out), "--release_memory_every=1"], launcher=launcher)
    assert code == 0, output[-4000:]
    calls = int(re.search(r"release calls: (\d+)", output)[1])
    assert calls >= 2 * 16, output[-2000:]  # without the option: one per stage, 6 here
    assert_same_results(out, reference)


def incomplete_folders(out):
    return [p for p in (out / "save").glob("CKPT+*") if not (p / "CKPT.yaml").exists()]


def test_runs_killed_again_and_again_end_like_an_uninterrupted_one(
    corpus, reference, launcher, tmp_path
):
    """One output folder, killed five times at different points, then run to the end.

    Counts are per process: a resumed process counts its own steps and saves from 1.
    """
    args = command(corpus, tmp_path)

    def killed(kill_at):
        code, output = run(args, kill_at=kill_at, launcher=launcher)
        assert code == -signal.SIGKILL, output[-4000:]
        return output

    # During the speaker statistics, before any checkpoint: the rerun starts afresh.
    killed("stats:3")
    assert not list((tmp_path / "save").glob("CKPT+*"))
    # While writing the first checkpoint (step 4): a folder is left, but no checkpoint, so the
    # speaker statistics are computed again.
    output = killed("save:1")
    assert "Speaker statistics of 10 speakers" in output and "none found yet" in output
    assert len(incomplete_folders(tmp_path)) == 1
    # Two steps after the checkpoint of step 4 (the incomplete folder is removed by that save).
    output = killed("step:6")
    assert "Speaker statistics of 10 speakers" in output and "none found yet" in output
    assert incomplete_folders(tmp_path) == []
    # Resumes at step 5; its saves are at steps 8, 12, 16 and at the end of epoch 1, whose
    # last tensor file (the optimizer's, after the epoch was logged) it is killed writing.
    output = killed("save:12")
    assert "Loading a checkpoint from" in output and "Speaker statistics of" not in output
    assert len(incomplete_folders(tmp_path)) == 1
    # Resumes after step 16 of epoch 1 (no batch left), validates, logs epoch 1 again, saves,
    # then is killed at step 7 of epoch 2, three steps after a checkpoint.
    output = killed("step:7")
    assert "Loading a checkpoint from" in output and "Going into epoch 2" in output
    # The same command as the first run, to the end.
    output = run_ok(args)
    assert "Loading a checkpoint from" in output and "Speaker statistics of" not in output
    assert incomplete_folders(tmp_path) == []
    assert_same_results(tmp_path, reference)


def test_checkpoint_cut_short_by_a_kill_during_deletion_is_ignored(tmp_path):
    """SpeechBrain deletes old checkpoints with rmtree: a kill can leave CKPT.yaml without some
    of the files. Such a folder is neither found nor loaded, and the next save removes it."""
    model = torch.nn.Linear(3, 2)
    checkpointer = AtomicCheckpointer(tmp_path, {"model": model})
    best = checkpointer.save_checkpoint(meta={"UA": 0.9}, end_of_epoch=True)
    latest = checkpointer.save_checkpoint(meta={"UA": 0.5}, end_of_epoch=True)
    (best.path / "model.ckpt").unlink()  # half-deleted
    assert checkpointer.find_checkpoint(max_key="UA").path == latest.path
    checkpointer.save_checkpoint(meta={"UA": 0.4}, end_of_epoch=True)
    folders = list(tmp_path.glob("CKPT+*"))
    assert len(folders) == 2 and all(checkpoint_problem(p) is None for p in folders)
    assert [c.meta["UA"] for c in checkpointer.find_checkpoints(max_key="UA")] == [0.5, 0.4]
    # Checkpoints written by SpeechBrain's own Checkpointer (no file list) still load.
    from speechbrain.utils.checkpoints import Checkpointer

    plain = Checkpointer(tmp_path / "plain", {"model": model}).save_checkpoint(meta={"UA": 1.0})
    found = AtomicCheckpointer(tmp_path / "plain", {"model": model}).recover_if_possible()
    assert found.path == plain.path


def test_weight_average_is_scored_checkpointed_resumed_and_exported(corpus, launcher, tmp_path):
    """With ``average_epochs`` the average is what validation and test score: it is kept in
    every checkpoint, so a killed run resumes to the same average, and ``find_model_file`` and
    ``hnsd export`` take it rather than the last trained weights."""
    from hnsd_sb.export import export_model
    from hnsd_sb.weights import find_model_file

    def averaged_command(out):
        return [*command(corpus, out), "--average_epochs=1"]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_ok(averaged_command(whole))
    code, output = run(averaged_command(killed), kill_at="step:6", launcher=launcher)
    assert code == -signal.SIGKILL, output[-4000:]
    output = run_ok(averaged_command(killed))
    assert "Loading a checkpoint from" in output
    assert_same_results(killed, whole)
    final = last_checkpoint(killed)
    averaged = torch.load(final / "averaged_model.ckpt")
    uninterrupted = torch.load(last_checkpoint(whole) / "averaged_model.ckpt")
    assert averaged.keys() == uninterrupted.keys()
    assert all(torch.equal(averaged[k], uninterrupted[k]) for k in averaged)  # bit for bit
    trained = torch.load(final / "model.ckpt")
    assert averaged.keys() == trained.keys()
    assert not all(torch.equal(averaged[k], trained[k]) for k in trained)  # a real average
    # Exports and fine-tuning start from the average of the best checkpoint.
    best = find_model_file(killed)
    assert best.endswith("averaged_model.ckpt")
    folder = export_model(killed, tmp_path / "model")
    exported = torch.load(folder / "model.ckpt")
    assert all(torch.equal(exported[k], v) for k, v in torch.load(best).items())
