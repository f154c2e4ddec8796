#!/usr/bin/env python3
"""Performance benchmark of HNSD on CPU: training against the bare-LSTM floor, padding,
inference latency and throughput, peak memory, and SpeechBrain's ECAPA-TDNN emotion model.

Figures that are compared (a training step and its floor, a throughput and the matmul rate) are
timed in one run on the same input, interleaved, several times, and each keeps its fastest
repetition (the usual estimate on a machine shared with other jobs); rates that are compared
are sustained over similar spans of time.

- matmul: sustained fp32 ``[1024 x 1024] @ [1024 x 1024]`` products through PyTorch's two CPU
  GEMM back ends, MKL (``torch.mm``) and oneDNN, as one product on all cores and as one product
  per core at once; the machine's rate is the best of the four.
- floor: HNSD's two bare LSTMs (26 and 52 inputs, 512 units) forward and backward on exactly the
  padded batches of the training step, side by side with half the cores each (on 2 cores, one
  LSTM per core), in seconds of real audio per second. ``--sequential-floor`` also times them
  one after the other on all cores (much slower on 2 cores, so it is off by default).
- training step: the recipe's own ``EmotionBrain.fit_batch`` (features, speaker normalisation,
  model, loss, backward, Adam step) with the recipe's hparams, fed by the recipe's data pipeline
  and DataLoader (WAV files decoded by its worker processes, which live through the run as
  through an epoch), on a stratified sample of one epoch's batches; the bound is what the step
  would reach if the GMU, attention and classifier ran as efficiently as the LSTMs (LSTM FLOPs /
  model FLOPs).
- padding: padded frames / all frames over one epoch of the recipe's ``DynamicBatchSampler`` on
  an IEMOCAP-like training set (4400 utterances, log-normal durations: mean 4.5 s, std 3.2 s,
  0.6 s to 30 s); also the evaluation batching (sorted, ``test_dataloader_opts``).
- inference: waveform to log-probabilities (features included) for one utterance of 2, 5 and
  20 s (real-time factor), and for a test-like set batched as the recipe evaluates: the model's
  FLOPs on real frames per second as a fraction of the matmul rate. The same for the bare LSTMs
  alone shows what the hardware allows (at batch 1 an LSTM step streams its 4 MB of recurrent
  weights from L3 cache for 1 M multiply-adds: memory-bound).
- memory: peak RSS of a separate training process (recipe settings) over the epoch's two largest
  batches and its first 24 batches in training order (10 with ``--quick``), and the peak
  proportional set size of that process with its DataLoader workers.
- ECAPA-TDNN: SpeechBrain's IEMOCAP emotion recipe (``recipes/IEMOCAP/emotion_recognition``,
  ``hparams/train.yaml``: 80 log-Mel, sentence mean normalisation, channels 512-512-512-512-1536,
  attention 64, 96-d embedding, cosine classifier), random weights, same inference timings.

Run from the repository root. On 2 cores with ``--threads 1 --branch-cores 2`` it takes about 2
minutes idle and 3 under load (``--quick``: about 1); with PyTorch's default threads a loaded
machine can stretch it past 5 minutes (its multi-threaded small operations stall):

> python benchmarks/bench_hnsd.py
> python benchmarks/bench_hnsd.py --threads 1 --branch-cores 2 --label "after, 1 thread"

It prints a table and writes ``benchmarks/RESULTS.json`` and ``benchmarks/RESULTS.md``, keeping the
results of earlier runs under other ``--label`` s so the table shows before and after
(``--root`` measures another checkout, e.g. the code before the optimisations).
"""

import argparse
import datetime
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soundfile as sf
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE_RATE = 16000
HOP = 160  # 10 ms
TARGETS = {
    "train_vs_floor": (">=", 0.90),
    "padding_train": ("<", 0.03),
    "rtf_5s": ("<=", 0.005),
    "batched_vs_matmul": (">=", 0.85),
    "train_peak_rss_gib": ("<", 4.0),
}


def n_frames(seconds):
    """Frames of a centred STFT with a 10 ms hop at 16 kHz.

    Arguments
    ---------
    seconds : float or numpy.ndarray
        Durations.

    Returns
    -------
    int or numpy.ndarray
        ``1 + samples // 160``.

    Example
    -------
    >>> int(n_frames(1.0)), int(n_frames(0.0101))
    (101, 2)
    """
    return np.round(np.asarray(seconds) * SAMPLE_RATE).astype(np.int64) // HOP + 1


def iemocap_like_durations(n, seed):
    """Utterance durations shaped like IEMOCAP's (log-normal, mean 4.5 s, std 3.2 s).

    Arguments
    ---------
    n : int
        Number of utterances.
    seed : int
        Random seed.

    Returns
    -------
    numpy.ndarray
        Durations in seconds, clipped to [0.6, 30], rounded to whole samples.

    Example
    -------
    >>> d = iemocap_like_durations(4400, 0)
    >>> bool(4.2 < d.mean() < 4.8), bool(d.min() >= 0.6), bool(d.max() <= 30.0)
    (True, True, True)
    """
    sigma = 0.65
    rng = np.random.default_rng(seed)
    d = rng.lognormal(np.log(4.5) - sigma**2 / 2, sigma, n)
    return np.round(np.clip(d, 0.6, 30.0) * SAMPLE_RATE) / SAMPLE_RATE


