#!/usr/bin/env python3
"""Recipe for training HNSD (Cao et al., ICASSP 2021) for speech emotion recognition.

The same script trains on any corpus whose data prep writes SpeechBrain CSV manifests with the
columns ``ID, duration, wav, spk_id, emo``: the hparams file names the prep function
(``prepare_data``), so the IEMOCAP and RAVDESS recipes share this file.

To run this recipe, do the following:
> python train.py hparams/hnsd.yaml --data_folder=/path/to/IEMOCAP_full_release
or with several processes (GPUs, or CPU with --distributed_backend=gloo):
> torchrun --nproc_per_node=2 train.py hparams/hnsd.yaml --data_folder=/path/to/IEMOCAP_full_release

The best checkpoint is chosen by unweighted accuracy (UA) on the validation speakers; the test
speakers are used only for the final evaluation, which writes WA, UA, per-class recall, a
confusion matrix (CSV and PNG) and ``predictions.csv`` to the output folder. The chosen
checkpoint's validation figures go beside them (``valid_results.json``,
``valid_predictions.csv``, ``valid_confusion.csv``/``.png``), for diagnosis that leaves the
test speakers alone.
"""

import contextlib
import functools
import json
import logging
import os
import random
import shlex
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.utils.distributed import (
    ddp_all_reduce,
    ddp_broadcast,
    if_main_process,
    is_distributed_initialized,
    run_on_main,
)
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from hnsd_sb import pipeline
from hnsd_sb.audio import make_audio_pipeline
from hnsd_sb.cpu import accelerate
from hnsd_sb.host_memory import release_freed_memory
from hnsd_sb.manifest import ManifestError, json_to_csv
from hnsd_sb.metrics import balanced_class_weights
from hnsd_sb.preflight import check_manifests
from hnsd_sb.report import save_confusion_matrix, split_file_names
from hnsd_sb.weights import (
    VECTOR_NORMALIZER_FILE,
    find_model_file,
    pretrained_vector_normalization,
)

logger = logging.getLogger(__name__)


