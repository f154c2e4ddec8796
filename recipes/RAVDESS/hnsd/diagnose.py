#!/usr/bin/env python3
"""Can HNSD fit a small set of real utterances, and what do its parts do while it tries?

The overfitting probe of the README's diagnosis section. It takes ``--per_class`` utterances of
each emotion from the training actors of fold 1 (actors 9-24 by default), computes the recipe's
features and speaker normalisation (every file of each actor gives its statistics), trains a
paper-size HNSD on them alone, and every ``--every`` updates prints one JSON line:

- ``acc``, ``loss``: training accuracy and loss over the whole probe set (eval mode);
- ``grad``: the gradient norm of each module at that update (before clipping);
- ``gate``: the GMU gate's mean, its share in [0.1, 0.9] and its share saturated (< 0.01 or
  > 0.99), over real frames;
- ``attention``: the attention's entropy relative to a uniform one (1 = uniform), and the share
  of its weight on frames more than 40 dB below the utterance's loudest (silence), beside the
  share of such frames (what uniform weights would put there);
- ``lstm_saturation``: the share of the encoders' outputs with ``|h| > 0.9``;
- ``l2_dominates``: per module, the share of weights whose L2 term at the paper's coupled weight
  decay, ``1e-3 |w|``, is larger than the loss gradient ``|dL/dw|`` at that update. Adam divides
  their sum by its running size, so where the decay term is the larger, the update mostly
  shrinks the weight instead of fitting the data.

> python diagnose.py --data_folder=../../../../shared/data/ravdess --updates 200
> python diagnose.py --data_folder=... --trim_db 40      # the same, silence trimmed

It stops early once the training accuracy reaches ``--target``. The final line says after how
many updates it got there (``null`` if it did not).

``--silence_stats`` trains nothing: it prints how much of the chosen actors' audio is leading and
trailing silence (the README's figures: ``--silence_stats --actors $(seq 1 24)``).

``--model_folder`` trains nothing either: it reads the same statistics (accuracy, loss, gate,
attention, LSTM saturation) off a trained model, a folder written by ``hnsd export``, on the
chosen actors' files of the model's classes (a model with the GMU; the loss unweighted). The
speakers that the model's normaliser holds keep their statistics; any other actor's come from
its files of the model's classes, as in the recipe. On a fold's validation actors the accuracy
is then that run's validation WA:

> hnsd export experiments/four/hnsd/fold1 /tmp/fold1_model
> python diagnose.py --data_folder=... --model_folder /tmp/fold1_model --actors 5 6 7 8

With ``--speaker_probe`` it also measures how much the model's pooled utterance vectors (the
classifier head's input) tell about who is speaking: a linear speaker classifier (logistic
regression on the z-scored vectors) learns from the chosen actors' first repetitions and is
scored on their second ones, beside chance (one over the number of actors). The README's
speaker-adversarial section compares it with and without ``adversary_weight``.
"""

import argparse
import glob
import json
import math
import os
import random
import time

import torch

from hnsd_sb import HNSD, GatedMultiFeatureUnit, SpeakerNormalization, StaticDynamicFeatures
from hnsd_sb.audio import load_audio
from hnsd_sb.baseline import LinearClassifier
from hnsd_sb.corpora.ravdess import EMOTIONS as RAVDESS_LABELS
from hnsd_sb.features import trim_silence
from hnsd_sb.inference import EmotionRecognizer
from hnsd_sb.normalization import real_frame_mask
from hnsd_sb.pipeline import normalized_streams

EMOTIONS = 8  # RAVDESS: neutral, calm, happy, sad, angry, fearful, disgust, surprised


