#!/usr/bin/env python3
"""Diagnosis: do pooled utterance vectors centred per speaker classify the validation actors
better? (``experiments/proxy/SELECTION.md``, "speaker-centred utterance vectors".)

> python experiments/diagnosis/centre_vectors.py --data_folder=/path/to/ravdess \
>     experiments/proxy/sam128/four/hnsd_improved/fold1 ... > out.jsonl

For each fold folder (its tested checkpoint, exported as ``hnsd export`` does), the pooled
vectors of the training and validation utterances (eval mode, each actor's own feature
statistics) are scored on the validation actors only, as JSON lines:

- ``own_raw``: the model's own classifier (the run's ``valid_results.json`` UA);
- ``own_centred``: the same classifier on ``u - m_s + m_train`` (``m_s`` the speaker's mean
  vector over its files, ``m_train`` the mean of the training speakers' means);
- ``refit_raw``, ``refit_centred``, ``refit_zscored``: the baseline's ``LinearClassifier`` fitted
  on the training actors' vectors, plain, centred and z-scored per speaker.

The test actors are not read.
"""

import argparse
import json
import os
import tempfile

import torch

from hnsd_sb.baseline import LinearClassifier
from hnsd_sb.export import export_model
from hnsd_sb.inference import EmotionRecognizer
from hnsd_sb.manifest import read_rows, resolve_path
from hnsd_sb.metrics import confusion_matrix, unweighted_accuracy
from hnsd_sb.pipeline import normalized_streams


@torch.no_grad()
def pooled_vectors(recognizer, rows):
    """The pooled vector of each row's file, ``[rows, size]``."""
    model = recognizer.mods.model.eval()
    vectors = []
    for row in rows:
        wav = recognizer.load_audio(row["wav"]).unsqueeze(0)
        static, dynamic, _ = normalized_streams(
            recognizer.mods.features,
            recognizer.mods.normalizer,
            wav,
            torch.ones(1),
            [row["spk_id"]],
        )
        lens = torch.ones(1)
        vectors.append(model.pooling(model.frames(static, dynamic, lens), lens, True)[0][0])
    return torch.stack(vectors)


def per_speaker(u, speakers, scale=False):
    """``u`` minus each speaker's mean vector (and divided by its sample std + 1e-5 when
    ``scale``; the recipe's z-score uses the population std)."""
    out = u.clone()
    for speaker in set(speakers):
        rows = torch.tensor([s == speaker for s in speakers])
        out[rows] = u[rows] - u[rows].mean(0)
        if scale:
            out[rows] = out[rows] / (u[rows].std(0) + 1e-5)
    return out


def score(fold, data_folder, export_folder):
    """The JSON line of one fold folder."""
    export_model(fold, export_folder, overwrite=True)
    recognizer = EmotionRecognizer.from_folder(export_folder)
    labels = list(recognizer.labels)
    splits = {}
    for split in ("train", "valid"):
        rows = [row for _, row in read_rows(os.path.join(fold, f"{split}.csv"))[1]]
        for row in rows:
            row["wav"] = resolve_path(row["wav"], {"data_root": data_folder})
        splits[split] = rows
    known = set(recognizer.mods.normalizer.speakers)
    for speaker in sorted({r["spk_id"] for r in splits["valid"]} - known):
        recognizer.enroll(speaker, [r["wav"] for r in splits["valid"] if r["spk_id"] == speaker])
    (ut, uv) = (pooled_vectors(recognizer, splits[s]) for s in ("train", "valid"))
    yt, yv = (torch.tensor([labels.index(r["emo"]) for r in splits[s]]) for s in ("train", "valid"))
    st, sv = ([r["spk_id"] for r in splits[s]] for s in ("train", "valid"))
    n = len(labels)

    def ua(log_probs, y):
        """UA in % of the most probable classes."""
        return 100 * float(unweighted_accuracy(confusion_matrix(y, log_probs.argmax(1), n)))

    classifier = recognizer.mods.model.classifier.eval()
    m_train = torch.stack([ut[torch.tensor([s == x for s in st])].mean(0) for x in set(st)])
    result = {"fold": fold}
    with torch.no_grad():
        result["own_raw"] = ua(classifier(uv), yv)
        result["own_train_raw"] = ua(classifier(ut), yt)
        result["own_centred"] = ua(classifier(per_speaker(uv, sv) + m_train.mean(0)), yv)
    for name, train, valid in [
        ("refit_raw", ut, uv),
        ("refit_centred", per_speaker(ut, st), per_speaker(uv, sv)),
        ("refit_zscored", per_speaker(ut, st, True), per_speaker(uv, sv, True)),
    ]:
        probe = LinearClassifier(l2=1e-3).fit(train, yt, n)
        with torch.no_grad():
            result[name] = ua(probe(valid), yv)
    return result


def summarize(path):
    """Prints, over the JSON lines of ``path``, each column's mean and its paired difference
    from ``own_raw`` (and ``refit_*`` from ``refit_raw``): mean, sd, runs at least as high."""
    import statistics

    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    print(f"{len(lines)} runs")
    for key in [k for k in lines[0] if k != "fold"]:
        base = "refit_raw" if key.startswith("refit_") and key != "refit_raw" else "own_raw"
        diff = [line[key] - line[base] for line in lines]
        mean = statistics.mean(line[key] for line in lines)
        spread, ahead = statistics.stdev(diff), sum(d >= 0 for d in diff)
        print(f"{key}: {mean:.2f}; - {base} {statistics.mean(diff):+.2f} (sd {spread:.2f}), "
              f"at least as high in {ahead}")  # fmt: skip


def main():
    """Prints one JSON line per fold folder (or, with ``--summarize``, the summary of such
    lines)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folds", nargs="*", help="fold folders of finished runs (with save/)")
    parser.add_argument("--data_folder")
    parser.add_argument("--summarize", metavar="JSONL", help="summarise this output instead")
    args = parser.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for fold in args.folds:
            line = score(fold.rstrip("/"), args.data_folder, os.path.join(tmp, "model"))
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