class EmotionBrain(sb.Brain):
    """Trains and evaluates HNSD: waveform -> features -> speaker normalisation -> model."""

    class_weights = None  # per-class loss weights (``class_weighting`` in the hparams)
    averaged = None  # the weight average (``average_epochs`` in the hparams), if any
    evaluated_split = "test"  # the split ``evaluate`` scores, which names its result files
    # the speaker adversary's counts (``on_stage_start`` resets them); zero for a caller that
    # scores batches without a stage
    speaker_hits = (0, 0, 0.0, 0)

    def pipeline_inputs(self, batch, stage):
        """Returns the waveforms of a batch, their relative lengths, and a dict of the feature
        augmentations, the keyword arguments of ``hnsd_sb.pipeline`` (in training, augmented
        waveforms, cropped and mixed utterances and masked frames where the hparams have
        ``wav_augment``, ``crop``, ``mixup`` and ``feat_augment``; an empty dict otherwise).
        """
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        augment = {}
        if stage == sb.Stage.TRAIN:
            # absent or null (e.g. --wav_augment=null): no augmentation
            wav_augment = getattr(self.hparams, "wav_augment", None)
            if wav_augment is not None:
                wavs, wav_lens = wav_augment(wavs, wav_lens)
            augment = {
                "crop": getattr(self.hparams, "crop", None),
                "mix": getattr(self.hparams, "mixup", None),
                # after the z-score, so a masked frame (set to 0) is the speaker's mean frame
                "feat_augment": getattr(self.hparams, "feat_augment", None),
            }
        return wavs, wav_lens, augment

    def compute_features(self, batch, stage):
        """Returns the speaker-normalised static and dynamic streams of a batch and its relative
        frame lengths (what the statistics baseline, ``baseline.py``, classifies)."""
        wavs, wav_lens, augment = self.pipeline_inputs(batch, stage)
        return pipeline.normalized_streams(
            self.modules.features,
            self.modules.normalizer,
            wavs,
            wav_lens,
            batch.spk_id,
            **augment,
        )

    def compute_forward(self, batch, stage):
        """Returns the emotion log-probabilities of a batch and its relative frame lengths."""
        wavs, wav_lens, augment = self.pipeline_inputs(batch, stage)
        model = self.modules.model
        if stage != sb.Stage.TRAIN and self.averaged is not None:
            model = self.averaged.module  # validation and test score the weight average
        with self.vector_speakers(batch.spk_id, stage):
            log_probs, _, lens = pipeline.classify(
                self.modules.features,
                self.modules.normalizer,
                model,
                wavs,
                wav_lens,
                batch.spk_id,
                **augment,
            )
        return log_probs, lens

    def vector_speakers(self, speakers, stage):
        """The context in which the model classifies a batch of these speakers: with
        ``vector_normalization`` (hparams), the speakers whose statistics z-score the pooled
        vectors (replicated as the labels are, where the training augmentation grows the
        batch); otherwise nothing."""
        norm = getattr(self.hparams, "pooled_normalizer", None)
        if norm is None or not norm.enabled:
            return contextlib.nullcontext()
        wav_augment = getattr(self.hparams, "wav_augment", None)
        if stage == sb.Stage.TRAIN and wav_augment is not None:
            rows = wav_augment.replicate_labels(torch.arange(len(speakers)))
            speakers = [speakers[i] for i in rows.tolist()]
        return norm.for_speakers(speakers)

    def pass_loader(self, dataset):
        """A loader of padded batches over ``dataset`` with the evaluation options, for the
        passes that gather statistics (no checkpointed position: a pass is redone whole)."""
        opts = {"collate_fn": sb.dataio.batch.PaddedBatch, **self.hparams.test_dataloader_opts}
        return sb.dataio.dataloader.make_dataloader(dataset, **opts)

    def fit_vector_statistics(self, stage):
        """With ``vector_normalization`` (hparams), gathers each speaker's statistics of the
        pooled vectors for the stage: over the training set with the trained weights before
        each epoch, over the scored split with the weights it scores (the weight average, if
        any) before validation and test. The scored split's speakers use their own files only
        where ``normalize_eval_speakers`` lets their feature statistics do so; otherwise they
        get the training speakers' pooled ones."""
        model = self.hparams.model  # unwrapped: each process makes the whole pass alone
        split = "train"
        if stage != sb.Stage.TRAIN:
            if self.averaged is not None:
                model = self.averaged.module
            if self.hparams.normalize_eval_speakers:
                split = "valid" if stage == sb.Stage.VALID else self.evaluated_split
        sets = getattr(self, "vector_sets", None)
        if sets is None or split not in sets:
            raise RuntimeError(
                f"vector_normalization: the brain's vector_sets has no {split!r} dataset to "
                "gather the pooled vectors' statistics from (main sets them; elsewhere set "
                "brain.vector_sets, or pass --vector_normalization=False)"
            )
        self.gather_vector_statistics(model, [sets[split]], split)

    def gather_vector_statistics(self, model, datasets, name):
        """Gathers afresh the pooled vectors' statistics of the speakers of ``datasets`` with
        ``model``: eval mode, no augmentation, and torch's random state untouched, so the rest
        of the run draws what it would draw without it.

        Arguments
        ---------
        model : hnsd_sb.HNSD
            The network (unwrapped), its classifier hooked by ``pooled_normalizer``.
        datasets : list of DynamicItemDataset
            Their utterances give the statistics (a speaker in several: all its utterances).
        name : str
            Names the pass in the log and the progress bar.
        """
        norm = self.hparams.pooled_normalizer
        was_training = model.training
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]), norm.collecting():
            for dataset in datasets:
                loader = self.pass_loader(dataset)
                for batch in tqdm(loader, desc=f"vector statistics ({name})", dynamic_ncols=True):
                    batch = batch.to(self.device)
                    with norm.for_speakers(batch.spk_id):
                        pipeline.classify(
                            self.modules.features,
                            self.modules.normalizer,
                            model,
                            *batch.sig,
                            batch.spk_id,
                        )
        model.train(was_training)
        logger.info(
            "Pooled-vector statistics of %d speakers (%s)", len(norm.statistics.speakers), name
        )

    def save_vector_statistics(self, datasets):
        """With ``vector_normalization``: the pooled vectors' statistics of every speaker the
        feature normaliser knows (those of ``datasets``), from the network of the checkpoint of
        best validation UA (as ``evaluate`` left it loaded), saved in that checkpoint as
        ``vector_normalizer.ckpt`` for ``hnsd export``. Written whole or not at all.

        Arguments
        ---------
        datasets : list of DynamicItemDataset
            The sets whose speakers the feature normaliser holds (``speaker_sets``).
        """
        model = self.hparams.model if self.averaged is None else self.averaged.module
        self.gather_vector_statistics(model, datasets, "model folder")
        folder = self.checkpointer.find_checkpoint(max_key="UA").path
        partial = folder / f".{VECTOR_NORMALIZER_FILE}.partial"
        torch.save(self.hparams.pooled_normalizer.statistics.state(), partial)
        os.replace(partial, folder / VECTOR_NORMALIZER_FILE)
        logger.info("Saved them in %s for hnsd export", folder / VECTOR_NORMALIZER_FILE)

    def emotion_loss(self, predictions, batch, stage):
        """Class-weighted negative log-likelihood of the true emotions (in training, with label
        smoothing, distillation and mixup where the hparams ask for them). Returns it and the
        targets."""
        log_probs, _ = predictions
        emo = batch.emo_encoded.data.view(-1)
        wav_augment = getattr(self.hparams, "wav_augment", None)
        if stage == sb.Stage.TRAIN and wav_augment is not None:
            emo = wav_augment.replicate_labels(emo)
        # class_weighting (hparams): each emotion weighs inversely to its share of the train set
        smoothing = getattr(self.hparams, "label_smoothing", 0.0)
        if stage == sb.Stage.TRAIN and smoothing:
            # label_smoothing (hparams): that share of each target is spread over all emotions;
            # cross_entropy's log_softmax leaves log-probabilities as they are
            loss_fn = functools.partial(
                torch.nn.functional.cross_entropy,
                weight=self.class_weights,
                label_smoothing=smoothing,
            )
        else:  # validation and test losses stay the likelihood, which NewBob anneals on
            loss_fn = functools.partial(torch.nn.functional.nll_loss, weight=self.class_weights)
        targets = emo
        teacher = getattr(self.hparams, "teacher", None)
        if stage == sb.Stage.TRAIN and teacher is not None and teacher.enabled:
            # teacher_folder (hparams): distillation, the loss also pulls towards the ensemble's
            # soft targets; the loss takes utterance indices, so mixup can pair both targets
            log_q = teacher.targets(batch.id).to(log_probs.device)
            if wav_augment is not None:
                log_q = wav_augment.replicate_labels(log_q)
            weights = torch.ones_like(emo, dtype=log_probs.dtype)
            if self.class_weights is not None:
                weights = self.class_weights[emo]
            label_loss = loss_fn

            def loss_fn(log_probs, index):
                """The distillation loss of the utterances at ``index`` (mixup's partners)."""
                soft = teacher.soft_loss(log_probs, log_q[index], weights[index])
                return (1 - teacher.weight) * label_loss(log_probs, emo[index]) + (
                    teacher.weight * soft
                )

            targets = torch.arange(emo.numel(), device=emo.device)
        mixup = getattr(self.hparams, "mixup", None)
        if stage == sb.Stage.TRAIN and mixup is not None:
            # mixup_alpha (hparams): the batch's features were mixed in pairs; so are the losses
            loss = mixup.loss(loss_fn, log_probs, targets)
        else:
            loss = loss_fn(log_probs, targets)
        adversary = getattr(self.hparams, "speaker_adversary", None)
        if stage == sb.Stage.TRAIN and adversary is not None and adversary.enabled:
            # adversary_weight (hparams): a speaker head on the pooled vectors of this forward
            # pass, whose gradient reaches the model reversed
            speakers = adversary.speaker_indices(batch.spk_id).to(emo.device)
            if wav_augment is not None:
                speakers = wav_augment.replicate_labels(speakers)
            # main adds the head to the modules only when it is on (it needs the training
            # speakers), so no hparams file lists it; called through the modules for DDP
            speaker_loss, correct = self.modules["speaker_adversary"](speakers)
            loss = loss + speaker_loss
            self.speaker_counts = [correct, speakers.numel(), float(speaker_loss.detach()), 1]
        return loss, emo

    def compute_objectives(self, predictions, batch, stage):
        """The loss of ``emotion_loss``; tracks WA/UA, padding and the speaker head's hits."""
        self.speaker_counts = [0, 0, 0.0, 0]
        loss, emo = self.emotion_loss(predictions, batch, stage)
        log_probs, lens = predictions
        self.padded_frames[0] += float((1 - lens).sum())
        self.padded_frames[1] += float(lens.numel())
        self.speaker_hits = [a + b for a, b in zip(self.speaker_hits, self.speaker_counts)]
        self.metrics.append(batch.id, log_probs.detach(), emo)
        return loss

    def fit_batch(self, batch):
        """SpeechBrain's training step, or with ``sam_rho`` > 0 (hparams) the sharpness-aware
        one (``hnsd_sb.sharpness``): a second forward and backward pass at the weights moved
        ``sam_rho`` up the gradient gives the gradient the optimizer steps with. Both passes draw
        the same augmentation, crops, mixup and dropout (torch's and Python's generators are
        replayed; cuDNN's own dropout state, used only between stacked LSTM layers, is not); the
        loss and metrics reported are the first's. SAM needs one batch per step and no fp16
        loss scaling (a ValueError otherwise)."""
        sam = getattr(self.hparams, "sam", None)
        if sam is None or not sam.enabled:
            return super().fit_batch(batch)
        if self.grad_accumulation_factor != 1 or self.scaler.is_enabled():
            raise ValueError("sam_rho > 0 needs grad_accumulation_factor 1 and no fp16 scaler")
        self.on_fit_batch_start(batch, True)
        python_rng = random.getstate()  # SpeechBrain's Augmenter also draws from Python's
        device = torch.device(self.device)
        gpus = []
        if device.type == "cuda":
            gpus = [torch.cuda.current_device() if device.index is None else device.index]
        with torch.random.fork_rng(devices=gpus):  # restores torch's RNGs for the second pass
            with self.training_ctx:
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
                loss = self.compute_objectives(outputs, batch, sb.Stage.TRAIN)
            self.check_loss_isfinite(loss)
            loss.backward()
        random.setstate(python_rng)
        sam.perturb(self.optimizer)
        try:
            with self.training_ctx:
                perturbed = self.compute_forward(batch, sb.Stage.TRAIN)
                perturbed_loss, _ = self.emotion_loss(perturbed, batch, sb.Stage.TRAIN)
            self.check_loss_isfinite(perturbed_loss)
            perturbed_loss.backward()
        finally:  # the weights go back even if the second pass fails
            sam.restore()
        self.optimizers_step()
        self.on_fit_batch_end(batch, outputs, loss, True)
        return loss.detach().cpu()

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Moves the weight average (if any) towards the weights the optimizer just updated, and
        every ``release_memory_every`` batches (hparams) gives the heap's freed memory back."""
        if should_step and self.averaged is not None:
            self.averaged.update_parameters(self.hparams.model)
        # within an epoch the heap refills; giving its free memory back holds the peak down
        every = getattr(self.hparams, "release_memory_every", None)
        if every and self.step % every == 0:
            release_freed_memory()

    def on_stage_start(self, stage, epoch=None):
        """Starts fresh statistics for the stage, after giving the memory that the last one
        freed back to the system (``hnsd_sb.host_memory``); with ``vector_normalization``,
        gathers the pooled vectors' statistics for it first (``fit_vector_statistics``)."""
        release_freed_memory()
        labels = [self.label_encoder.ind2lab[i] for i in range(len(self.label_encoder))]
        self.metrics = self.hparams.error_stats(label_names=labels)
        self.padded_frames = [0.0, 0.0]  # padded and total frames, in units of batch length
        # the speaker adversary's correct and scored utterances, its losses' sum, its batches
        self.speaker_hits = [0, 0, 0.0, 0]
        norm = getattr(self.hparams, "pooled_normalizer", None)
        if norm is not None and norm.enabled:
            self.fit_vector_statistics(stage)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the stage's statistics, keeps the best checkpoint, writes the test results."""
        # Under torchrun each process trained on a shard: pool the predictions of all of them,
        # average their losses and add up their padding.
        self.metrics.sync()
        summary = self.metrics.summarize()
        totals = [stage_loss, *self.padded_frames, *self.speaker_hits]
        totals = torch.tensor(totals, dtype=torch.float64)
        totals = ddp_all_reduce(totals.to(self.device), torch.distributed.ReduceOp.SUM)
        totals /= torch.distributed.get_world_size() if is_distributed_initialized() else 1
        stage_loss, padded, frames, *speaker = totals.tolist()
        stats = {
            "loss": stage_loss,
            "WA": round(100 * summary["WA"], 2),
            "UA": round(100 * summary["UA"], 2),
            "padding": round(100 * padded / max(frames, 1), 2),
        }
        speaker_correct, speakers, speaker_loss, speaker_batches = speaker
        if speakers:  # speaker-adversarial training: how well the head still tells speakers
            # the stage loss includes the speaker loss; its mean over the batches beside it
            stats["speaker_loss"] = round(speaker_loss / speaker_batches, 3)
            stats["speaker_acc"] = round(100 * speaker_correct / speakers, 2)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
        elif stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            if hasattr(self.hparams, "lr_annealing"):  # e.g. NewBob on the validation loss
                _, new_lr = self.hparams.lr_annealing(stage_loss)
                sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.checkpointer.save_and_keep_only(
                meta={"UA": stats["UA"], "WA": stats["WA"]},
                max_keys=["UA"],
                num_to_keep=self.hparams.keep_checkpoints,
            )
        else:
            split = self.evaluated_split
            recall = {lab: round(100 * r, 2) for lab, r in summary["recall"].items()}
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                **{f"{split}_stats": {**stats, "recall": recall}},
            )
            if sb.utils.distributed.if_main_process():
                self.write_results(stats, summary, split)

    def write_results(self, stats, summary, split="test"):
        """Writes predictions, the confusion matrix and a JSON summary of an evaluation:
        ``predictions.csv``, ``confusion.csv``/``.png`` and ``test_results.json`` for the test
        split; the same names prefixed with ``valid_`` (``valid_results.json``) for the
        validation split."""
        out = self.hparams.output_folder
        names = split_file_names(split)
        labels = self.metrics.label_names
        self.metrics.write_predictions(os.path.join(out, names["predictions"]))
        save_confusion_matrix(
            summary["confusion"],
            labels,
            os.path.join(out, names["confusion_csv"]),
            os.path.join(out, names["confusion_png"]),
            title=f"{split.capitalize()} WA {stats['WA']:.2f} %, UA {stats['UA']:.2f} %",
        )
        with open(os.path.join(out, names["results"]), "w", encoding="utf-8") as f:
            json.dump(
                {
                    "WA": summary["WA"],
                    "UA": summary["UA"],
                    "recall": summary["recall"],
                    "labels": labels,
                    "confusion": summary["confusion"].tolist(),
                    "n": summary["n"],
                    # for the model card of an export: which checkpoint, and how it was trained
                    "epoch": self.hparams.epoch_counter.current,
                    "command": shlex.join(["python", *sys.argv]),
                },
                f,
                indent=2,
            )
        if split != "test":
            return
        # The run's last words say where its results are and what to do next.
        logger.info(
            "Results in %s: test_results.json, predictions.csv, confusion.png; best checkpoint "
            "(max valid UA) in %s. Make a model folder of it with: hnsd export %s MODEL_DIR",
            out,
            self.hparams.save_folder,
            out,
        )

    def fit_normalizer(self, datasets):
        """Accumulates the speakers' feature statistics in one pass over the audio (no labels).

        Under torchrun each process reads every n-th utterance and the processes add up their
        sums, so all of them hold the same statistics (in the same order of addition). A run
        that resumes from a checkpoint gets them from the checkpoint instead (the
        ``AtomicCheckpointer`` only ever shows complete checkpoints, so a run killed before or
        during its first save computes them again).
        """
        if self.checkpointer is not None and self.checkpointer.find_checkpoint() is not None:
            return
        normalizer = self.hparams.normalizer.to(self.device)
        rank, world = 0, 1
        if is_distributed_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        for dataset in datasets:
            shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
            loader = self.pass_loader(shard)
            for batch in tqdm(loader, desc="speaker statistics", dynamic_ncols=True):
                batch = batch.to(self.device)
                pipeline.accumulate_statistics(
                    self.modules.features, normalizer, *batch.sig, batch.spk_id
                )
        if world > 1:
            states = [None] * world
            torch.distributed.all_gather_object(states, normalizer.state())
            normalizer.reset()
            for state in states:
                normalizer.merge_state(state)
        logger.info("Speaker statistics of %d speakers", len(normalizer.speakers))


