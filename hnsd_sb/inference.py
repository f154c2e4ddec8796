"""Running a trained HNSD on recordings: the ``EmotionRecognizer`` SpeechBrain interface.

``EmotionRecognizer`` is a ``speechbrain.inference.interfaces.Pretrained`` built from a model
folder written by ``hnsd_sb.export`` (or ``hnsd export``). Its ``classify_batch`` and
``classify_file`` return a tuple shaped like SpeechBrain's ``EncoderClassifier``'s, ``(out,
score, index, label)``, with one difference: ``out`` and ``score`` are probabilities (they sum to
one, and are what a user reads), where ``EncoderClassifier`` gives log-probabilities;
``infer_batch`` gives the log-probabilities. It also gives the attention weights over time
(``hnsd_sb.pipeline`` computes them), and normalises speakers as the recipe does: a speaker with
statistics (from training, or enrolled here from reference recordings with ``enroll``) is
normalised with them, any other speaker with the ``unseen`` fallback of ``SpeakerNormalization``
(the recipes' model folders: the pooled statistics of all the speakers it knows). A model
trained with ``vector_normalization`` z-scores its pooled vectors per speaker too
(``PooledSpeakerNormalization``): with the statistics of the speakers it was trained on or of
those enrolled here, and for any other speaker with those of all the speakers it knows.
"""

import contextlib
import importlib
import logging
import os
from pathlib import Path

import torch
from speechbrain.inference.interfaces import Pretrained

from hnsd_sb import cpu, pipeline
from hnsd_sb.audio import load_audio
from hnsd_sb.model_info import DEFAULTS, MODEL_INFO_FILE, MODULE_CLASSES, read_architecture
from hnsd_sb.normalization import PooledSpeakerNormalization

logger = logging.getLogger(__name__)
# Peak amplitude below which an enrolment recording is taken as silence (-80 dB full scale).
SILENCE_PEAK = 1e-4
# Largest model a model folder may ask for: 30 times the paper's 3.4 M parameters. The
# architecture is sized on the meta device (no memory) before anything is allocated.
MAX_PARAMETERS = 100_000_000
# Fewest pooled vectors (enrolment windows) that give a speaker its own statistics of them: one
# vector has no spread; on RAVDESS's 8 classes a new speaker's own statistics beat the training
# speakers' from 8 files on, and lose by 3 to 13 points with 1 to 3 (experiments/proxy/
# SELECTION.md, "Outcome of the enrolment-minimum rules").
MIN_ENROLLED_VECTORS = 8
# Fewer enrolment windows than this, for a speaker the model has no statistics of, scored below
# not enrolling it at all in the same measurement (2 or 3 files: 48-50 % UA against 52 %).
MIN_USEFUL_ENROLMENT = 5


