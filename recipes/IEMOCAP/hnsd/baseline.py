#!/usr/bin/env python3
"""Statistics baseline: utterance functionals and a linear classifier, on HNSD's own inputs.

It takes the same hparams file, data prep, folds, features and speaker normalisation as
``train.py`` (it runs the recipe's own pipeline, ``EmotionBrain.compute_features``), so its row
is the yardstick of the HNSD rows on the same folds:

> python baseline.py hparams/hnsd.yaml --data_folder=/path/to/ravdess --fold=1 \
>     --output_folder=results/baseline/fold1
> python cross_validate.py hparams/hnsd.yaml --script=baseline.py --data_folder=... \
>     --folds 1 2 3 4 5 6 --cv_folder=experiments/four/baseline --label_set=four --n_classes=4

Each utterance becomes the mean, standard deviation, minimum, maximum and 10/25/50/75/90 % quantiles
of each of its 78 normalised features over its real frames (702 numbers), and an L2-regularised
multinomial logistic regression classifies them, each emotion weighing inversely to its share of the
training utterances (UA counts every emotion alike). The L2 weight is the one of ``--l2`` with the
best validation UA (the larger on a tie); the test speakers are used once, with it. The output
folder gets the same ``test_results.json``, ``predictions.csv`` and confusion matrix as a
``train.py`` run, and their ``valid_`` twins for the validation speakers, plus
``baseline_selection.json`` with the validation UA of every L2 weight. Nothing is trained with
gradients through the network, and the hparams' model, optimiser and training options are unused.
``--statistics`` and ``--quantiles`` keep a subset of the functionals (``--statistics mean
--quantiles``: the means alone), to measure what each adds. ``--speaker_zscore`` z-scores each
utterance's functionals with its speaker's mean and standard deviation of them over the
split's utterances, as ``--vector_normalization=True`` does to HNSD's pooled vectors, so that
the two are compared with the same use of the speakers' files.
"""

import argparse
import json
import logging
import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from tqdm import tqdm
from train import EmotionBrain, dataio_prepare, speaker_sets, validated_manifests

from hnsd_sb.baseline import (
    DEFAULT_QUANTILES,
    DEFAULT_STATISTICS,
    LinearClassifier,
    utterance_functionals,
)
from hnsd_sb.metrics import balanced_class_weights
from hnsd_sb.normalization import SpeakerNormalization

logger = logging.getLogger(__name__)
DEFAULT_L2 = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def functionals_of(brain, dataset, speaker_zscore=False, **functionals):
    """Returns the IDs, functionals ``[n, dims]`` and class indices of a dataset's utterances
    (``functionals``: the ``statistics`` and ``quantiles`` of ``utterance_functionals``; with
    ``speaker_zscore``, z-scored with each speaker's statistics of them over the dataset)."""
    loader = sb.dataio.dataloader.make_dataloader(dataset, **brain.hparams.test_dataloader_opts)
    ids, rows, labels, speakers = [], [], [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc="functionals", dynamic_ncols=True):
            static, dynamic, lens = brain.compute_features(batch, sb.Stage.TEST)
            feats = torch.cat([static, dynamic], -1)
            rows.append(utterance_functionals(feats, lens, **functionals).cpu())
            ids.extend(batch.id)
            speakers.extend(batch.spk_id)
            labels.append(batch.emo_encoded.data.view(-1).cpu())
    x = torch.cat(rows)
    return ids, speaker_zscored(x, speakers) if speaker_zscore else x, torch.cat(labels)


def speaker_zscored(x, speakers):
    """Each row of ``x`` ``[n, dims]`` z-scored with its speaker's mean and (population)
    standard deviation over the rows of ``speakers`` (the recipe's ``SpeakerNormalization``,
    each row a one-frame sequence)."""
    norm = SpeakerNormalization()
    norm.accumulate(x.unsqueeze(1), torch.ones(len(x)), speakers)
    return norm(x.unsqueeze(1), None, speakers).squeeze(1)