def parse_args():
    """The probe's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--per_class", type=int, default=8)
    parser.add_argument("--actors", type=int, nargs="+", default=list(range(9, 25)))
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--clip", type=float, default=None, help="gradient norm clipping")
    parser.add_argument("--warmup", type=int, default=0, help="linear warm-up updates")
    parser.add_argument("--trim_db", type=float, default=None, help="trim silence (dB)")
    parser.add_argument("--forget_bias", type=float, default=None, help="LSTM forget-gate bias")
    parser.add_argument("--input_scale", type=float, default=1.0, help="multiplies the inputs")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--pooling", choices=["attention", "mean"], default="attention")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--silence_stats", action="store_true", help="silence figures only")
    parser.add_argument("--model_folder", help="read the statistics off this trained model")
    parser.add_argument(
        "--speaker_probe", action="store_true", help="with --model_folder: speaker information"
    )
    return parser.parse_args()


def actor_files(args):
    """The chosen actors' files: ``{path: (actor, emotion index)}``."""
    files = {}
    for path in sorted(glob.glob(os.path.join(args.data_folder, "Actor_*", "*.wav"))):
        fields = os.path.basename(path)[:-4].split("-")
        if int(fields[6]) in args.actors:
            files[path] = (fields[6], int(fields[2]) - 1)
    return files


@torch.no_grad()
def silence_stats(args, trim_db=40.0):
    """Mean duration, leading and trailing silence (frames more than ``trim_db`` below the
    loudest, before the first and after the last loud one), the share of frames that trimming
    keeps, and the share at the log-Mel floor on every channel (digital silence)."""
    features = StaticDynamicFeatures()
    totals = {"seconds": 0.0, "leading_s": 0.0, "trailing_s": 0.0, "kept": 0.0, "floor": 0.0}
    files = actor_files(args)
    for path in files:
        static = features.fbank(load_audio(path).unsqueeze(0))
        n = static.shape[1]
        _, kept = trim_silence(static, torch.tensor([n]), trim_db)
        energy = static[0].mean(-1)
        loud = (energy >= energy.max() - trim_db).nonzero().flatten()
        totals["seconds"] += n / 100
        totals["leading_s"] += int(loud[0]) / 100
        totals["trailing_s"] += (n - 1 - int(loud[-1])) / 100
        totals["kept"] += int(kept) / n
        totals["floor"] += float((static[0] == static.min()).all(-1).float().mean())
    stats = {key: round(value / len(files), 3) for key, value in totals.items()}
    print(json.dumps({"files": len(files), "trim_db": trim_db, **stats}), flush=True)


def silent_frames(static, db=40.0):
    """Frames more than ``db`` below the loudest, on unnormalised log-Mels ``[frames, n_mels]``."""
    energy = static.mean(-1)
    return energy < energy.max() - db


def load_probe_set(args):
    """Returns the probe utterances' normalised features, silence masks and labels."""
    features = StaticDynamicFeatures(trim_db=args.trim_db)
    files = actor_files(args)
    rng = random.Random(args.seed)
    chosen = []
    for emotion in range(EMOTIONS):
        paths = [p for p, (_, emo) in files.items() if emo == emotion]
        chosen += rng.sample(paths, args.per_class)
    norm = SpeakerNormalization()
    feats = {}
    with torch.no_grad():
        for path in files:  # every file of each actor gives its speaker statistics
            static, dynamic = features(load_audio(path).unsqueeze(0))
            x = torch.cat([static, dynamic], -1)
            norm.accumulate(x, torch.ones(1), [files[path][0]])
            if path in chosen:
                feats[path] = x
    items = []
    for path in chosen:
        x = feats[path]
        silent = silent_frames(x[0, :, : features.n_mels])
        items.append((norm(x, torch.ones(1), [files[path][0]])[0], silent, files[path][1]))
    return items


def collate(items):
    """Pads a list of probe items into a batch."""
    longest = max(x.shape[0] for x, _, _ in items)
    x = torch.zeros(len(items), longest, items[0][0].shape[1])
    silent = torch.zeros(len(items), longest, dtype=torch.bool)
    for i, (feats, sil, _) in enumerate(items):
        x[i, : feats.shape[0]] = feats
        silent[i, : feats.shape[0]] = sil
    lens = torch.tensor([feats.shape[0] / longest for feats, _, _ in items])
    labels = torch.tensor([label for _, _, label in items])
    return x, lens, silent, labels


