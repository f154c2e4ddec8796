#!/usr/bin/env python3
"""Diagnosis: how much does a run depend on which files of a speaker give its statistics, with
and without ``--vector_normalization=True``? (``experiments/proxy/SELECTION.md``, ``vecnorm128``.)

> python experiments/diagnosis/vector_statistics.py --data_folder=/path/to/ravdess \
>     experiments/proxy/vecnorm128/four/hnsd_improved/fold1 ... > out.jsonl

The recipe z-scores each validation actor's features (and, with the switch, its pooled vectors)
with the statistics of all of the actor's files, which on RAVDESS hold every emotion in equal
measure; a user enrols a few recordings, perhaps all neutral. For each fold folder the tested
checkpoint is loaded (a run with the switch is exported without it, which only the export
refuses, and the same ``PooledSpeakerNormalization`` is attached), and every validation file is
scored, UA in %, with each actor's statistics (features, and vectors with the switch) taken
from:

- ``all``: all of its files (the recipe's figure, checked against ``valid_results.json``);
- ``random8``: 8 of its files drawn at random (mean over 5 draws);
- ``without_<emotion>``: all its files but those of one emotion;
- ``only_<emotion>``: only the files of one emotion (e.g. enrolment with neutral speech).

With ``--unenrolled``, the subsets give way to what a user gets from a model folder without
enrolling anyone (``hnsd predict file.wav``): ``unenrolled_<policy>``, each file normalised as
an unseen speaker, its features with the ``unseen`` fallback ``utterance`` (its own
statistics, the recipes' setting) or ``global`` (those of all the other speakers the run
knows) and, with the switch, its pooled vector with the statistics of all the training actors
together (gathered over their files; a model folder's pooled statistics hold the evaluation
actors' too, since the recipe's last pass covers every speaker its normaliser knows). With
the switch, it adds a user who enrols each actor with only ``n`` files (``--few``, 3 unless
told), perhaps fewer than the ``MIN_ENROLLED_VECTORS`` windows ``EmotionRecognizer.enroll``
asks before it gathers a speaker's vector statistics: the features z-scored with those files'
statistics, and the vectors with the training actors' (``enrolled<n>_global_vectors``, what
``enroll`` does below its minimum) or with the few files' own (``enrolled<n>_own_vectors``,
what it does from its minimum on); means over 5 draws.

The test actors' files are not read. Their feature statistics, gathered by the run from
their audio, stay in its normaliser, and so in the features' ``global`` fallback, as they
would in the run's model folder.
"""

import argparse
import json
import os
import random
import re
import tempfile

import torch

from hnsd_sb.export import export_model
from hnsd_sb.inference import EmotionRecognizer
from hnsd_sb.manifest import read_rows, resolve_path
from hnsd_sb.metrics import confusion_matrix, unweighted_accuracy
from hnsd_sb.normalization import (
    UNSEEN_POLICIES,
    PooledSpeakerNormalization,
    SpeakerNormalization,
)
from hnsd_sb.pipeline import classify, normalized_streams

# Files each actor enrols with in ``few_enrolled`` unless told: a RAVDESS file is about one
# 4 s window.
FEW = (3,)


def by_speaker_of(speakers):
    """Speaker -> the indices of its files."""
    return {s: [i for i, x in enumerate(speakers) if x == s] for s in set(speakers)}