class EmotionRecognizer(Pretrained):
    """Speech emotion recognition with a trained HNSD model folder.

    Load it with ``EmotionRecognizer.from_folder(folder)``: a local folder only, so nothing is
    ever fetched from a hub, and no code from the folder runs. SpeechBrain's
    ``EmotionRecognizer.from_hparams(source=folder)`` and ``foreign_class(folder,
    pymodule_file="custom_interface.py", classname="EmotionRecognizer")`` also work, but run
    the folder's YAML and Python: use them only with folders you trust. Audio files of any
    sampling rate and channel count that soundfile reads are resampled to the model's rate and
    downmixed to mono.

    Arguments
    ---------
    *args, **kwargs
        As for ``speechbrain.inference.interfaces.Pretrained`` (``modules``, ``hparams``,
        ``run_opts``, ``freeze_params``); ``from_folder`` and ``from_hparams`` supply them.

    Example
    -------
    >>> from hnsd_sb import HNSD
    >>> from hnsd_sb.export import write_model_folder
    >>> folder = getfixture("tmpdir").join("model").strpath
    >>> spec = {"model": ("hnsd_sb.HNSD", {"hidden_size": 8, "fc_size": 4, "n_classes": 2})}
    >>> state = HNSD(hidden_size=8, fc_size=4, n_classes=2).state_dict()
    >>> _ = write_model_folder(folder, ["neg", "pos"], state, modules=spec)
    >>> recognizer = EmotionRecognizer.from_folder(folder)
    >>> probs, score, index, label = recognizer.classify_batch(torch.randn(2, 16000))
    >>> probs.shape, score.shape, index.shape, len(label)
    (torch.Size([2, 2]), torch.Size([2]), torch.Size([2]), 2)
    >>> bool(torch.allclose(probs.sum(1), torch.ones(2))), label[0] in ("neg", "pos")
    (True, True)
    """

    HPARAMS_NEEDED = ["labels", "sample_rate"]
    MODULES_NEEDED = ["features", "normalizer", "model"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        missing = [name for name in self.MODULES_NEEDED if name not in self.mods]
        if missing:
            raise ValueError(f"the hparams' modules lack {missing}")
        # A model trained with vector_normalization: its classifier reads the pooled vectors
        # z-scored per speaker, with the folder's vector_normalizer statistics (one per network:
        # an ensemble's members each have their own, see from_folders).
        self.vector_norms = []
        if "vector_normalizer" in self.mods:
            norm = PooledSpeakerNormalization(statistics=self.mods.vector_normalizer)
            norm.attach(self.mods.model)
            self.vector_norms.append(norm)
        self.enrolled = {}  # speaker -> enrolled waveforms, kept where vector_norms need them

    @classmethod
    def from_folder(cls, folder, run_opts=None, backend="torch"):
        """Loads a local model folder written by ``hnsd_sb.export``, running no code from it.

        The labels and the architecture come from the folder's ``model_info.json`` (plain
        JSON, checked against ``hnsd_sb.model_info.ARCHITECTURE``), only hnsd_sb's own
        feature, normaliser and model classes are built from them, and the weights are read
        with ``torch.load(weights_only=True)``. The folder's ``hyperparams.yaml`` and
        ``custom_interface.py`` are not read: they serve SpeechBrain's ``from_hparams`` and
        ``foreign_class``, which do run code from the folder.

        Arguments
        ---------
        folder : str or path-like
            The model folder (holding ``model_info.json``, ``model.ckpt``, ...).
        run_opts : dict or None
            SpeechBrain run options, e.g. ``{"device": "cuda:0"}``; the default device is the
            one SpeechBrain infers.
        backend : str
            What runs the network (``hnsd_sb.backends.BACKENDS``): ``"torch"``, ``"torch-int8"``,
            ``"onnx"`` or ``"onnx-int8"`` (CPU; the ONNX files come from ``hnsd export
            --format onnx``; an ONNX graph is data too: ONNX Runtime runs only its own operators,
            and ``model.onnx`` is checked against ``model.ckpt`` when loaded).

        Returns
        -------
        EmotionRecognizer
            Ready for inference (``eval`` mode, frozen parameters).

        Raises
        ------
        FileNotFoundError
            When ``folder`` is not a local model folder, or lacks a file it needs (naming it;
            ``vector_normalizer.ckpt`` where the architecture has a ``vector_normalizer``).
        ValueError
            When a file of the folder is invalid, tampered with, or from an older export; the
            message names the file and the field. Also when the folder holds
            ``vector_normalizer.ckpt`` but its architecture has no ``vector_normalizer``, and
            when an ONNX backend's graph of such a model does not take the vectors' moments.

        Example
        -------
        >>> EmotionRecognizer.from_folder("/no/such/model")
        Traceback (most recent call last):
        ...
        FileNotFoundError: /no/such/model: not a model folder (no model_info.json); ...
        """
        from hnsd_sb.weights import (
            MODEL_FILE,
            NORMALIZER_FILE,
            VECTOR_NORMALIZER_FILE,
            load_normalizer,
            load_weights,
        )

        path = Path(os.path.abspath(os.path.expanduser(str(folder))))
        labels, architecture = read_architecture(path)
        info_file = path / MODEL_INFO_FILE
        modules = {}
        for name, kwargs in architecture.items():
            module_name, class_name = MODULE_CLASSES[name].rsplit(".", 1)
            module_class = getattr(importlib.import_module(module_name), class_name)
            try:
                if name == "model":
                    with torch.device("meta"):
                        size = sum(p.numel() for p in module_class(**kwargs).parameters())
                    if size > MAX_PARAMETERS:
                        raise ValueError(
                            f"{size:,} parameters, more than the {MAX_PARAMETERS:,} allowed"
                        )
                modules[name] = module_class(**kwargs)
            except (ValueError, TypeError, RuntimeError) as err:
                raise ValueError(
                    f"{info_file}: architecture.{name} cannot be built: {err}"
                ) from None
        load_weights(modules["model"], path / MODEL_FILE)
        n_features = modules["model"].n_static + modules["model"].n_dynamic
        load_normalizer(modules["normalizer"], path / NORMALIZER_FILE, n_features)
        if "vector_normalizer" in modules:
            vector_file, size = path / VECTOR_NORMALIZER_FILE, modules["model"].utterance_size
            load_normalizer(modules["vector_normalizer"], vector_file, size)
        elif (path / VECTOR_NORMALIZER_FILE).exists():
            # classifying without the z-score the network was trained with would be silently wrong
            raise ValueError(
                f"{path / VECTOR_NORMALIZER_FILE}: pooled-vector statistics, but {info_file}'s "
                "architecture has no vector_normalizer to use them; export the run again"
            )
        if backend != "torch":
            modules["model"] = _backend_network(modules["model"], path, backend)
        sample_rate = architecture["features"]["sample_rate"]
        # the architecture stays at hand for from_folders, which checks members against it
        hparams = {"labels": labels, "sample_rate": sample_rate, "architecture": architecture}
        return cls(modules=modules, hparams=hparams, run_opts=run_opts)

    @classmethod
    def from_folders(cls, folders, run_opts=None, backend="torch"):
        """Loads several model folders as one recogniser that averages their probabilities.

        Runs of one recipe that differ only in their seed (or size) disagree on many
        utterances, and the mean of their probabilities is more accurate than the average run
        (``hnsd_sb.ensemble``). The folders are loaded as ``from_folder`` does, and must share
        the labels (in the same order), the features and the speaker statistics: the recording
        is turned into features and normalised once, then every member's network reads it.

        Arguments
        ---------
        folders : list of str or path-like
            Model folders written by ``hnsd_sb.export``; one folder gives ``from_folder``'s
            recogniser.
        run_opts : dict or None
            As for ``from_folder``.
        backend : str
            As for ``from_folder``, for every member.

        Returns
        -------
        EmotionRecognizer
            Its ``mods.model`` is an ``hnsd_sb.ensemble.HNSDEnsemble`` of the members'
            networks; attention weights are the members' mean.

        Raises
        ------
        FileNotFoundError, ValueError
            As ``from_folder``; and ValueError naming the folder whose labels, features or
            speaker statistics differ from the first folder's.

        Example
        -------
        >>> from hnsd_sb import HNSD
        >>> from hnsd_sb.export import write_model_folder
        >>> tmp = getfixture("tmpdir")
        >>> spec = {"model": ("hnsd_sb.HNSD", {"hidden_size": 8, "fc_size": 4, "n_classes": 2})}
        >>> folders = [write_model_folder(tmp.join(name).strpath, ["neg", "pos"],
        ...     HNSD(hidden_size=8, fc_size=4, n_classes=2).state_dict(), modules=spec)
        ...     for name in ("seed1", "seed2")]
        >>> both = EmotionRecognizer.from_folders(folders)
        >>> alone = [EmotionRecognizer.from_folder(folder) for folder in folders]
        >>> wavs = torch.randn(2, 16000)
        >>> mean = sum(r.classify_batch(wavs)[0] for r in alone) / 2
        >>> bool(torch.allclose(both.classify_batch(wavs)[0], mean, atol=1e-6))
        True
        """
        from hnsd_sb.ensemble import HNSDEnsemble

        folders = list(folders)
        if not folders:
            raise ValueError("no model folder given")
        first = cls.from_folder(folders[0], run_opts=run_opts, backend=backend)
        if len(folders) == 1:
            return first
        reference = _shared_parts(first)
        members, vector_norms = [first.mods.model], list(first.vector_norms)
        for folder in folders[1:]:
            member = cls.from_folder(folder, run_opts=run_opts, backend=backend)
            _check_member(folder, _shared_parts(member), folders[0], reference)
            members.append(member.mods.model)
            vector_norms += member.vector_norms  # each network keeps its own hook
        modules = {
            "features": first.mods.features,
            "normalizer": first.mods.normalizer,
            "model": HNSDEnsemble(members),
        }
        hparams = {"labels": first.labels, "sample_rate": first.sample_rate}
        ensemble = cls(modules=modules, hparams=hparams, run_opts=run_opts)
        ensemble.vector_norms = vector_norms
        return ensemble

    @property
    def labels(self):
        """Emotion of each output index (list of str)."""
        return list(self.hparams.labels)

    @property
    def sample_rate(self):
        """Sampling rate the model expects (Hz)."""
        return int(self.hparams.sample_rate)

    @property
    def frame_shift(self):
        """Time between feature frames in seconds (frame ``t`` is centred at ``t * shift``)."""
        return self.mods.features.hop_samples / self.sample_rate

    def load_audio(self, path, savedir=None, max_duration=None):
        """Loads an audio file as a mono waveform at the model's sampling rate.

        Arguments
        ---------
        path : str or path-like
            A local file in any format soundfile reads, any rate, any number of channels.
        savedir : None
            Unused; only local files are read (kept for ``Pretrained`` compatibility).
        max_duration : float or None
            Longest accepted recording in seconds, checked before decoding (None: no limit).

        Returns
        -------
        torch.Tensor
            ``[samples]`` float32 waveform on the interface's device.

        Raises
        ------
        hnsd_sb.audio.AudioError
            Naming the file, when it is missing, unreadable, empty, truncated, shorter than one
            analysis frame, longer than ``max_duration``, holds NaN / Inf or absurd samples, or
            declares an implausible sampling rate.
        """
        del savedir
        return load_audio(path, self.sample_rate, max_duration=max_duration).to(self.device)

    def _speakers(self, speakers, batch):
        """A per-utterance speaker list (or None) from None, one id, or a list."""
        if speakers is None:
            return None
        if isinstance(speakers, str):
            return [speakers] * batch
        speakers = list(speakers)
        if len(speakers) != batch:
            raise ValueError(f"got {len(speakers)} speakers for a batch of {batch}")
        return speakers

    def infer_batch(self, wavs, wav_lens=None, speakers=None):
        """Runs the recipe's pipeline: features, speaker normalisation, model.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms ``[batch, samples]`` (or one ``[samples]``) at ``sample_rate``.
        wav_lens : torch.Tensor or None
            Relative lengths ``[batch]``; None means all are full length.
        speakers : str, list of str or None
            Speaker of each waveform (one id for all); speakers without statistics, and None,
            use the normaliser's ``unseen`` fallback (and, for a model that z-scores its
            pooled vectors per speaker, all speakers' statistics of the vectors).

        Returns
        -------
        log_probs : torch.Tensor
            ``[batch, n_classes]``.
        attention : torch.Tensor
            Pooling weights over frames ``[batch, frames]`` (zero on padding).
        frame_lens : torch.Tensor
            Relative lengths in frames ``[batch]``.
        """
        wavs = torch.as_tensor(wavs)
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be [batch, samples], got shape {list(wavs.shape)}")
        wavs = wavs.to(self.device, torch.float32)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=self.device)
        wav_lens = torch.as_tensor(wav_lens).to(self.device, torch.float32)
        speakers = self._speakers(speakers, wavs.shape[0])
        with torch.no_grad(), contextlib.ExitStack() as stack:
            for norm in self.vector_norms:  # None: the pooled statistics of all speakers
                stack.enter_context(norm.for_speakers(speakers or [None] * wavs.shape[0]))
            return pipeline.classify(
                self.mods.features, self.mods.normalizer, self.mods.model, wavs, wav_lens, speakers
            )

    def classify_batch(self, wavs, wav_lens=None, speakers=None):
        """Classifies a batch of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms ``[batch, samples]`` (or one ``[samples]``) at ``sample_rate``.
        wav_lens : torch.Tensor or None
            Relative lengths ``[batch]``; None means all are full length.
        speakers : str, list of str or None
            Speaker of each waveform, see ``infer_batch``.

        Returns
        -------
        probabilities : torch.Tensor
            ``[batch, n_classes]``, in the order of ``labels``.
        score : torch.Tensor
            Probability of the predicted emotion ``[batch]``.
        index : torch.Tensor
            Index of the predicted emotion ``[batch]``.
        label : list of str
            The predicted emotions.
        """
        log_probs, _, _ = self.infer_batch(wavs, wav_lens, speakers)
        probabilities = log_probs.exp()
        score, index = probabilities.max(dim=-1)
        return probabilities, score, index, [self.labels[i] for i in index.tolist()]

    def classify_file(self, path, speaker=None):
        """Classifies one audio file.

        Arguments
        ---------
        path : str or path-like
            Audio file (any rate and channel count; see ``load_audio``).
        speaker : str or None
            Its speaker, when known to the normaliser (trained or enrolled).

        Returns
        -------
        tuple
            As ``classify_batch`` for a batch of one.
        """
        return self.classify_batch(self.load_audio(path).unsqueeze(0), None, speaker)

    def attention_file(self, path, speaker=None):
        """How much each moment of a file weighs in its classification.

        Arguments
        ---------
        path : str or path-like
            Audio file.
        speaker : str or None
            Its speaker, when known to the normaliser.

        Returns
        -------
        times : torch.Tensor
            Centre of each feature frame in seconds ``[frames]``.
        weights : torch.Tensor
            Attention weight of each frame ``[frames]`` (they sum to 1; uniform with mean
            pooling).
        """
        _, attention, _ = self.infer_batch(self.load_audio(path).unsqueeze(0), None, speaker)
        weights = attention[0].cpu()
        times = torch.arange(weights.shape[0], dtype=torch.float32) * self.frame_shift
        return times, weights

    def enroll(self, speaker, recordings):
        """Adds reference recordings of a speaker to the normaliser's statistics.

        Afterwards ``classify_file(path, speaker)`` normalises with that speaker's statistics,
        as the recipe does for the speakers it has seen, instead of the ``unseen`` fallback.
        Enrolling a speaker again adds to its statistics. A model that z-scores its pooled
        vectors per speaker keeps the speaker's recordings (in memory) and gathers the vectors'
        statistics afresh from all of them, with the speaker's feature statistics as they now
        are, one vector per window of about ``segments.DEFAULT_SEGMENT`` seconds (the length of
        the utterances it learned from). With at least ``MIN_ENROLLED_VECTORS`` (8) windows those
        replace any the model had for the speaker; with fewer, a warning says so and the
        speaker keeps the vectors' statistics it had (a trained speaker's), or none (all
        speakers' then z-score its vectors). A new speaker with fewer than
        ``MIN_USEFUL_ENROLMENT`` (5) windows is also warned that such an enrolment scored below
        not enrolling at all (RAVDESS, 8 classes): classify it without a speaker instead.

        Arguments
        ---------
        speaker : str
            Speaker id.
        recordings : list
            Audio files, or ``[samples]`` waveforms at ``sample_rate``.

        Returns
        -------
        float
            Seconds of audio added.

        Example
        -------
        >>> from hnsd_sb.export import write_model_folder
        >>> from hnsd_sb import HNSD
        >>> folder = getfixture("tmpdir").join("model").strpath
        >>> spec = {"model": ("hnsd_sb.HNSD", {"hidden_size": 8, "n_classes": 2})}
        >>> state = HNSD(hidden_size=8, n_classes=2).state_dict()
        >>> recognizer = EmotionRecognizer.from_folder(
        ...     write_model_folder(folder, ["neg", "pos"], state, modules=spec))
        >>> recognizer.enroll("alice", [torch.randn(16000), torch.randn(8000)])
        1.5
        >>> "alice" in recognizer.mods.normalizer.speakers
        True
        """
        total = 0.0
        for i, recording in enumerate(recordings):
            if isinstance(recording, (str, os.PathLike)):
                wav = self.load_audio(recording)
            else:
                wav = torch.as_tensor(recording).to(self.device, torch.float32)
            peak = float(wav.abs().max()) if wav.numel() else 0.0
            if peak < SILENCE_PEAK:
                name = recording if isinstance(recording, (str, os.PathLike)) else f"#{i}"
                logger.warning(
                    "enrolment recording %s is silent (peak %.1e): its statistics say nothing "
                    "about %r's voice",
                    name,
                    peak,
                    speaker,
                )
            self.accumulate(speaker, wav)
            if self.vector_norms:
                self.enrolled.setdefault(speaker, []).append(wav.detach().cpu())
            total += wav.numel() / self.sample_rate
        if self.vector_norms and speaker in self.enrolled:
            self._gather_vectors(speaker)
        return total

    def _gather_vectors(self, speaker):
        """Replaces the speaker's statistics of the pooled vectors by those of its enrolled
        recordings' windows, one at a time (no padding), in every network's normaliser at once;
        with too few windows, leaves them as they were and warns."""
        from hnsd_sb.segments import DEFAULT_SEGMENT

        window = DEFAULT_SEGMENT * self.sample_rate
        spans = []
        for wav in self.enrolled[speaker]:
            spans += torch.tensor_split(wav, max(1, round(wav.numel() / window)))
        if len(spans) < MIN_ENROLLED_VECTORS:
            trained = speaker in self.vector_norms[0].statistics.stats
            logger.warning(
                "%r: %d enrolment windows of about %g s, fewer than the %d the pooled vectors' "
                "statistics need; its vectors keep %s statistics (enrol more recordings)%s",
                speaker,
                len(spans),
                DEFAULT_SEGMENT,
                MIN_ENROLLED_VECTORS,
                "its trained" if trained else "all speakers'",
                ""
                if trained or len(spans) >= MIN_USEFUL_ENROLMENT
                else f". With fewer than {MIN_USEFUL_ENROLMENT}, enrolling a new speaker scored "
                "below not enrolling it at all (RAVDESS): enrol more, or classify without it",
            )
            return
        with contextlib.ExitStack() as stack:
            for norm in self.vector_norms:
                norm.statistics.forget(speaker)
                stack.enter_context(norm.collecting(reset=False))
            for span in spans:
                self.infer_batch(span.unsqueeze(0), None, speaker)

    def accumulate(self, speaker, wav):
        """Adds one waveform's feature statistics to a speaker's (``enroll`` without the
        checks; ``hnsd_sb.segments`` feeds it a long recording span by span).

        Arguments
        ---------
        speaker : str
            Speaker id.
        wav : torch.Tensor
            ``[samples]`` at ``sample_rate``, at least one analysis frame long.
        """
        wav = wav.to(self.device, torch.float32).reshape(1, -1)
        ones = torch.ones(1, device=self.device)
        pipeline.accumulate_statistics(
            self.mods.features, self.mods.normalizer, wav, ones, [speaker]
        )

    def forward(self, wavs, wav_lens=None, speakers=None):
        """Classifies a batch of waveforms: see ``classify_batch``.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms ``[batch, samples]``.
        wav_lens : torch.Tensor or None
            Relative lengths ``[batch]``.
        speakers : str, list of str or None
            Speaker of each waveform.

        Returns
        -------
        tuple
            ``(probabilities, score, index, label)``.
        """
        return self.classify_batch(wavs, wav_lens, speakers)