@torch.no_grad()
def inspect(model, items, n_static=26):
    """Accuracy, loss, gate, attention and LSTM statistics over the whole probe set, and the
    pooled utterance vectors ``[items, size]`` (what ``--speaker_probe`` reads).

    It runs ``HNSD.forward``'s steps one by one (eval mode, so without dropout) to read the
    encoder outputs and the GMU gate that ``forward`` does not return."""
    model.eval()
    x, lens, silent, labels = collate(items)
    static, dynamic = x[..., :n_static], x[..., n_static:]
    mask = real_frame_mask(lens, x.shape[1])
    h_s = model.static_encoder(static, lens)
    h_d = model.dynamic_encoder(dynamic, lens)
    fused, gate = model.fusion(h_s, h_d, return_gate=True)
    u, alpha = model.pooling(fused, lens, True)
    log_probs = model.classifier(u)
    z = gate[mask]
    entropy = -(alpha.clamp(min=1e-12).log() * alpha).sum(1)
    uniform = mask.sum(1).float().log()
    h = torch.cat([h_s[mask], h_d[mask]], -1)
    model.train()
    stats = {
        "acc": round(float((log_probs.argmax(1) == labels).float().mean()), 4),
        "loss": round(float(torch.nn.functional.nll_loss(log_probs, labels)), 4),
        "gate": {
            "mean": round(float(z.mean()), 4),
            "in_0.1_0.9": round(float(((z > 0.1) & (z < 0.9)).float().mean()), 4),
            "saturated": round(float(((z < 0.01) | (z > 0.99)).float().mean()), 4),
        },
        "attention": {
            "relative_entropy": round(float((entropy / uniform).mean()), 4),
            "on_silence": round(float((alpha * silent).sum(1).mean()), 4),
            # what a uniform attention would put there: the share of silent frames
            "silent_frames": round(float((silent.sum(1) / mask.sum(1)).mean()), 4),
        },
        "lstm_saturation": round(float((h.abs() > 0.9).float().mean()), 4),
    }
    return stats, u


@torch.no_grad()
def trained_model_stats(args):
    """Prints ``inspect``'s statistics of the model in ``args.model_folder`` (``hnsd export``)
    over the chosen actors' files of the model's classes, normalised as in the recipe."""
    recognizer = EmotionRecognizer.from_folder(args.model_folder)
    labels, mods = list(recognizer.labels), recognizer.mods
    if not isinstance(getattr(mods.model, "fusion", None), GatedMultiFeatureUnit):
        raise SystemExit(f"{args.model_folder}: the statistics need a model with the GMU")
    if recognizer.vector_norms:  # its classifier needs each batch's speakers, which these lack
        raise SystemExit(
            f"{args.model_folder}: the model z-scores its pooled vectors per speaker "
            "(vector_normalization), which these statistics do not follow yet"
        )
    files = {  # path: (speaker id as in the recipe's manifests, label index)
        path: (f"Actor_{actor}", labels.index(RAVDESS_LABELS[f"{emotion + 1:02d}"]))
        for path, (actor, emotion) in actor_files(args).items()
        if RAVDESS_LABELS[f"{emotion + 1:02d}"] in labels
    }
    wavs = {path: recognizer.load_audio(path) for path in files}  # each file read once
    known = set(mods.normalizer.speakers)
    for path, (speaker, _) in files.items():
        if speaker not in known:  # as the recipe: statistics of the files of the label set
            recognizer.enroll(speaker, [wavs[path]])
    items = []
    for path, (speaker, label) in files.items():
        wav = wavs[path].unsqueeze(0)
        static, dynamic, _ = normalized_streams(
            mods.features, mods.normalizer, wav, torch.ones(1), [speaker]
        )
        silent = silent_frames(mods.features(wav)[0][0])
        items.append((torch.cat([static, dynamic], -1)[0], silent, label))
    if not items:
        raise SystemExit(f"no file of the actors {args.actors} has a label in {labels}")
    stats, pooled = inspect(mods.model, items, n_static=static.shape[-1])
    if args.speaker_probe:
        speakers = [speaker for speaker, _ in files.values()]
        second = [os.path.basename(path).split("-")[5] == "02" for path in files]
        with torch.enable_grad():  # the probe's fit needs gradients
            stats["speaker_probe"] = speaker_probe(pooled, speakers, torch.tensor(second))
    print(json.dumps({"model_folder": args.model_folder, "files": len(items), **stats}))