def padding_waste(batches, durations):
    """Padded frames / all frames of a list of batches.

    Arguments
    ---------
    batches : list of list of int
        Indices into ``durations``.
    durations : numpy.ndarray
        Durations in seconds.

    Returns
    -------
    float
        Fraction of the frames the batches hold that are padding.

    Example
    -------
    >>> padding_waste([[0, 1]], np.array([1.0, 0.5]))
    0.2475...
    """
    frames = n_frames(durations)
    padded = total = 0
    for batch in batches:
        f = frames[batch]
        total += len(batch) * f.max()
        padded += (f.max() - f).sum()
    return float(padded / total)


def best_time(fn, reps, warmup=1):
    """Fastest of ``reps`` timed calls of ``fn`` after ``warmup`` untimed ones (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_name():
    """The CPU's model name from /proc/cpuinfo (or the platform's)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ----------------------------------------------------------------------------------------------
# matmul rate
# ----------------------------------------------------------------------------------------------
def onednn_matmul():
    """A function ``f(a, b) = a @ b`` running on oneDNN, or None where PyTorch has none."""
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return None
    try:
        a = torch.randn(8, 4)
        b = torch.randn(4, 3)
        if not torch.allclose(op(a, b.t(), None, "none", [], ""), a @ b, atol=1e-5):
            return None
    except (RuntimeError, TypeError):
        return None
    return lambda a, b: op(a, b.t(), None, "none", [], "")


def rate_for(fn, flops, seconds):
    """Sustained GFLOP/s of back-to-back calls of ``fn`` (each ``flops``) for about ``seconds``."""
    fn()
    start, calls = time.perf_counter(), 0
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * flops / elapsed / 1e9


def matmul_rates(size, seconds, cores):
    """Sustained fp32 GFLOP/s of square matmuls on ``cores`` cores, through MKL and (where
    present) oneDNN, as one product with ``cores`` threads and as one single-threaded product
    per core at once (the better of the two counts). Sustained over ``seconds`` rather than the
    fastest single product, so that it compares fairly with the model's sustained rate.

    Returns
    -------
    dict
        ``{"mkl": GFLOP/s, "onednn": GFLOP/s}``.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    flops = 2 * size**3
    backends = {"mkl": torch.mm}
    dnn = onednn_matmul()
    if dnn is not None:
        backends["onednn"] = dnn
    restore = torch.get_num_threads()
    rates = {}
    for name, mm in backends.items():
        torch.set_num_threads(cores)
        try:
            one = rate_for(lambda mm=mm: mm(a, b), flops, seconds)
        finally:
            torch.set_num_threads(restore)
        many = []
        if cores > 1:

            def worker(mm=mm, out=many):
                """One core's share of the concurrent matrix products."""
                torch.set_num_threads(1)
                out.append(rate_for(lambda: mm(a, b), flops, seconds))

            threads = [threading.Thread(target=worker) for _ in range(cores)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        rates[name] = max(one, sum(many))
    return rates


# ----------------------------------------------------------------------------------------------
# recipe set-up
# ----------------------------------------------------------------------------------------------
def load_recipe(root, workdir, overrides=None):
    """Imports the recipe's ``train.py`` and loads ``hparams/hnsd.yaml`` for a run in workdir."""
    from hyperpyyaml import load_hyperpyyaml

    recipe_dir = os.path.join(root, "recipes", "IEMOCAP", "hnsd")
    if recipe_dir not in sys.path:
        sys.path.insert(0, recipe_dir)
    import train as recipe

    over = {"data_folder": workdir, "output_folder": os.path.join(workdir, "out")}
    over.update(overrides or {})
    with open(os.path.join(recipe_dir, "hparams", "hnsd.yaml"), encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, over)
    if hparams.get("cpu_fast_paths", False):  # as train.py does
        from hnsd_sb.cpu import accelerate

        accelerate(hparams["model"])
    return recipe, hparams


def write_corpus(folder, durations, hparams, seed=0):
    """Writes noise-like 16-bit WAVs and the recipe's CSV manifests (ID, duration, wav, spk_id,
    emo); the utterances are spread over 8 speakers and the 4 classes."""
    os.makedirs(hparams["output_folder"], exist_ok=True)
    rng = np.random.default_rng(seed)
    emotions = ("neu", "ang", "sad", "hap")
    rows = []
    for i, dur in enumerate(durations):
        n = int(round(dur * SAMPLE_RATE))
        envelope = 0.05 + 0.2 * np.abs(np.sin(np.arange(n) * (2 * np.pi * 3 / SAMPLE_RATE)))
        wav = (rng.standard_normal(n) * envelope).clip(-1, 1)
        path = os.path.join(folder, f"utt{i:05d}.wav")
        sf.write(path, wav, SAMPLE_RATE, subtype="PCM_16")
        rows.append(f"utt{i:05d},{n / SAMPLE_RATE:.5f},{path},spk{i % 8},{emotions[i % 4]}")
    for split in ("train", "valid", "test"):
        with open(hparams[f"{split}_annotation"], "w", encoding="utf-8") as f:
            f.write("ID,duration,wav,spk_id,emo\n" + "\n".join(rows) + "\n")


def make_brain(recipe, hparams):
    """The recipe's ``EmotionBrain``, ready for ``fit_batch`` (as ``fit`` leaves it)."""
    import speechbrain as sb

    manifests = {split: hparams[f"{split}_annotation"] for split in ("train", "valid", "test")}
    if "manifests" in inspect.signature(recipe.dataio_prepare).parameters:
        datasets, label_encoder = recipe.dataio_prepare(hparams, manifests)
    else:  # the recipe before its manifest checks
        datasets, label_encoder = recipe.dataio_prepare(hparams)
    brain = recipe.EmotionBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
        checkpointer=hparams["checkpointer"],
    )
    brain.label_encoder = label_encoder
    brain.fit_normalizer([datasets["train"]])
    brain.on_fit_start()
    brain.modules.train()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    return brain, datasets["train"]