def select_and_test(brain, datasets, l2_grid, class_weights, **functionals):
    """Fits one classifier per L2 weight on train, keeps the best on valid, tests it once
    (``functionals``: the keyword arguments of ``functionals_of``)."""
    n_classes = len(brain.label_encoder)
    train_ids, x_train, y_train = functionals_of(brain, datasets["train"], **functionals)
    valid_ids, x_valid, y_valid = functionals_of(brain, datasets["valid"], **functionals)
    selection, fitted = [], {}
    for l2 in l2_grid:
        fitted[l2] = LinearClassifier(l2=l2).fit(x_train, y_train, n_classes, class_weights)
        brain.on_stage_start(sb.Stage.VALID)
        brain.metrics.append(valid_ids, fitted[l2](x_valid), y_valid)
        ua = brain.metrics.summarize("UA")
        selection.append({"l2": l2, "valid_UA": ua})
        logger.info("L2 %g: validation UA %.2f %%", l2, 100 * ua)
    best = max(selection, key=lambda row: (row["valid_UA"], row["l2"]))
    clf = fitted[best["l2"]]

    # the chosen classifier's validation figures, as train.py writes them, then the test ones
    test_ids, x_test, y_test = functionals_of(brain, datasets["test"], **functionals)
    for split, ids, x, y in (
        ("valid", valid_ids, x_valid, y_valid),
        ("test", test_ids, x_test, y_test),
    ):
        brain.on_stage_start(sb.Stage.TEST)
        log_probs = clf(x)
        brain.metrics.append(ids, log_probs, y)
        summary = brain.metrics.summarize()
        stats = {
            "loss": round(torch.nn.functional.nll_loss(log_probs, y).item(), 4),
            "WA": round(100 * summary["WA"], 2),
            "UA": round(100 * summary["UA"], 2),
        }
        recall = {lab: round(100 * r, 2) for lab, r in summary["recall"].items()}
        brain.hparams.train_logger.log_stats(
            stats_meta={"baseline, L2 chosen on valid": best["l2"]},
            **{f"{split}_stats": {**stats, "recall": recall}},
        )
        brain.write_results(stats, summary, split)
    path = os.path.join(brain.hparams.output_folder, "baseline_selection.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"chosen_l2": best["l2"], "grid": selection, **functionals}, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--l2", type=float, nargs="+", default=list(DEFAULT_L2))
    # Subsets of the functionals measure what each adds (e.g. --statistics mean --quantiles)
    parser.add_argument(
        "--statistics", nargs="*", choices=DEFAULT_STATISTICS, default=list(DEFAULT_STATISTICS)
    )
    parser.add_argument("--quantiles", type=float, nargs="*", default=list(DEFAULT_QUANTILES))
    # the functionals z-scored per speaker, as --vector_normalization=True does to HNSD's vectors
    parser.add_argument("--speaker_zscore", action="store_true")
    args, sb_args = parser.parse_known_args(sys.argv[1:])
    hparams_file, run_opts, overrides = sb.parse_arguments(sb_args)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)

    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    if hparams["prepare_data"] is not None:
        hparams["prepare_data"]()
    manifests = validated_manifests(hparams)
    datasets, label_encoder = dataio_prepare(hparams, manifests)

    # No checkpointer: the baseline saves nothing, and the speaker statistics are always computed
    # (a training run's checkpoint in the same folder must not stand in for them).
    brain = EmotionBrain(modules=hparams["modules"], hparams=hparams, run_opts=run_opts)
    brain.label_encoder = label_encoder
    brain.fit_normalizer(speaker_sets(hparams, datasets))
    brain.modules.eval()

    with datasets["train"].output_keys_as(["emo"]):
        train_labels = [item["emo"] for item in datasets["train"]]
    weights = balanced_class_weights(train_labels, label_encoder)
    select_and_test(
        brain,
        datasets,
        args.l2,
        weights,
        statistics=args.statistics,
        quantiles=args.quantiles,
        speaker_zscore=args.speaker_zscore,
    )