def speaker_probe(pooled, speakers, held_out, l2=1e-3):
    """How well a linear classifier (the baseline's ``LinearClassifier``) tells the speakers
    apart from pooled utterance vectors.

    Arguments
    ---------
    pooled : torch.Tensor
        ``[utterances, size]``.
    speakers : list of str
        The speaker of each utterance.
    held_out : torch.Tensor
        Boolean ``[utterances]``: True for the utterances it is scored on, False for those it
        learns from (z-scored with the latter's statistics).
    l2 : float
        The classifier's L2 weight.

    Returns
    -------
    dict
        ``acc`` on the held-out utterances, ``chance`` (one over the number of speakers), the
        number of ``speakers`` and of utterances ``scored``.

    Example
    -------
    >>> gen = torch.Generator().manual_seed(0)
    >>> centres = 3 * torch.randn(4, 8, generator=gen)
    >>> pooled = centres.repeat(10, 1) + torch.randn(40, 8, generator=gen)
    >>> speakers = ["a", "b", "c", "d"] * 10
    >>> probe = speaker_probe(pooled, speakers, torch.arange(40) >= 20)
    >>> probe["acc"] > 0.9, probe["chance"], probe["speakers"], probe["scored"]
    (True, 0.25, 4, 20)
    """
    names = sorted(set(speakers))
    y = torch.tensor([names.index(s) for s in speakers])
    probe = LinearClassifier(l2=l2).fit(pooled[~held_out], y[~held_out], len(names))
    correct = probe(pooled[held_out]).argmax(1) == y[held_out]
    return {
        "acc": round(float(correct.float().mean()), 4),
        "chance": round(1 / len(names), 4),
        "speakers": len(names),
        "scored": int(held_out.sum()),
    }


def main():
    """Trains on the probe set and prints the statistics as JSON lines."""
    args = parse_args()
    if args.silence_stats:
        silence_stats(args)
        return
    if args.model_folder:
        trained_model_stats(args)
        return
    torch.manual_seed(args.seed)
    items = load_probe_set(args)
    model = HNSD(
        hidden_size=args.hidden,
        n_classes=EMOTIONS,
        bidirectional=args.bidirectional,
        pooling=args.pooling,
    )
    if args.forget_bias is not None:
        for name, param in model.named_parameters():
            if "bias_ih" in name:  # PyTorch orders the gates input, forget, cell, output
                size = param.shape[0] // 4
                param.data[size : 2 * size] = args.forget_bias
    if args.input_scale != 1.0:
        items = [(x * args.input_scale, s, y) for x, s, y in items]
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    optimizer = optimizers[args.optimizer](
        model.parameters(), lr=args.lr, weight_decay=args.weight_decay
    )
    rng = random.Random(args.seed)
    order, reached, start = [], None, time.time()
    print(json.dumps({"args": vars(args), "probe_set": len(items)}), flush=True)
    for update in range(1, args.updates + 1):
        if not order:
            order = rng.sample(range(len(items)), len(items))
        batch, order = order[: args.batch_size], order[args.batch_size :]
        x, lens, _, labels = collate([items[i] for i in batch])
        if args.warmup:
            for group in optimizer.param_groups:
                group["lr"] = args.lr * min(1.0, update / args.warmup)
        loss = torch.nn.functional.nll_loss(model(x[..., :26], x[..., 26:], lens), labels)
        optimizer.zero_grad()
        loss.backward()
        grads, dominated, sizes = {}, {}, {}
        for name, param in model.named_parameters():
            module = name.split(".")[0]
            grads[module] = grads.get(module, 0.0) + float(param.grad.pow(2).sum())
            decay = 1e-3 * param.detach().abs() > param.grad.abs()
            dominated[module] = dominated.get(module, 0) + int(decay.sum())
            sizes[module] = sizes.get(module, 0) + param.numel()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        if update % args.every == 0 or update == args.updates:
            stats, _ = inspect(model, items)
            stats = {"update": update, "seconds": round(time.time() - start), **stats}
            stats["grad"] = {k: float(f"{math.sqrt(v):.3g}") for k, v in grads.items()}
            stats["l2_dominates"] = {k: round(dominated[k] / sizes[k], 3) for k in sizes}
            print(json.dumps(stats), flush=True)
            if stats["acc"] >= args.target:
                reached = update
                break
    print(json.dumps({"updates_to_target": reached, "target": args.target}), flush=True)


if __name__ == "__main__":
    main()