def train_pass(brain, dataset, batches, num_workers):
    """One pass of the recipe's training step over ``batches``, data loading included."""
    import speechbrain as sb

    start = time.perf_counter()
    loader = brain.make_dataloader(
        dataset,
        stage=sb.Stage.TRAIN,
        ckpt_prefix=None,
        batch_sampler=batches,
        num_workers=num_workers,
    )
    for batch in loader:
        brain.step += 1
        brain.fit_batch(batch)
    return time.perf_counter() - start


class EpochFeed:
    """One DataLoader over ``passes`` repetitions of ``batches``, as the recipe's loader is over an
    epoch: its worker processes start once and keep prefetching while the batches are consumed,
    so the once-an-epoch start (a fork, about 0.5 s, spread over ~300 batches in a real epoch)
    does not weigh on a handful of batches."""

    def __init__(self, brain, dataset, batches, num_workers, passes):
        import speechbrain as sb

        self.brain, self.n = brain, len(batches)
        loader = brain.make_dataloader(
            dataset,
            stage=sb.Stage.TRAIN,
            ckpt_prefix=None,
            batch_sampler=[b for _ in range(passes) for b in batches],
            num_workers=num_workers,
        )
        self.batches = iter(loader)

    def train_pass(self):
        """The recipe's training step on the next pass over the batches; returns seconds."""
        start = time.perf_counter()
        for _ in range(self.n):
            self.brain.step += 1
            self.brain.fit_batch(next(self.batches))
        return time.perf_counter() - start


def recipe_batches(hparams, durations, epoch_seed):
    """One epoch of the recipe's ``DynamicBatchSampler`` over utterances of these durations."""
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.dataio.sampler import DynamicBatchSampler

    data = DynamicItemDataset({f"u{i}": {"duration": float(d)} for i, d in enumerate(durations)})
    opts = dict(hparams["dynamic_batch_sampler"])
    opts["seed"] = epoch_seed
    sampler = DynamicBatchSampler(data, **opts)
    return [[int(i) for i in batch] for batch in sampler]


def pick_batches(batches, durations, k):
    """k batches at evenly spaced quantiles of the epoch's batch lengths (a stratified sample).

    Arguments
    ---------
    batches : list of list of int
        An epoch of batches (indices into ``durations``).
    durations : numpy.ndarray
        Utterance durations in seconds.
    k : int
        Number of batches to pick.

    Returns
    -------
    list of list of int
        The picked batches, shortest first.

    Example
    -------
    >>> pick_batches([[0], [1], [2], [3]], np.array([1.0, 4.0, 2.0, 3.0]), 2)
    [[2], [1]]
    """
    frames = n_frames(durations)
    order = sorted(range(len(batches)), key=lambda b: frames[batches[b]].max())
    return [batches[order[int((i + 0.5) * len(order) / k)]] for i in range(k)]


def largest_batches(batches, durations):
    """The batch with the most padded frames and the one with the longest utterance."""
    frames = n_frames(durations)
    size = max(batches, key=lambda b: len(b) * frames[b].max())
    longest = max(batches, key=lambda b: frames[b].max())
    return [size] if size == longest else [size, longest]