def _backend_network(model, folder, backend):
    """The network of a model folder run by another backend (``hnsd_sb.backends``)."""
    from hnsd_sb import backends

    if backend not in backends.BACKENDS:
        raise ValueError(f"backend must be one of {backends.BACKENDS}, got {backend!r}")
    if backend == "torch-int8":
        # int8 LSTMs run faster side by side than one after the other with the threads split
        # (benchmarks/RESULTS.md); fp32 ones do not, so only the int8 copy stays accelerated
        quantized = backends.quantize_torch(cpu.accelerate(model))
        cpu.accelerate(model, enabled=False)
        return quantized
    name = backends.ONNX_FILE if backend == "onnx" else backends.ONNX_INT8_FILE
    network = backends.OnnxNetwork(folder / name)
    if backend == "onnx":  # the graph must be the network of model.ckpt
        try:
            backends.check_onnx(model, folder / name)
        except Exception as err:  # ONNX Runtime rejects a graph with many exception types
            raise ValueError(f"{folder / name}: not the network of model.ckpt ({err})") from None
    return network


def _shared_parts(recognizer):
    """What the members of an ensemble must share: labels, features and normaliser settings
    (with the defaults filled in), and the speaker statistics."""
    architecture = recognizer.hparams.architecture
    features = {**DEFAULTS["features"], **architecture["features"]}
    return {
        "labels": recognizer.labels,
        "features": features,
        "normalizer": architecture["normalizer"],
        "statistics": recognizer.mods.normalizer.state(),
    }


def _check_member(folder, parts, first_folder, reference):
    """Raises ValueError naming ``folder`` where its shared parts differ from the first's."""
    for key in ("labels", "features", "normalizer"):
        if parts[key] != reference[key]:
            raise ValueError(
                f"{folder}: its {key} ({parts[key]}) differ from those of {first_folder} "
                f"({reference[key]}); an ensemble's models must share them"
            )
    ours, theirs = parts["statistics"], reference["statistics"]
    same = ours["speakers"] == theirs["speakers"] and all(
        _close(ours[key], theirs[key]) for key in ("count", "sum", "sumsq")
    )
    if not same:
        raise ValueError(
            f"{folder}: its speaker statistics differ from those of {first_folder} "
            f"({len(ours['speakers'])} speakers against {len(theirs['speakers'])}); an "
            "ensemble's models must come from runs on the same training data"
        )


def _close(a, b):
    """Whether two optional statistics tensors are equal up to float summation order."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-8)