def score(fold, data_folder, tmp, draws=5, unenrolled=False, few=FEW):
    """The JSON line of one fold folder (with ``unenrolled``: ``all``, the ``unenrolled``
    figures and, with the switch, the ``enrolled<n>`` ones for each ``n`` of ``few``)."""
    plain = os.path.join(tmp, "hyperparams.yaml")  # the run's hparams, switch off for export
    with open(os.path.join(fold, "hyperparams.yaml"), encoding="utf-8") as f:
        text_of_run = f.read()
        text = re.sub(r"^vector_normalization: .*$", "vector_normalization: false", text_of_run,
                      flags=re.M)  # fmt: skip
    with open(plain, "w", encoding="utf-8") as f:
        f.write(text)
    folder = export_model(fold, os.path.join(tmp, "model"), hparams_file=plain, overwrite=True)
    recognizer = EmotionRecognizer.from_folder(folder)
    labels, mods = list(recognizer.labels), recognizer.mods
    rows = [row for _, row in read_rows(os.path.join(fold, "valid.csv"))[1]]
    for row in rows:
        row["wav"] = resolve_path(row["wav"], {"data_root": data_folder})
    speakers = [r["spk_id"] for r in rows]
    wavs = [recognizer.load_audio(r["wav"]).unsqueeze(0) for r in rows]
    y = torch.tensor([labels.index(r["emo"]) for r in rows])
    vectors = bool(re.search(r"^vector_normalization: true$", text_of_run, flags=re.M))
    norm = PooledSpeakerNormalization()
    if vectors:
        norm.attach(mods.model)
    mods.model.eval()

    def run(indices, collect=False, names=speakers):
        """The log-probabilities of these files (None when only collecting statistics)."""
        outs = []
        for i in indices:
            with norm.for_speakers([names[i]]):
                outs.append(classify(mods.features, mods.normalizer, mods.model, wavs[i],
                                     torch.ones(1), [names[i]])[0])  # fmt: skip
        return None if collect else torch.cat(outs)

    def ua_of(log_probs):
        """UA in % of these log-probabilities of all files."""
        cm = confusion_matrix(y, log_probs.argmax(1), len(labels))
        return 100 * float(unweighted_accuracy(cm))

    def pooled(indices):
        """The pooled vectors ``[len(indices), size]`` of these files, their features z-scored
        with their speakers' statistics as they are now (padded batches of 16: the network's
        outputs on real frames ignore the padding)."""
        out = []
        for first in range(0, len(indices), 16):
            chunk = [wavs[i][0] for i in indices[first : first + 16]]
            longest = max(w.numel() for w in chunk)
            batch = torch.stack(
                [torch.nn.functional.pad(w, (0, longest - w.numel())) for w in chunk]
            )
            lens = torch.tensor([w.numel() / longest for w in chunk])
            names = [speakers[i] for i in indices[first : first + 16]]
            static, dynamic, lens = normalized_streams(mods.features, mods.normalizer, batch, lens,
                                                       names)  # fmt: skip
            out.append(mods.model.pooling(mods.model.frames(static, dynamic, lens), lens, True)[0])
        return torch.cat(out)

    def few_enrolled(by_speaker, n):
        """Each actor enrolled with ``n`` random files: the features z-scored with those files'
        statistics, and the vectors with all the training actors' (what ``enroll`` does below
        ``MIN_ENROLLED_VECTORS`` windows) or with the few files' own (what it does from there
        on); means over draws (the same draws for every ``n`` as far as they go: one seed).
        The hook's z-score, written out: each file's pooled vector is computed once per draw,
        and the two sets of statistics z-score it as ``SpeakerNormalization`` does."""
        rng, figures = random.Random(0), {"global_vectors": [], "own_vectors": []}
        everyone = list(range(len(rows)))
        norm.detach()  # the classifier reads the vectors z-scored here
        for _ in range(draws):
            chosen = [i for s in sorted(by_speaker) for i in rng.sample(by_speaker[s], n)]
            for speaker in by_speaker:
                mods.normalizer.forget(speaker)
                norm.statistics.forget(speaker)
            for i in chosen:
                recognizer.accumulate(speakers[i], wavs[i][0])
            with torch.no_grad():
                u = pooled(everyone)
                own = SpeakerNormalization("global")
                own.accumulate(u[chosen].unsqueeze(1), torch.ones(len(chosen)),
                               [speakers[i] for i in chosen])  # fmt: skip
                for key, stats in (("global_vectors", norm.statistics), ("own_vectors", own)):
                    mean, std = (m.to(u.dtype) for m in stats.moments_of(speakers))
                    figures[key].append(ua_of(mods.model.head((u - mean) / std, None, None)))
        norm.attach(mods.model)
        return {f"enrolled{n}_{k}": sum(v) / draws for k, v in figures.items()}

    def ua_with(stat_rows):
        """UA in % over all files, each speaker's statistics from these files only."""
        for speaker in set(speakers):  # the validation actors' feature statistics afresh
            mods.normalizer.forget(speaker)
        for i in stat_rows:
            recognizer.accumulate(speakers[i], wavs[i][0])
        with torch.no_grad():
            if vectors:
                with norm.collecting():
                    run(stat_rows, collect=True)
            log_probs = run(range(len(rows)))
        cm = confusion_matrix(y, log_probs.argmax(1), len(labels))
        return 100 * float(unweighted_accuracy(cm))

    result = {"fold": fold, "vector_normalization": vectors, "all": ua_with(range(len(rows)))}
    if unenrolled:
        for speaker in set(speakers):
            mods.normalizer.forget(speaker)
        train = [row for _, row in read_rows(os.path.join(fold, "train.csv"))[1]]
        with torch.no_grad(), norm.collecting():
            for row in train if vectors else []:
                wav = recognizer.load_audio(resolve_path(row["wav"], {"data_root": data_folder}))
                with norm.for_speakers([row["spk_id"]]):
                    classify(mods.features, mods.normalizer, mods.model, wav.unsqueeze(0),
                             torch.ones(1), [row["spk_id"]])  # fmt: skip
        unknown = [None] * len(rows)  # every validation file from a speaker not known
        for policy in UNSEEN_POLICIES:  # the features' fallback: the utterance's, or all's
            mods.normalizer.unseen = policy
            with torch.no_grad():
                log_probs = run(range(len(rows)), names=unknown)
            cm = confusion_matrix(y, log_probs.argmax(1), len(labels))
            result[f"unenrolled_{policy}"] = 100 * float(unweighted_accuracy(cm))
        for n in few if vectors else ():
            result.update(few_enrolled(by_speaker_of(speakers), n))
        return result
    rng = random.Random(0)
    by_speaker = by_speaker_of(speakers)
    result["random8"] = (
        sum(
            ua_with([i for s in sorted(by_speaker) for i in rng.sample(by_speaker[s], 8)])
            for _ in range(draws)
        )
        / draws
    )
    for emotion in sorted({r["emo"] for r in rows}):
        result[f"without_{emotion}"] = ua_with(
            [i for i, r in enumerate(rows) if r["emo"] != emotion]
        )
        result[f"only_{emotion}"] = ua_with([i for i, r in enumerate(rows) if r["emo"] == emotion])
    return result