# ----------------------------------------------------------------------------------------------
# floor: the bare LSTMs
# ----------------------------------------------------------------------------------------------
class LSTMFloor:
    """The two bare LSTMs of HNSD, forward and backward on given batch shapes."""

    def __init__(self, shapes, hidden=512, n_static=26, n_dynamic=52):
        gen = torch.Generator().manual_seed(0)
        self.static = torch.nn.LSTM(n_static, hidden, batch_first=True)
        self.dynamic = torch.nn.LSTM(n_dynamic, hidden, batch_first=True)
        self.inputs = [
            (
                torch.randn(b, t, n_static, generator=gen),
                torch.randn(b, t, n_dynamic, generator=gen),
            )
            for b, t in shapes
        ]

    @staticmethod
    def _run(lstm, x):
        lstm.zero_grad(set_to_none=True)
        lstm(x)[0].sum().backward()

    def sequential(self, cores):
        """Both LSTMs, one after the other, each with ``cores`` intra-op threads."""
        restore = torch.get_num_threads()
        torch.set_num_threads(cores)
        try:
            for xs, xd in self.inputs:
                self._run(self.static, xs)
                self._run(self.dynamic, xd)
        finally:
            torch.set_num_threads(restore)

    def side_by_side(self, cores):
        """Each LSTM on its own thread with half the cores, through all batches (no sync)."""
        restore = torch.get_num_threads()
        share = max(1, cores // 2)

        def worker(lstm, index):
            """Runs one LSTM on its share of the cores."""
            torch.set_num_threads(share)
            for pair in self.inputs:
                self._run(lstm, pair[index])

        other = threading.Thread(target=worker, args=(self.dynamic, 1))
        other.start()
        try:
            worker(self.static, 0)
        finally:
            other.join()
            torch.set_num_threads(restore)


class BareLSTMInference:
    """HNSD's two bare LSTMs as an inference "pipeline": for each waveform batch, the LSTMs'
    forward pass on random frames of the batch's shape, side by side with half the cores each.
    No features, GMU, attention or classifier: the floor under HNSD's inference cost."""

    def __init__(self, cores, hidden=512, n_static=26, n_dynamic=52):
        self.static = torch.nn.LSTM(n_static, hidden, batch_first=True).eval()
        self.dynamic = torch.nn.LSTM(n_dynamic, hidden, batch_first=True).eval()
        self.share = max(1, cores // 2)
        self.inputs = {}
        self.pool = ThreadPoolExecutor(1)
        self.flops_per_frame = 2 * sum(
            p.numel()
            for m in (self.static, self.dynamic)
            for n, p in m.named_parameters()
            if n.startswith("weight_")
        )

    def _run(self, lstm, x):
        restore = torch.get_num_threads()
        torch.set_num_threads(self.share)
        try:
            with torch.no_grad():
                lstm(x)
        finally:
            torch.set_num_threads(restore)

    def __call__(self, wavs, wav_lens):
        key = (wavs.shape[0], int(n_frames(wavs.shape[1] / SAMPLE_RATE)))
        if key not in self.inputs:
            self.inputs[key] = (torch.randn(*key, 26), torch.randn(*key, 52))
        xs, xd = self.inputs[key]
        other = self.pool.submit(self._run, self.dynamic, xd)
        self._run(self.static, xs)
        other.result()


# ----------------------------------------------------------------------------------------------
# inference
# ----------------------------------------------------------------------------------------------
def hnsd_pipeline(hparams):
    """Waveforms -> log-probabilities, as the recipe's ``compute_forward`` (eval, no grad)."""
    from hnsd_sb.pipeline import classify

    features = hparams["features"].eval()
    normalizer = hparams["normalizer"].eval()
    model = hparams["model"].eval()

    def infer(wavs, wav_lens):
        """Log-probabilities of a batch (eval, no grad)."""
        with torch.no_grad():
            return classify(features, normalizer, model, wavs, wav_lens)[0]

    return infer


def hnsd_flops_per_frame(model):
    """FLOPs per real frame of HNSD's matrix products (LSTMs, GMU, attention)."""
    macs = 0
    for module in model.modules():
        if isinstance(module, torch.nn.LSTM):
            for name, p in module.named_parameters():
                if name.startswith("weight_"):
                    macs += p.numel()
    fusion = getattr(model, "fusion", None)
    if fusion is not None:
        macs += sum(p.numel() for n, p in fusion.named_parameters() if n.endswith("weight"))
    macs += sum(p.numel() for n, p in model.pooling.named_parameters() if n.endswith("weight"))
    return 2 * macs


def ecapa_pipeline(seed=0):
    """SpeechBrain's IEMOCAP ECAPA-TDNN emotion recipe (hparams/train.yaml), random weights."""
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.processing.features import InputNormalization

    torch.manual_seed(seed)
    compute_features = Fbank(n_mels=80, left_frames=0, right_frames=0, deltas=False)
    mean_var_norm = InputNormalization(norm_type="sentence", std_norm=False)
    embedding_model = ECAPA_TDNN(
        input_size=80,
        channels=[512, 512, 512, 512, 1536],
        kernel_sizes=[5, 3, 3, 3, 1],
        dilations=[1, 2, 3, 4, 1],
        attention_channels=64,
        lin_neurons=96,
    ).eval()
    classifier = Classifier(input_size=96, out_neurons=4).eval()
    mean_var_norm.eval()

    def infer(wavs, wav_lens):
        """ECAPA-TDNN's class scores of a batch (eval, no grad)."""
        with torch.no_grad():
            feats = compute_features(wavs)
            feats = mean_var_norm(feats, wav_lens)
            embeddings = embedding_model(feats, wav_lens)
            return classifier(embeddings)

    def flops_per_frame():
        """FLOPs per frame of ECAPA-TDNN (torch's count on 10 s minus 5 s of frames)."""
        from torch.utils.flop_counter import FlopCounterMode

        counts = []
        for seconds in (5.0, 10.0):
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                embedding_model(torch.randn(1, int(n_frames(seconds)), 80))
            counts.append(counter.get_total_flops())
        return (counts[1] - counts[0]) / (int(n_frames(10.0)) - int(n_frames(5.0)))

    params = sum(p.numel() for m in (embedding_model, classifier) for p in m.parameters())
    return infer, flops_per_frame, params


def padded_batches(durations, batches, seed):
    """Zero-padded noise waveforms with relative lengths for batches of utterance indices."""
    rng = np.random.default_rng(seed)
    out = []
    for idx in batches:
        idx = np.asarray(idx)
        lengths = np.round(durations[idx] * SAMPLE_RATE).astype(int)
        wavs = torch.zeros(len(idx), lengths.max())
        for row, n in enumerate(lengths):
            wavs[row, :n] = torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.1)
        out.append((wavs, torch.from_numpy(lengths / lengths.max()).float(), idx))
    return out


def inference_suite(infer, flops_per_frame, durations, batches, reps, matmul):
    """Real-time factors of single utterances and batched throughput of a pipeline."""
    gen = torch.Generator().manual_seed(1)
    out = {}
    for seconds in (2, 5, 20):
        wav = torch.randn(1, seconds * SAMPLE_RATE, generator=gen) * 0.1
        t = best_time(lambda w=wav: infer(w, torch.ones(1)), reps=max(3, reps * 2))
        out[f"rtf_{seconds}s"] = t / seconds

    def run_all():
        """One pass over the timed batches."""
        for wavs, lens, _ in batches:
            infer(wavs, lens)

    audio = float(sum(durations[idx].sum() for _, _, idx in batches))
    flops = flops_per_frame * float(sum(n_frames(durations[idx]).sum() for _, _, idx in batches))
    times, matmul_runs = [], []
    run_all()  # warm-up
    for _ in range(reps):  # interleaved with the matmul, so the ratio compares like with like
        matmul_runs.append(matmul())
        start = time.perf_counter()
        run_all()
        times.append(time.perf_counter() - start)
    matmul_runs.append(matmul())
    best = min(times)
    peak = max(max(r.values()) for r in matmul_runs)
    out.update(
        batched_audio_per_s=audio / best,
        batched_gflops=flops / best / 1e9,
        batched_matmul_gflops=peak,
    )
    return out


# ----------------------------------------------------------------------------------------------
# peak memory (separate process)
# ----------------------------------------------------------------------------------------------
def _proc_kib(pid, field, name="status"):
    """A ``kB`` field of /proc/<pid>/status or smaps_rollup (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/{name}", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid):
    """Child process ids of ``pid`` (all its threads)."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="utf-8") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


class MemorySampler(threading.Thread):
    """Samples the proportional set size (PSS: a page shared by n processes counts 1/n in each)
    of this process and its children every ``interval`` seconds and keeps the peak of the sum,
    the memory the process tree really holds (RSS counts pages shared after fork in each)."""

    def __init__(self, interval=0.05):
        super().__init__(daemon=True)
        self.interval, self.peak_kib, self.stop = interval, 0, threading.Event()

    def run(self):
        """Samples the process tree's PSS until stopped, keeping the peak."""
        pid = os.getpid()
        while not self.stop.is_set():
            total = sum(_proc_kib(p, "Pss", "smaps_rollup") for p in [pid, *_children(pid)])
            self.peak_kib = max(self.peak_kib, total)
            self.stop.wait(self.interval)


def rss_child(args):
    """Trains on the given batches with the recipe's settings; prints peak memory as JSON."""
    spec = json.loads(args.rss_child)
    recipe, hparams = load_recipe(args.root, spec["workdir"])
    brain, dataset = make_brain(recipe, hparams)
    sampler = MemorySampler()
    sampler.start()
    if os.environ.get("HNSD_BENCH_DEBUG"):
        for b in spec["batches"]:
            train_pass(brain, dataset, [b], hparams["num_workers"])
            print(len(b), _proc_kib(os.getpid(), "VmHWM"), sampler.peak_kib, file=sys.stderr)
    train_pass(brain, dataset, spec["batches"], hparams["num_workers"])
    sampler.stop.set()
    sampler.join()
    # VmHWM, not getrusage's ru_maxrss: Linux carries the parent's high-water mark over fork and
    # exec into ru_maxrss, so a child of a large process would report the parent's peak.
    main_kib = _proc_kib(os.getpid(), "VmHWM")
    print(json.dumps({"main_kib": main_kib, "total_kib": max(main_kib, sampler.peak_kib)}))


def peak_rss(args, workdir, batches):
    """Peak memory (GiB) of a training process alone (RSS) and with its DataLoader workers."""
    spec = {"workdir": workdir, "batches": batches}
    cmd = [sys.executable, os.path.abspath(__file__), "--root", args.root]
    for flag, value in (("--threads", args.threads), ("--branch-cores", args.branch_cores)):
        if value:
            cmd += [flag, str(value)]
    cmd += ["--rss-child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if os.environ.get("HNSD_BENCH_DEBUG"):
        print(proc.stderr[-2000:], file=sys.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"memory run failed:\n{proc.stdout}\n{proc.stderr}")
    rss = json.loads(lines[-1])
    return {
        "train_peak_rss_main_gib": rss["main_kib"] / 2**20,
        "train_peak_rss_gib": rss["total_kib"] / 2**20,
    }


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
ROWS = [
    ("matmul_gflops", "fp32 matmul, best back end (GFLOP/s)", "{:.0f}"),
    ("matmul_mkl_gflops", "  MKL `torch.mm` (GFLOP/s)", "{:.0f}"),
    ("matmul_onednn_gflops", "  oneDNN (GFLOP/s)", "{:.0f}"),
    ("floor_audio_per_s", "LSTM floor, fwd+bwd (audio-s/s)", "{:.1f}"),
    ("train_audio_per_s", "Training step, recipe (audio-s/s)", "{:.1f}"),
    ("train_vs_floor", "Training step / floor", "{:.1%}"),
    ("train_flop_bound", "  bound: LSTM FLOPs / model FLOPs", "{:.1%}"),
    ("padding_train", "Padding waste, training batches", "{:.2%}"),
    ("padding_eval", "Padding waste, evaluation batches", "{:.2%}"),
    ("padding_eval_sample", "  in the batches timed for inference", "{:.2%}"),
    ("train_batch_size", "Mean training batch (utterances)", "{:.1f}"),
    ("rtf_2s", "HNSD RTF, 2 s utterance", "{:.4f}"),
    ("rtf_5s", "HNSD RTF, 5 s utterance", "{:.4f}"),
    ("rtf_20s", "HNSD RTF, 20 s utterance", "{:.4f}"),
    ("lstm_rtf_5s", "  bare LSTMs alone, RTF 5 s", "{:.4f}"),
    ("batched_audio_per_s", "HNSD batched inference (audio-s/s)", "{:.0f}"),
    ("batched_gflops", "HNSD batched inference (GFLOP/s)", "{:.0f}"),
    ("batched_vs_matmul", "HNSD batched / matmul rate", "{:.1%}"),
    ("lstm_batched_vs_matmul", "  bare LSTMs alone, batched / matmul rate", "{:.1%}"),
    ("train_peak_rss_gib", "Training peak memory, with workers (GiB)", "{:.2f}"),
    ("train_peak_rss_main_gib", "  main process alone, peak RSS (GiB)", "{:.2f}"),
    ("ecapa_rtf_2s", "ECAPA-TDNN RTF, 2 s utterance", "{:.4f}"),
    ("ecapa_rtf_5s", "ECAPA-TDNN RTF, 5 s utterance", "{:.4f}"),
    ("ecapa_rtf_20s", "ECAPA-TDNN RTF, 20 s utterance", "{:.4f}"),
    ("ecapa_batched_audio_per_s", "ECAPA-TDNN batched inference (audio-s/s)", "{:.0f}"),
    ("ecapa_batched_gflops", "ECAPA-TDNN batched inference (GFLOP/s)", "{:.0f}"),
    ("ecapa_batched_vs_matmul", "ECAPA-TDNN batched / matmul rate", "{:.1%}"),
]


def target_text(key, value):
    """'>= 90 % (met)' style text for metrics with a target, '' otherwise."""
    if key not in TARGETS:
        return ""
    op, bound = TARGETS[key]
    ok = {">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]
    shown = f"{bound:.0%}" if bound < 1 and key != "rtf_5s" else f"{bound:g}"
    return f"{op} {shown} ({'met' if ok else 'missed'})"


def markdown_table(runs, labels):
    """The results of the labelled runs as a Markdown table, targets judged on the last."""
    head = "| Metric | " + " | ".join(labels) + " | Target |"
    lines = [head, "|" + "---|" * (len(labels) + 2)]
    for key, name, fmt in ROWS:
        cells = [fmt.format(runs[lb][key]) if key in runs[lb] else "–" for lb in labels]
        last = runs[labels[-1]].get(key)
        target = target_text(key, last) if last is not None else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


def write_results(out_dir, label, result):
    """Merges this run into RESULTS.json and rewrites RESULTS.md; returns the Markdown table."""
    path = os.path.join(out_dir, "RESULTS.json")
    data = {"runs": {}}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    data["runs"][label] = result
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    labels = [lb for lb in ("before", "after") if lb in data["runs"]]
    labels += [lb for lb in data["runs"] if lb not in labels]
    table = markdown_table(data["runs"], labels)
    notes = []
    for lb in labels:
        meta = data["runs"][lb]["meta"]
        notes.append(
            f"- `{lb}`: {meta['date']}, {meta['cpu']}, {meta.get('setting', meta['threads'])}, "
            f"load average {meta['load_average'][0]:.1f}, torch "
            f"{meta['torch']}, code at `{meta['commit']}`{meta['dirty']}, {meta['mode']} mode, "
            f"{meta['seconds']:.0f} s."
        )
    with open(os.path.join(out_dir, "RESULTS.md"), "w", encoding="utf-8") as f:
        f.write(
            "# HNSD performance benchmark\n\n"
            "Written by `python benchmarks/bench_hnsd.py`; see its docstring for what each row "
            "measures. Timings are the fastest of interleaved repetitions on a shared machine.\n\n"
            + table
            + "\n\nRuns:\n\n"
            + "\n".join(notes)
            + "\n"
        )
    return table


def git_commit(root):
    """Short commit of the measured tree and a '+changes' marker when it has local edits."""
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "hnsd_sb", "recipes"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit or "unknown", " + local changes" if dirty else ""
    except OSError:
        return "unknown", ""


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def configure_threads(args):
    """Applies ``--threads`` and ``--branch-cores``; returns a description of the setting."""
    if args.threads:
        torch.set_num_threads(args.threads)
    n = torch.get_num_threads()
    text = f"{n} thread" + ("s" if n != 1 else "")
    if args.branch_cores:
        try:
            from hnsd_sb.cpu import set_branch_cores
        except ImportError:  # a tree without the CPU fast paths
            return text + " (no hnsd_sb.cpu: --branch-cores ignored)"
        set_branch_cores(args.branch_cores)
        text += f", HNSD streams on {args.branch_cores} cores"
    return text


def main(argv=None):
    """Runs the benchmark, prints the table and writes the results files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and repetitions")
    parser.add_argument("--label", default="after", help="name of this run in the results")
    parser.add_argument("--root", default=os.path.dirname(HERE), help="repository to measure")
    parser.add_argument("--out-dir", default=HERE, help="where RESULTS.json/.md go")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--commit", help="what code --root holds, for the report")
    parser.add_argument("--skip-ecapa", action="store_true")
    parser.add_argument(
        "--threads", type=int, help="torch.set_num_threads for the models (default: PyTorch's)"
    )
    parser.add_argument(
        "--branch-cores",
        type=int,
        help="hnsd_sb.cpu.set_branch_cores: cores for HNSD's two streams (default: the threads)",
    )
    parser.add_argument(
        "--sequential-floor",
        action="store_true",
        help="also time the LSTMs one after the other with all threads (slower on 2 cores)",
    )
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.root = os.path.abspath(args.root)
    sys.path.insert(0, args.root)
    configure_threads(args)
    if args.rss_child:
        return rss_child(args)

    import logging

    logging.disable(logging.WARNING)
    start_all = time.time()
    reps = 2 if args.quick else 3
    k_batches = 3 if args.quick else 6
    result = {}

    def log(msg):
        """Prints a message with the seconds since the start."""
        print(f"[{time.time() - start_all:6.1f} s] {msg}", flush=True)

    import hnsd_sb

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    setting = configure_threads(args)
    log(f"hnsd_sb from {os.path.dirname(hnsd_sb.__file__)}; {cores} cores; {setting}")
    rates = matmul_rates(1024, 1.0, cores)
    result["matmul_mkl_gflops"] = rates["mkl"]
    if "onednn" in rates:
        result["matmul_onednn_gflops"] = rates["onednn"]
    log(f"matmul {rates}")

    with tempfile.TemporaryDirectory(prefix="hnsd_bench_") as workdir:
        # ---- padding, over a whole simulated training set ----
        recipe, hparams = load_recipe(args.root, workdir)
        train_durations = iemocap_like_durations(4400, seed=0)
        epoch = recipe_batches(hparams, train_durations, hparams["seed"])
        result["padding_train"] = padding_waste(epoch, train_durations)
        result["train_batch_size"] = float(np.mean([len(b) for b in epoch]))
        eval_size = hparams["test_dataloader_opts"]["batch_size"]
        test_durations = iemocap_like_durations(1100, seed=1)
        order = np.argsort(test_durations, kind="stable").tolist()
        eval_batches = [order[i : i + eval_size] for i in range(0, len(order), eval_size)]
        result["padding_eval"] = padding_waste(eval_batches, test_durations)
        log(
            f"padding: train {result['padding_train']:.2%} ({len(epoch)} batches), "
            f"eval {result['padding_eval']:.2%}"
        )

        # ---- training step vs floor, on the same batches ----
        picked = pick_batches(epoch, train_durations, k_batches)
        # The memory run trains on a stretch of the epoch in its own order (glibc's heap grows
        # as batches of ever different shapes come and go) and on the epoch's largest batches.
        heavy = largest_batches(epoch, train_durations) + epoch[: 10 if args.quick else 24]
        used = sorted({i for b in picked + heavy for i in b})
        remap = {old: new for new, old in enumerate(used)}
        batches = [[remap[i] for i in b] for b in picked]
        heavy = [[remap[i] for i in b] for b in heavy]
        durations = train_durations[used]
        write_corpus(workdir, durations, hparams)
        brain, dataset = make_brain(recipe, hparams)
        num_workers = hparams["num_workers"]
        audio = float(sum(durations[b].sum() for b in batches))
        shapes = [(len(b), int(n_frames(durations[b].max()))) for b in batches]
        floor = LSTMFloor(shapes)
        log(f"training: {len(batches)} batches, {audio:.0f} s of audio, shapes {shapes}")
        feed = EpochFeed(brain, dataset, batches, num_workers, reps + 1)
        feed.train_pass()  # warm-up
        floor.side_by_side(cores)
        if args.sequential_floor:
            floor.sequential(cores)
        step_t, seq_t, par_t = [], [], []
        for rep in range(reps):
            runs = [
                (step_t, feed.train_pass),
                (par_t, lambda: best_time(lambda: floor.side_by_side(cores), 1, 0)),
            ]
            if args.sequential_floor:
                runs.append((seq_t, lambda: best_time(lambda: floor.sequential(cores), 1, 0)))
            for times, fn in runs if rep % 2 == 0 else runs[::-1]:
                times.append(fn())
            seq = f", sequential {seq_t[-1]:.2f} s" if seq_t else ""
            log(f"rep {rep}: step {step_t[-1]:.2f} s, floor {par_t[-1]:.2f} s{seq}")
        floor_t = min(par_t + seq_t)
        result.update(
            floor_audio_per_s=audio / floor_t,
            floor_side_by_side_audio_per_s=audio / min(par_t),
            train_audio_per_s=audio / min(step_t),
            train_vs_floor=floor_t / min(step_t),
            train_step_times=step_t,
            floor_times=par_t,
        )
        if seq_t:
            result["floor_sequential_audio_per_s"] = audio / min(seq_t)
        log(
            f"floor {result['floor_audio_per_s']:.1f} audio-s/s, step "
            f"{result['train_audio_per_s']:.1f} audio-s/s: {result['train_vs_floor']:.1%}"
        )

        # ---- inference ----
        # A stratified sample of the evaluation batches of the test-like set (sorted, batched
        # as test_dataloader_opts), so the sample has the set's padding.
        test = test_durations
        sample = pick_batches(eval_batches, test, 4 if args.quick else 8)
        eval_sets = padded_batches(test, sample, seed=3)
        result["padding_eval_sample"] = padding_waste(sample, test)

        def matmul():
            """The matmul rate on these cores (the floor's reference)."""
            return matmul_rates(1024, 0.5, cores)

        _, hp_inf = load_recipe(args.root, workdir, {"output_folder": os.path.join(workdir, "i")})
        infer = hnsd_pipeline(hp_inf)
        per_frame = hnsd_flops_per_frame(hp_inf["model"])
        res = inference_suite(infer, per_frame, test, eval_sets, reps, matmul)
        result.update(res)
        result["hnsd_gflop_per_audio_s"] = per_frame * 100 / 1e9
        log("HNSD inference " + ", ".join(f"{k} {v:.4g}" for k, v in res.items()))
        bare = BareLSTMInference(cores)
        res = inference_suite(bare, bare.flops_per_frame, test, eval_sets, reps, matmul)
        result.update({f"lstm_{k}": v for k, v in res.items()})
        result["train_flop_bound"] = bare.flops_per_frame / hnsd_flops_per_frame(hp_inf["model"])
        log("bare LSTMs inference " + ", ".join(f"{k} {v:.4g}" for k, v in res.items()))
        if not args.skip_ecapa:
            e_infer, e_flops, e_params = ecapa_pipeline()
            per_frame = e_flops()
            res = inference_suite(e_infer, per_frame, test, eval_sets, reps, matmul)
            result.update({f"ecapa_{k}": v for k, v in res.items()})
            result["ecapa_gflop_per_audio_s"] = per_frame * 100 / 1e9
            result["ecapa_params"] = e_params
            log("ECAPA inference " + ", ".join(f"{k} {v:.4g}" for k, v in res.items()))
        result["matmul_gflops"] = max(
            result["matmul_mkl_gflops"],
            result.get("matmul_onednn_gflops", 0.0),
            result["batched_matmul_gflops"],
            result.get("ecapa_batched_matmul_gflops", 0.0),
            result.get("lstm_batched_matmul_gflops", 0.0),
        )
        # Against the best matmul rate seen anywhere in the run: the conservative choice.
        for prefix in ("", "ecapa_", "lstm_"):
            if f"{prefix}batched_gflops" in result:
                result[f"{prefix}batched_vs_matmul"] = (
                    result[f"{prefix}batched_gflops"] / result["matmul_gflops"]
                )

        # ---- peak memory, in a fresh process ----
        result.update(peak_rss(args, workdir, heavy))
        result["train_memory_batches"] = len(heavy)
        log(f"training peak RSS {result['train_peak_rss_gib']:.2f} GiB")

    commit, dirty = (args.commit, "") if args.commit else git_commit(args.root)
    result["meta"] = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "setting": setting,
        "torch": torch.__version__,
        "commit": commit,
        "dirty": dirty,
        "mode": "quick" if args.quick else "full",
        "seconds": time.time() - start_all,
        "load_average": os.getloadavg(),
    }
    if args.no_write:
        table = markdown_table({args.label: result}, [args.label])
    else:
        table = write_results(args.out_dir, args.label, result)
    print("\n" + table)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
