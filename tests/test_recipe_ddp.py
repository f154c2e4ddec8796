"""The IEMOCAP recipe under ``torchrun --nproc_per_node=2`` with the gloo backend, on CPU.

The recipe runs through a launcher that records, on each process, the speaker statistics it
trains with, which utterances its metrics held before and after they were pooled, and what the
loss / padding reduction received and returned; the test then checks that the training data
was sharded, that the statistics and pooled metrics are identical on both processes and cover
whole sets, and that the logged loss is the mean over the processes.
"""

import csv
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from hnsd_sb.synthetic import make_synthetic_iemocap

pytestmark = pytest.mark.slow  # end-to-end runs of the recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "IEMOCAP", "hnsd")

LAUNCHER = r"""
import atexit, json, os, runpy, sys
import torch
import speechbrain.core
import speechbrain.utils.distributed as distributed
import hnsd_sb.metrics

rank = os.environ["RANK"]
dump = os.environ["DUMP_DIR"]
record = {"sync": [], "reduce": []}

fit = speechbrain.core.Brain.fit
def recording_fit(self, *args, **kwargs):
    state = self.modules.normalizer.state()
    torch.save(state, os.path.join(dump, f"normalizer{rank}.pt"))
    return fit(self, *args, **kwargs)
speechbrain.core.Brain.fit = recording_fit

sync = hnsd_sb.metrics.EmotionMetrics.sync
def recording_sync(self):
    local = list(self.ids)
    sync(self)
    record["sync"].append({"local": local, "pooled": list(self.ids)})
hnsd_sb.metrics.EmotionMetrics.sync = recording_sync

all_reduce = distributed.ddp_all_reduce
def recording_all_reduce(tensor, op):
    sent = tensor.tolist()
    out = all_reduce(tensor, op)
    record["reduce"].append({"sent": sent, "got": out.tolist()})
    return out
distributed.ddp_all_reduce = recording_all_reduce

def save():
    with open(os.path.join(dump, f"record{rank}.json"), "w") as f:
        json.dump(record, f)
atexit.register(save)

sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def torchrun(*args, **env):
    """Runs ``args`` (the recipe's train.py and its arguments, after an optional launcher) in
    two processes under torchrun with the gloo backend; returns the exit status and output."""
    # torchrun ends the other processes soon after one fails: give them 5 s to finish first
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["--monitor-interval=5"]
    cmd += [*map(str, args), "--distributed_backend=gloo", "--lstm_size=16", "--fc_size=8"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **env)
    proc = subprocess.run(
        cmd + ["--num_workers=0"], cwd=RECIPE, env=env, capture_output=True, text=True, timeout=300
    )
    # without the progress bars' lines, so that a failure's message shows what went wrong
    lines = (proc.stdout + proc.stderr).replace("\r", "\n").splitlines()
    text = "\n".join(line for line in lines if not re.search(r"(it/s|s/it)[,\]]", line))
    return proc.returncode, text


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    corpus = tmp / "IEMOCAP_full_release"
    make_synthetic_iemocap(corpus, n_sessions=5, utterances_per_emotion=2, dropped_per_speaker=0)
    launcher, dump, out = tmp / "launcher.py", tmp / "dump", tmp / "out"
    launcher.write_text(LAUNCHER)
    dump.mkdir()
    code, output = torchrun(
        launcher,
        "train.py",
        "hparams/hnsd.yaml",
        f"--data_folder={corpus}",
        f"--output_folder={out}",
        "--number_of_epochs=2",
        "--lr=0.01",
        DUMP_DIR=str(dump),
    )
    assert code == 0, output[-4000:]
    records = [json.loads((dump / f"record{rank}.json").read_text()) for rank in (0, 1)]
    return out, dump, records, output


def ids(out, split):
    with open(out / f"{split}.csv", newline="", encoding="utf-8") as f:
        return {row["ID"] for row in csv.DictReader(f)}


def test_data_prep_runs_once(ddp_run):
    out, _, _, output = ddp_run
    assert output.count("IEMOCAP train: ") == 1  # data prep's summary, main process only
    assert len(ids(out, "train")) == 56


def test_speaker_statistics_identical_on_all_processes(ddp_run):
    _, dump, _, _ = ddp_run
    states = [torch.load(dump / f"normalizer{rank}.pt") for rank in (0, 1)]
    assert states[0]["speakers"] == states[1]["speakers"] and len(states[0]["speakers"]) == 10
    for key in ("count", "sum", "sumsq"):
        assert torch.equal(states[0][key], states[1][key])


def test_training_data_is_sharded_and_metrics_pooled(ddp_run):
    out, _, records, _ = ddp_run
    train, valid, test = ids(out, "train"), ids(out, "valid"), ids(out, "test")
    syncs = [r["sync"] for r in records]
    # Per epoch: train then valid; then the chosen checkpoint on valid, and the test stage.
    expected = [train, valid, train, valid, valid, test]
    assert [len(s) for s in syncs] == [len(expected)] * 2
    for stage, full in enumerate(expected):
        local = [set(s[stage]["local"]) for s in syncs]
        pooled = [s[stage]["pooled"] for s in syncs]
        assert pooled[0] == pooled[1]  # the same figures on every process
        assert set(pooled[0]) == full and len(pooled[0]) == len(full)  # whole set, once each
        if full is train:  # each process trained on a part of the data
            assert local[0] | local[1] == train
            assert local[0] != train and local[1] != train
            assert len(local[0] & local[1]) < len(train) // 4  # padding repeats at most
    results = json.loads((out / "test_results.json").read_text())
    assert results["n"] == len(test)
    assert json.loads((out / "valid_results.json").read_text())["n"] == len(valid)


def test_loss_and_padding_are_averaged_over_processes(ddp_run):
    out, _, records, _ = ddp_run
    reduces = [r["reduce"] for r in records]
    assert len(reduces[0]) == len(reduces[1]) == 6  # train, valid (twice); valid, test
    for a, b in zip(*reduces):
        assert a["got"] == b["got"]
        assert a["got"] == pytest.approx([x + y for x, y in zip(a["sent"], b["sent"])])
    # The train losses of the two shards differ; the log shows their mean.
    logged = re.findall(
        r"epoch: \d+, .*train loss: ([\d.e+-]+),", (out / "train_log.txt").read_text()
    )
    assert len(logged) == 2
    for epoch, stage in enumerate((0, 2)):
        loss0, loss1 = reduces[0][stage]["sent"][0], reduces[1][stage]["sent"][0]
        assert loss0 != loss1
        assert float(logged[epoch]) == pytest.approx((loss0 + loss1) / 2, abs=0.006)


@pytest.mark.parametrize("bad", ["json", "csv"])
def test_a_bad_manifest_stops_every_process_with_its_message(tmp_path, bad):
    """Under torchrun the main process checks the manifests; a bad one (an annotation that is
    not JSON, a row whose file is gone) must stop every process with the same message, at
    once: no process may wait at a broadcast for a main process that has stopped."""
    empty = tmp_path / "empty.csv"  # valid and test (reported too where train is checked)
    empty.write_text("ID,duration,wav,spk_id,emo\n")
    if bad == "json":
        manifest, reason = tmp_path / "train.json", "not a UTF-8 JSON file"
        manifest.write_text("{ this is not json")
    else:
        manifest, reason = tmp_path / "train.csv", "gone.wav: file not found"
        manifest.write_text(f"ID,duration,wav,spk_id,emo\nu1,2.0,{tmp_path}/gone.wav,s1,neu\n")
    code, output = torchrun(
        "train.py",
        "hparams/hnsd.yaml",
        f"--data_folder={tmp_path}",
        f"--output_folder={tmp_path / 'out'}",
        "--prepare_data=null",
        f"--train_annotation={manifest}",
        f"--valid_annotation={empty}",
        f"--test_annotation={empty}",
    )
    assert code != 0, output[-4000:]
    assert str(manifest) in output and reason in output, output[-4000:]
    # Each process got the message and stopped on it (no traceback of its own), not on the
    # other one's disappearance.
    assert output.count(reason) == 2, output[-4000:]
    assert "[rank0]: Traceback" not in output and "[rank1]: Traceback" not in output


def one_improved_epoch(tmp_path, *args):
    """Trains ``hnsd_improved.yaml`` with ``args`` for one epoch under torchrun on a synthetic
    corpus (two processes); fails the test unless it ends well. Returns the output folder."""
    corpus = tmp_path / "IEMOCAP_full_release"
    make_synthetic_iemocap(corpus, n_sessions=5, utterances_per_emotion=2, dropped_per_speaker=0)
    out = tmp_path / "out"
    code, output = torchrun(
        "train.py",
        "hparams/hnsd_improved.yaml",
        f"--data_folder={corpus}",
        f"--output_folder={out}",
        "--number_of_epochs=1",
        *args,
    )
    assert code == 0, output[-4000:]
    return out


def test_speaker_adversary_trains_under_torchrun(tmp_path):
    """``--adversary_weight``: the speaker head, added to the modules at run time, is wrapped
    and trained with the model under torchrun; its loss and accuracy reach the log, and it is
    checkpointed beside the model."""
    out = one_improved_epoch(tmp_path, "--adversary_weight=0.3")
    with open(out / "train.csv", newline="", encoding="utf-8") as f:
        speakers = {row["spk_id"] for row in csv.DictReader(f)}
    log = (out / "log.txt").read_text()
    assert f"Speaker adversary over {len(speakers)} training speakers" in log
    epoch = (out / "train_log.txt").read_text().splitlines()[0]
    assert re.search(r"train speaker_loss: [\d.e+-]+, train speaker_acc: [\d.]+ ", epoch)
    checkpoints = list((out / "save").glob("CKPT*/speaker_adversary.ckpt"))
    assert checkpoints and (out / "test_results.json").exists()


def test_vector_normalization_runs_under_torchrun(tmp_path):
    """``--vector_normalization=True`` runs to the end under torchrun, with statistics for
    every speaker of each split, and the main process saves those of every speaker (once) for
    ``hnsd export``."""
    out = one_improved_epoch(tmp_path, "--vector_normalization=True")
    log = (out / "log.txt").read_text()
    for split in ("train", "valid", "test"):
        with open(out / f"{split}.csv", newline="", encoding="utf-8") as f:
            speakers = {row["spk_id"] for row in csv.DictReader(f)}
        assert f"Pooled-vector statistics of {len(speakers)} speakers ({split})" in log
    assert (out / "test_results.json").exists()
    assert log.count("(model folder)") == 1
    assert len(list((out / "save").glob("CKPT*/vector_normalizer.ckpt"))) == 1