def weight_average(model, average_epochs, steps_per_epoch, device):
    """Returns an exponential moving average of the weights of ``model`` (torch's
    ``AveragedModel``), starting as a copy of them, whose time constant is ``average_epochs``
    epochs of ``steps_per_epoch`` optimizer steps: the same share of training on every corpus,
    whatever its size. Scoring it rather than the last weights smooths out the step-to-step
    noise of training on a small corpus."""
    decay = 1.0 - 1.0 / max(1.0, average_epochs * steps_per_epoch)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    averaged.update_parameters(model)  # a copy now, so a resumed run averages the same way
    return averaged.requires_grad_(False).eval().to(device)


def mixes_utterances(hparams):
    """Whether training mixes utterances (mixup), so that a training input has no single
    speaker: the per-speaker options refuse it."""
    mixup = hparams.get("mixup")
    return mixup is not None and bool(mixup.alpha)


def speaker_sets(hparams, datasets):
    """The datasets whose speakers get statistics: the training set, and with
    ``normalize_eval_speakers`` the validation and test sets too (their audio, not labels)."""
    splits = ["train", "valid", "test"] if hparams["normalize_eval_speakers"] else ["train"]
    return [datasets[split] for split in splits]


def validated_manifests(hparams):
    """Checks every row of the train/valid/test manifests before training (on the main
    process) and returns the manifests to use: the given ones (SpeechBrain JSON annotations
    converted to CSV), or with ``skip_bad_rows`` copies without the bad rows. See
    ``hnsd_sb.preflight.check_manifests`` for what is checked. Under torchrun every process
    gets the main one's outcome, so a bad row stops them all with its message (none is left
    waiting at a broadcast).
    """
    outcome, failure = None, None
    if if_main_process():
        try:
            outcome = {"manifests": checked_on_main(hparams)}
        except Exception as err:  # whatever stops the main process must reach the others
            failure = err
            outcome = {"error": str(err)}
            if not isinstance(err, ManifestError):
                outcome["error"] = f"the main process stopped: {type(err).__name__}: {err}"
    outcome = ddp_broadcast(outcome)
    if failure is not None:
        raise failure
    if "error" in outcome:
        raise ManifestError(outcome["error"])
    return outcome["manifests"]