def summarize(path):
    """Prints, over the JSON lines of ``path`` grouped by row (a fold folder's parent), each
    subset's mean UA per row, and the first row's paired difference from the second (mean,
    folds at least as high) and each row's mean change from its ``all`` figure."""
    import statistics

    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in map(json.loads, f):
            rows.setdefault(os.path.dirname(line["fold"]), []).append(line)
    names = list(rows)
    keys = [k for k in rows[names[0]][0] if k not in ("fold", "vector_normalization")]
    print(" | ".join(["subset"] + [f"{n} ({len(rows[n])})" for n in names]))
    for key in keys:
        means = [statistics.mean(line[key] for line in rows[n]) for n in names]
        change = [statistics.mean(line[key] - line["all"] for line in rows[n]) for n in names]
        text = " | ".join(f"{m:.2f} ({c:+.2f})" for m, c in zip(means, change))
        if len(names) > 1 and len(rows[names[0]]) == len(rows[names[1]]):
            diff = [a[key] - b[key] for a, b in zip(rows[names[0]], rows[names[1]])]
            text += f" | first - second {statistics.mean(diff):+.2f} ({sum(d >= 0 for d in diff)})"
        print(f"{key} | {text}")
    lines = [line for n in names for line in rows[n]]
    if "unenrolled_global" in keys:  # the rule of SELECTION.md's unseen-fallback plan
        diff = [line["unenrolled_global"] - line["unenrolled_utterance"] for line in lines]
        means = {k: statistics.mean(line[k] for line in lines) for k in keys}
        print(
            f"all {len(diff)} runs: " + ", ".join(f"{k} {m:.2f}" for k, m in means.items())
            + f"; global - utterance {statistics.mean(diff):+.2f}, at least as high in "
            f"{sum(d >= 0 for d in diff)}"
        )  # fmt: skip
    few = sorted(int(k[8:-12]) for k in keys if re.fullmatch(r"enrolled\d+_own_vectors", k))
    for name in names if few else ():  # the rules of SELECTION.md's enrolment-minimum plan
        runs, parts = rows[name], []
        for n in few:
            own = [line[f"enrolled{n}_own_vectors"] for line in runs]
            trained = [line[f"enrolled{n}_global_vectors"] for line in runs]
            parts.append(
                f"n={n}: own {statistics.mean(own):.2f}, training actors' "
                f"{statistics.mean(trained):.2f}, own - theirs "
                f"{statistics.mean(o - t for o, t in zip(own, trained)):+.2f} "
                f"({sum(o >= t for o, t in zip(own, trained))} of {len(runs)})"
            )
        unenrolled = statistics.mean(line["unenrolled_global"] for line in runs)
        print(f"{name}: " + "; ".join(parts) + f"; unenrolled_global {unenrolled:.2f}")


def main():
    """Prints one JSON line per fold folder (or, with ``--summarize``, the summary of such
    lines)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folds", nargs="*", help="fold folders of finished runs (with save/)")
    parser.add_argument("--data_folder")
    parser.add_argument("--summarize", metavar="JSONL", help="summarise this output instead")
    parser.add_argument(
        "--unenrolled", action="store_true", help="score unseen speakers instead of the subsets"
    )
    parser.add_argument(
        "--few", type=int, nargs="+", default=list(FEW),
        help="with --unenrolled: files each actor enrols with (default: 3)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for fold in args.folds:
            line = score(
                fold.rstrip("/"), args.data_folder, tmp, unenrolled=args.unenrolled, few=args.few
            )
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