def checked_on_main(hparams):
    """The main process's part of ``validated_manifests``: converts JSON annotations and
    checks the rows; raises ``ManifestError`` on a bad one."""
    manifests = {
        "train": hparams["train_annotation"],
        "valid": hparams["valid_annotation"],
        "test": hparams["test_annotation"],
    }
    # SpeechBrain JSON annotations (e.g. its tests/samples) become CSV manifests first.
    for split, path in manifests.items():
        if str(path).endswith(".json"):
            csv_path = os.path.join(hparams["output_folder"], f"{split}_from_json.csv")
            json_to_csv(path, csv_path)
            manifests[split] = csv_path
    # hparams files without these options get the defaults: check, and stop on a bad row.
    if not hparams.get("validate_manifests", True):
        return manifests
    checks = check_manifests(
        manifests,
        replacements={"data_root": hparams["data_folder"]},
        n_classes=hparams["n_classes"],
        skip_bad=hparams.get("skip_bad_rows", False),
        output_dir=hparams["output_folder"],
    )
    for check in checks.values():
        logger.info("Checked %s: %d rows", check.csv_path, check.n_rows)
        if check.n_skipped:
            logger.warning("Skipped %d bad rows, using %s", check.n_skipped, check.path)
    return {split: check.path for split, check in checks.items()}


def dataio_prepare(hparams, manifests):
    """Builds the train/valid/test datasets from the CSV manifests and the label encoder."""
    datasets = {}
    for split, manifest in manifests.items():
        dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=manifest,
            replacements={"data_root": hparams["data_folder"]},
        )
        # Sorting evaluation sets keeps similar lengths together: little padding for the LSTMs.
        datasets[split] = (
            dataset if split == "train" else dataset.filtered_sorted(sort_key="duration")
        )

    label_encoder = sb.dataio.encoder.CategoricalEncoder()

    @sb.utils.data_pipeline.takes("emo")
    @sb.utils.data_pipeline.provides("emo", "emo_encoded")
    def label_pipeline(emo):
        """Yields the emotion label and its class index."""
        yield emo
        yield label_encoder.encode_label_torch(emo)

    audio_pipeline = make_audio_pipeline(hparams["sample_rate"])
    for dataset in datasets.values():
        dataset.add_dynamic_item(audio_pipeline)
        dataset.add_dynamic_item(label_pipeline)
        dataset.set_output_keys(["id", "sig", "spk_id", "emo_encoded"])

    # Sorted label names give every fold and run the same class indices.
    with datasets["train"].output_keys_as(["emo"]):
        labels = sorted({item["emo"] for item in datasets["train"]})
    if len(labels) != hparams["n_classes"]:
        raise ValueError(
            f"The training manifest {manifests['train']} has {len(labels)} "
            f"emotions {labels}, but n_classes is {hparams['n_classes']} in the hparams file"
        )
    label_encoder.expect_len(hparams["n_classes"])
    label_encoder.load_or_create(
        path=os.path.join(hparams["save_folder"], "label_encoder.txt"),
        from_iterables=[labels],
    )
    return datasets, label_encoder


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)

    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    # Data prep writes the CSV manifests once, on the main process.
    if hparams["prepare_data"] is not None:
        run_on_main(hparams["prepare_data"])
    # Every row is checked before anything is trained: a bad one stops the run here, naming it
    # (status 2, no traceback: the message is the whole story).
    try:
        manifests = validated_manifests(hparams)
    except ManifestError as err:
        logger.error("%s", err)
        sys.exit(2)
    datasets, label_encoder = dataio_prepare(hparams, manifests)

    # Fine-tuning (hparams/finetune.yaml): start from a trained model's weights (with
    # --pretrained_model=null, from scratch). A resumed run then restores its own checkpoint.
    if "pretrainer" in hparams and hparams["pretrained_model"] is not None:
        run_on_main(hparams["pretrainer"].collect_files)
        hparams["pretrainer"].load_collected()
        # Its classifier read z-scored or raw pooled vectors: vector_normalization null follows
        # it, and a setting that differs is warned about.
        pooled = hparams.get("pooled_normalizer")
        model_file = find_model_file(hparams["pretrained_model"])
        trained_with = pretrained_vector_normalization(model_file)
        if pooled is not None and pooled.enabled is None and trained_with is None:
            pooled.enabled = False
            logger.warning(
                "vector_normalization: False; %s does not say whether it was trained with the "
                "pooled vectors z-scored per speaker (pass --vector_normalization=True if so)",
                model_file,
            )
        elif pooled is not None and pooled.enabled is None:
            pooled.enabled = trained_with
            logger.info("vector_normalization: %s, as %s was trained", pooled.enabled, model_file)
        elif pooled is not None and trained_with not in (None, bool(pooled.enabled)):
            logger.warning(
                "%s was trained %s the pooled vectors z-scored per speaker, but "
                "vector_normalization is %s: its classifier starts on vectors unlike those",
                model_file,
                "with" if trained_with else "without",
                bool(pooled.enabled),
            )

    # CPU fast paths (hnsd_sb.cpu): the same network with its two streams side by side, opt-in
    # with cpu_fast_paths; on GPU it runs the plain way.
    if hparams.get("cpu_fast_paths", False):
        accelerate(hparams["model"], branch_cores=hparams.get("cpu_branch_cores"))

    # Speaker-normalised pooled vectors (vector_normalization, False: off): attached before the
    # weight average copies the model, so that both z-score with the same statistics, and
    # before the speaker adversary's hook, which then reads the z-scored vectors
    pooled_normalizer = hparams.get("pooled_normalizer")
    if pooled_normalizer is not None and pooled_normalizer.enabled:
        if mixes_utterances(hparams):
            logger.error("vector_normalization does not combine with mixup_alpha > 0")
            sys.exit(2)
        pooled_normalizer.attach(hparams["model"])

    # Speaker-adversarial training (adversary_weight, 0: off): a speaker head on the pooled
    # vectors, trained beside the model (and checkpointed with it), dropped after training
    adversary = hparams.get("speaker_adversary")
    if adversary is not None and adversary.enabled:
        if mixes_utterances(hparams):
            logger.error("adversary_weight > 0 does not combine with mixup_alpha > 0")
            sys.exit(2)
        with datasets["train"].output_keys_as(["spk_id"]):
            adversary.attach(hparams["model"], [item["spk_id"] for item in datasets["train"]])
        hparams["modules"]["speaker_adversary"] = adversary
        hparams["checkpointer"].add_recoverable("speaker_adversary", adversary)
        logger.info("Speaker adversary over %d training speakers", len(adversary.speakers))

    hnsd_brain = EmotionBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    hnsd_brain.label_encoder = label_encoder
    hnsd_brain.vector_sets = datasets  # what fit_vector_statistics reads
    if "class_weighting" in hparams and hparams["class_weighting"]:
        with datasets["train"].output_keys_as(["emo"]):
            train_labels = [item["emo"] for item in datasets["train"]]
        hnsd_brain.class_weights = balanced_class_weights(train_labels, label_encoder).to(
            hnsd_brain.device
        )
        logger.info("Class weights: %s", hnsd_brain.class_weights.tolist())

    # Distillation (teacher_folder): the soft targets of every training utterance, checked now
    teacher = hparams.get("teacher")
    if teacher is not None and teacher.enabled:
        with datasets["train"].output_keys_as(["id"]):
            train_ids = [item["id"] for item in datasets["train"]]
        try:  # a bad targets file stops the run here, naming it (status 2, as a bad manifest)
            teacher.load([label_encoder.ind2lab[i] for i in range(len(label_encoder))], train_ids)
        except ValueError as err:
            logger.error("%s", err)
            sys.exit(2)
        logger.info("Soft targets of %d utterances from %s", len(train_ids), teacher.path)

    hnsd_brain.fit_normalizer(speaker_sets(hparams, datasets))

    # Batches of similar durations, so the LSTMs read little padding.
    train_sampler = DynamicBatchSampler(datasets["train"], **hparams["dynamic_batch_sampler"])
    hnsd_brain.train_sampler = train_sampler  # so each epoch draws new batches
    train_loader_opts = {"batch_sampler": train_sampler, "num_workers": hparams["num_workers"]}

    # Weight averaging (average_epochs, null: off): validation, test and the exported model
    # use a moving average of the weights; it is checkpointed beside them (averaged_model.ckpt).
    if hparams.get("average_epochs"):
        # optimizer steps per epoch: each process's share of the batches, over the accumulation
        world = torch.distributed.get_world_size() if is_distributed_initialized() else 1
        steps = -(-len(train_sampler) // (world * hnsd_brain.grad_accumulation_factor))
        hnsd_brain.averaged = weight_average(
            hparams["model"], hparams["average_epochs"], steps, hnsd_brain.device
        )
        hparams["checkpointer"].add_recoverable("averaged_model", hnsd_brain.averaged.module)

    # Rerunning the same command after an interruption resumes from the last checkpoint.
    hnsd_brain.fit(
        epoch_counter=hparams["epoch_counter"],
        train_set=datasets["train"],
        valid_set=datasets["valid"],
        train_loader_kwargs=train_loader_opts,
        valid_loader_kwargs=hparams["test_dataloader_opts"],
    )

    # The selected checkpoint scores the validation speakers (valid_predictions.csv and
    # valid_results.json: per-emotion diagnosis without the test speakers), then the test ones.
    for split in ("valid", "test"):
        hnsd_brain.evaluated_split = split
        hnsd_brain.evaluate(
            test_set=datasets[split],
            max_key="UA",
            # a copy: Brain.evaluate adds ckpt_prefix to the options it is given, in place
            test_loader_kwargs=dict(hparams["test_dataloader_opts"]),
        )

    # A model folder of this run z-scores its pooled vectors as the run did: the statistics of
    # every speaker the feature normaliser knows, from the network of the selected checkpoint
    if pooled_normalizer is not None and pooled_normalizer.enabled and if_main_process():
        hnsd_brain.save_vector_statistics(speaker_sets(hparams, datasets))

    # Under torchrun, the processes end together and close the process group: a process that
    # exited while the main one still wrote the test results sometimes aborted ("terminate
    # called without an active exception", about 1 gloo run in 4).
    if is_distributed_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
