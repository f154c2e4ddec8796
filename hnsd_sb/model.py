"""The HNSD model: two LSTM encoders, GMU fusion, attention pooling and a classifier.

Cao et al., "Hierarchical Network Based on the Fusion of Static and Dynamic Features for Speech
Emotion Recognition", ICASSP 2021. ``HNSD`` is assembled from its parts (encoders, fusion,
pooling, classifier), which a hparams file gives it; the variants the paper argues against swap
one part. ``paper_parts`` builds the parts from sizes and the ablation names, the form in which
model folders describe a model (``model_info.json``).
"""

import functools

import torch

from hnsd_sb.baseline import DEFAULT_QUANTILES, DEFAULT_STATISTICS, utterance_functionals
from hnsd_sb.fusion import ConcatFusion, GatedMultiFeatureUnit
from hnsd_sb.normalization import real_frame_mask
from hnsd_sb.pooling import AdditiveAttentionPooling, AttentiveStatisticsPooling, MeanPooling

STREAMS = ("two", "static", "dynamic", "early")
FUSIONS = ("gmu", "concat")
POOLINGS = ("attention", "mean", "attention_stats")


def reverse_within_length(x, n_frames):
    """Reverses each sequence's real frames in time, leaving its padding at the end.

    Arguments
    ---------
    x : torch.Tensor
        ``[batch, time, size]``.
    n_frames : torch.Tensor
        Real frames of each sequence ``[batch]``.

    Returns
    -------
    torch.Tensor
        Same shape; applying it twice gives ``x`` back.

    Example
    -------
    >>> x = torch.arange(4.0).view(1, 4, 1)
    >>> reverse_within_length(x, torch.tensor([3])).flatten().tolist()
    [2.0, 1.0, 0.0, 3.0]
    """
    time = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    n = n_frames.to(x.device).unsqueeze(1)
    index = torch.where(time < n, n - 1 - time, time)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class SequenceEncoder(torch.nn.Module):
    """An LSTM encoder whose outputs on real frames ignore the padding of the batch.

    A forward LSTM is causal, so padding at the end cannot reach the real frames: the padded
    batch runs through PyTorch's fused LSTM as is (packing sequences instead is about 30 times
    slower on CPU). The backward direction of a bidirectional encoder reads each sequence
    reversed within its own length, which keeps the same guarantee. Outputs on padded frames
    are zero.

    Arguments
    ---------
    input_size : int
        Size of the input frames.
    hidden_size : int
        LSTM units (per direction).
    num_layers : int
        Stacked LSTM layers.
    bidirectional : bool
        Whether to read the sequence in both directions.
    dropout : float
        Dropout between stacked layers.
    stack_frames : int
        Consecutive frames the LSTM reads as one step, their vectors concatenated (1: a step
        per frame, the paper). Each step's output is repeated over the frames it covers, so
        the encoder still gives one vector per frame; frames past a sequence's end are zeroed
        before stacking, so that its outputs do not depend on the batch's padding.

    Example
    -------
    >>> enc = SequenceEncoder(3, 8)
    >>> out = enc(torch.randn(2, 7, 3), torch.tensor([1.0, 4 / 7]))
    >>> out.shape, out[1, 4:].abs().sum().item()
    (torch.Size([2, 7, 8]), 0.0)
    >>> out = SequenceEncoder(3, 8, stack_frames=3)(torch.randn(1, 7, 3))
    >>> out.shape, bool((out[0, 0] == out[0, 2]).all()), bool((out[0, 2] == out[0, 3]).all())
    (torch.Size([1, 7, 8]), True, False)
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
        stack_frames=1,
    ):
        super().__init__()
        if not isinstance(stack_frames, int) or isinstance(stack_frames, bool) or stack_frames < 1:
            raise ValueError(f"stack_frames must be a whole number >= 1, got {stack_frames!r}")
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.bidirectional = bidirectional
        self.stack_frames = stack_frames
        self.out_size = hidden_size * (2 if bidirectional else 1)
        input_size = input_size * self.stack_frames
        if not bidirectional:
            self.lstm = torch.nn.LSTM(
                input_size,
                hidden_size,
                num_layers=num_layers,
                batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0,
            )
            return
        sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self.forward_layers = torch.nn.ModuleList(
            torch.nn.LSTM(size, hidden_size, batch_first=True) for size in sizes
        )
        self.backward_layers = torch.nn.ModuleList(
            torch.nn.LSTM(size, hidden_size, batch_first=True) for size in sizes
        )
        self.layer_dropout = torch.nn.Dropout(dropout)

    def forward(self, x, lengths=None, per_step=False):
        """Encodes a padded batch.

        Arguments
        ---------
        x : torch.Tensor
            ``[batch, time, input_size]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``; ``None`` means all are full length.
        per_step : bool
            Return one vector per step (``stack_frames`` frames), not per frame.

        Returns
        -------
        torch.Tensor
            ``[batch, time, out_size]``, zero on padded frames (with ``per_step``:
            ``[batch, steps, out_size]``, zero on steps past the end).
        """
        if lengths is None:
            lengths = torch.ones(x.shape[0], device=x.device)
        n_time, k = x.shape[1], self.stack_frames
        mask = real_frame_mask(lengths, n_time, x.device).unsqueeze(-1)
        n_frames = mask.sum(dim=1).squeeze(-1)
        step_mask = mask
        if k > 1:
            x = torch.nn.functional.pad(x * mask, (0, 0, 0, (-n_time) % k))
            x = x.reshape(x.shape[0], x.shape[1] // k, k * x.shape[2])
            n_frames = torch.div(n_frames + k - 1, k, rounding_mode="floor")
            steps = torch.arange(x.shape[1], device=x.device)
            step_mask = (steps < n_frames.unsqueeze(1)).unsqueeze(-1)
        if not self.bidirectional:
            x = self.lstm(x)[0]
        else:
            for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers)):
                if i > 0:
                    x = self.layer_dropout(x)
                back = reverse_within_length(bwd(reverse_within_length(x, n_frames))[0], n_frames)
                x = torch.cat([fwd(x)[0], back], dim=-1) * step_mask
        if per_step:
            return x * step_mask
        return repeat_steps(x, k, n_time) * mask


def repeat_steps(x, stack_frames, n_time):
    """Gives each step's vector to each of the ``stack_frames`` frames it covers.

    Arguments
    ---------
    x : torch.Tensor
        Step vectors ``[batch, steps, size]``.
    stack_frames : int
        Frames per step.
    n_time : int
        Frames to return (the last step may cover fewer).

    Returns
    -------
    torch.Tensor
        ``[batch, n_time, size]``.

    Example
    -------
    >>> repeat_steps(torch.tensor([[[1.0], [2.0]]]), 3, 5).flatten().tolist()
    [1.0, 1.0, 1.0, 2.0, 2.0]
    """
    if stack_frames == 1:
        return x
    return x.repeat_interleave(stack_frames, dim=1)[:, :n_time]


def shared_stack_frames(*encoders):
    """The frames a step that all these encoders read (``SequenceEncoder.stack_frames``), or
    1 when they differ or any reads a step per frame. A per-frame part after them (the GMU)
    then runs once a step, on a ``stack_frames``-th of the vectors, with the same result on
    every real frame.

    Arguments
    ---------
    *encoders : torch.nn.Module
        The encoders.

    Returns
    -------
    int
        The shared number of frames per step.

    Example
    -------
    >>> shared_stack_frames(SequenceEncoder(2, 4, stack_frames=3), SequenceEncoder(2, 4))
    1
    """
    ks = {e.stack_frames if isinstance(e, SequenceEncoder) else 1 for e in encoders}
    return ks.pop() if len(ks) == 1 else 1


class UtteranceClassifier(torch.nn.Module):
    """HNSD's classifier head: a fully connected layer (ReLU) and the output layer, returning
    log-probabilities (the paper's softmax, in log form for the NLL loss).

    The paper does not name the fully connected layer's activation; ReLU is our choice.

    Arguments
    ---------
    input_size : int
        Size of the pooled utterance vector.
    fc_size : int
        Units of the fully connected layer (128 in the paper).
    n_classes : int
        Number of emotions.
    dropout : float
        Dropout on the pooled vector and on the fully connected layer's output, in training.

    Example
    -------
    >>> head = UtteranceClassifier(16, fc_size=8, n_classes=3).eval()
    >>> logp = head(torch.randn(2, 16))
    >>> logp.shape, bool(torch.allclose(logp.exp().sum(dim=1), torch.ones(2)))
    (torch.Size([2, 3]), True)
    """

    def __init__(self, input_size, fc_size=128, n_classes=4, dropout=0.0):
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.fc = torch.nn.Linear(input_size, fc_size)
        self.output = torch.nn.Linear(fc_size, n_classes)

    def forward(self, u):
        """Classifies pooled utterance vectors.

        Arguments
        ---------
        u : torch.Tensor
            ``[batch, input_size]``.

        Returns
        -------
        torch.Tensor
            Log-probabilities ``[batch, n_classes]``.
        """
        hidden = self.dropout(torch.relu(self.fc(self.dropout(u))))
        return torch.log_softmax(self.output(hidden), dim=-1)


class FunctionalsExpert(torch.nn.Module):
    """A second classifier beside HNSD's head: a linear layer on the utterance functionals of
    both input streams, the features of the statistics baseline (``hnsd_sb.baseline``).

    HNSD multiplies its head's probabilities by this expert's and renormalises (a product of
    experts). The two learn separately: in training HNSD returns the sum of the two
    log-probabilities, whose negative log-likelihood is the sum of each one's, so neither
    learns to lean on the other. On the test actors of the RAVDESS recipe HNSD and the baseline
    err on different utterances, and their fused probabilities beat both; this trains the pair
    as one model. It is an option, off in every recipe: on validation actors it fell short of
    its rule (RAVDESS README, "HNSD and the baseline err on different utterances" and "A
    functionals expert beside the head").

    Arguments
    ---------
    input_size : int
        Features per frame (both streams, ``n_static + n_dynamic``).
    n_classes : int
        Number of emotions.
    statistics, quantiles : sequence
        The functionals (``utterance_functionals``); the baseline's by default.

    Example
    -------
    >>> expert = FunctionalsExpert(3, n_classes=2)
    >>> logp = expert(torch.randn(4, 10, 3), torch.tensor([1.0, 1.0, 0.5, 0.3]))
    >>> logp.shape, bool(torch.allclose(logp.exp().sum(dim=1), torch.ones(4)))
    (torch.Size([4, 2]), True)
    """

    def __init__(
        self,
        input_size,
        n_classes,
        statistics=DEFAULT_STATISTICS,
        quantiles=DEFAULT_QUANTILES,
    ):
        super().__init__()
        self.statistics, self.quantiles = tuple(statistics), tuple(quantiles)
        n_functionals = len(self.statistics) + len(self.quantiles)
        self.output = torch.nn.Linear(input_size * n_functionals, n_classes)

    def forward(self, feats, lengths=None):
        """Classifies utterances by their functionals.

        Arguments
        ---------
        feats : torch.Tensor
            ``[batch, time, input_size]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``; ``None`` means all are full length.

        Returns
        -------
        torch.Tensor
            Log-probabilities ``[batch, n_classes]``.
        """
        x = utterance_functionals(feats, lengths, self.quantiles, self.statistics)
        return torch.log_softmax(self.output(x), dim=-1)


def paper_parts(
    hidden_size=512,
    attention_size=16,
    fc_size=128,
    n_classes=4,
    fusion_size=None,
    num_layers=1,
    bidirectional=False,
    dropout=0.0,
    streams="two",
    fusion="gmu",
    pooling="attention",
    expert=False,
    stack_frames=1,
):
    """The parts of an HNSD model given by sizes and ablation names, as factories for ``HNSD``.

    This is how model folders describe a model (``model_info.json``, checked against a schema
    before anything is built) and what ``HNSD(hidden_size=..., ...)`` builds; ``HNSD.sizes``
    gives the sizes back. Hparams files give ``HNSD`` its parts directly.

    Arguments
    ---------
    hidden_size : int
        LSTM units of each encoder.
    attention_size : int
        Hidden size of the attention scorer.
    fc_size : int
        Units of the fully connected layer.
    n_classes : int
        Number of emotions.
    fusion_size : int
        Output size of the GMU; ``None`` means ``hidden_size``.
    num_layers : int
        LSTM layers per encoder.
    bidirectional : bool
        Bidirectional encoders (the paper's are unidirectional).
    dropout : float
        Dropout between stacked LSTM layers and in the classifier head.
    streams : str
        ``"two"`` (HNSD), ``"static"`` or ``"dynamic"`` (one stream alone), or ``"early"`` (both
        streams concatenated into one LSTM: the direct fusion the paper argues against).
    fusion : str
        ``"gmu"`` (HNSD) or ``"concat"`` (ungated); used only when ``streams="two"``.
    pooling : str
        ``"attention"`` (HNSD), ``"mean"``, or ``"attention_stats"`` (the same attention, with
        the weighted standard deviation beside the weighted mean).
    expert : bool
        A ``FunctionalsExpert`` beside the classifier head.
    stack_frames : int
        Frames each encoder reads as one step (1: a step per frame, the paper).

    Returns
    -------
    dict
        ``HNSD``'s part arguments (``static_encoder``, ``dynamic_encoder``, ``joint_encoder``,
        ``fusion``, ``pooling``, ``classifier``, ``expert``): factories, or ``None`` for an
        unused part.

    Example
    -------
    >>> parts = paper_parts(hidden_size=8, streams="static")
    >>> parts["dynamic_encoder"] is None, parts["static_encoder"](26).out_size
    (True, 8)
    """
    for name, value, allowed in (
        ("streams", streams, STREAMS),
        ("fusion", fusion, FUSIONS),
        ("pooling", pooling, POOLINGS),
    ):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    lstm = functools.partial(
        SequenceEncoder,
        hidden_size=hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout,
        stack_frames=stack_frames,
    )
    gmu = functools.partial(GatedMultiFeatureUnit, out_size=fusion_size or hidden_size)
    return {
        "static_encoder": lstm if streams in ("two", "static") else None,
        "dynamic_encoder": lstm if streams in ("two", "dynamic") else None,
        "joint_encoder": lstm if streams == "early" else None,
        "fusion": None if streams != "two" else gmu if fusion == "gmu" else ConcatFusion,
        "pooling": (
            MeanPooling
            if pooling == "mean"
            else functools.partial(
                AttentiveStatisticsPooling
                if pooling == "attention_stats"
                else AdditiveAttentionPooling,
                attention_size=attention_size,
            )
        ),
        "classifier": functools.partial(
            UtteranceClassifier, fc_size=fc_size, n_classes=n_classes, dropout=dropout
        ),
        "expert": FunctionalsExpert if expert else None,
    }


def _built(part, *sizes):
    """A part as a module: given built, or built by its factory from its input sizes."""
    if part is None or isinstance(part, torch.nn.Module):
        return part
    return part(*sizes)


class HNSD(torch.nn.Module):
    """Hierarchical network fusing static and dynamic features for emotion recognition.

    Assembled from its parts: an encoder per stream (so the streams do not interfere), a fusion
    of the two frame by frame, a pooling over the real frames, and a classifier head. Each part
    is given built (a module) or as a factory (a class, or ``!name:`` in a hparams file) that
    the model calls with the part's input sizes: ``n_static`` / ``n_dynamic`` for the
    encoders, the encoders' ``out_size`` for the fusion, the frame size for the pooling, and the
    pooling's ``out_size`` (the frame size if it has none) for the classifier. Encoders and
    fusions report their ``out_size``.

    The paper's model: ``SequenceEncoder`` LSTMs (512), ``GatedMultiFeatureUnit``,
    ``AdditiveAttentionPooling`` (16) and ``UtteranceClassifier`` (128). Its ablations:

    - one stream alone: only ``static_encoder`` or only ``dynamic_encoder``, no ``fusion``;
    - early fusion: ``joint_encoder`` alone, reading both streams concatenated;
    - ungated fusion: ``fusion`` = ``ConcatFusion``; mean pooling: ``pooling`` = ``MeanPooling``.

    Called with sizes instead of parts (``HNSD(hidden_size=16, n_classes=4)``, the keyword
    arguments of ``paper_parts``), it builds the paper's parts or a named ablation: the form in
    which model folders describe a model.

    Arguments
    ---------
    n_static : int
        Size of the static stream (log-Mel energies).
    n_dynamic : int
        Size of the dynamic stream (deltas and delta-deltas).
    static_encoder, dynamic_encoder : torch.nn.Module or callable or None
        The encoder of each stream (``[batch, time, size]`` and relative lengths to frame
        vectors), or ``None`` for a stream that is not used.
    fusion : torch.nn.Module or callable or None
        Fuses the two encoders' frames (``None`` when one encoder is used), vector by vector:
        when both encoders read ``stack_frames`` frames a step, it is given their step vectors
        (``[batch, steps, size]``) and its output is repeated over each step's frames.
    pooling : torch.nn.Module or callable
        Frame vectors and relative lengths to an utterance vector (and the frame weights).
    classifier : torch.nn.Module or callable
        Utterance vector to log-probabilities.
    expert : torch.nn.Module or callable or None
        A second classifier of the utterance, e.g. ``FunctionalsExpert``, given both streams
        concatenated (its factory: their size and the number of emotions); HNSD multiplies
        its probabilities with the head's. ``None`` (the paper): the head alone.
    joint_encoder : torch.nn.Module or callable or None
        One encoder of both streams concatenated (early fusion), instead of the other three.
    **sizes
        Without parts: the keyword arguments of ``paper_parts``.

    Example
    -------
    >>> from functools import partial
    >>> model = HNSD(
    ...     static_encoder=partial(SequenceEncoder, hidden_size=16),
    ...     dynamic_encoder=partial(SequenceEncoder, hidden_size=16),
    ...     fusion=partial(GatedMultiFeatureUnit, out_size=16),
    ...     pooling=AdditiveAttentionPooling,
    ...     classifier=partial(UtteranceClassifier, fc_size=8, n_classes=4),
    ... ).eval()
    >>> static, dynamic = torch.randn(3, 20, 26), torch.randn(3, 20, 52)
    >>> logp = model(static, dynamic, torch.tensor([1.0, 0.8, 0.5]))
    >>> logp.shape
    torch.Size([3, 4])
    >>> bool(torch.allclose(logp.exp().sum(dim=1), torch.ones(3)))
    True
    >>> HNSD(hidden_size=16, fc_size=8, n_classes=4).sizes()["streams"]
    'two'
    """

    def __init__(
        self,
        n_static=26,
        n_dynamic=52,
        *,
        static_encoder=None,
        dynamic_encoder=None,
        fusion=None,
        pooling=None,
        classifier=None,
        joint_encoder=None,
        expert=None,
        **sizes,
    ):
        super().__init__()
        parts = {
            "static_encoder": static_encoder,
            "dynamic_encoder": dynamic_encoder,
            "joint_encoder": joint_encoder,
            "fusion": fusion,
            "pooling": pooling,
            "classifier": classifier,
            "expert": None if expert is False else expert,  # False: none, as null
        }
        # Sizes (and the ablation names "fusion" and "pooling" and the expert switch, as model
        # folders write them)
        named = {k: v for k, v in parts.items() if isinstance(v, (str, bool))}
        if named or all(v is None for v in parts.values()):
            others = [k for k, v in parts.items() if v is not None and k not in named]
            if others:
                raise TypeError(
                    f"HNSD takes parts or sizes, not both: {others} and {named} (in a hparams "
                    "file, swap the part itself, e.g. fusion: !name:hnsd_sb.ConcatFusion)"
                )
            parts = paper_parts(**sizes, **named)
        elif sizes:
            raise TypeError(f"HNSD takes parts or sizes, not both: {sorted(sizes)}")
        self.n_static, self.n_dynamic = n_static, n_dynamic
        self.static_encoder = _built(parts["static_encoder"], n_static)
        self.dynamic_encoder = _built(parts["dynamic_encoder"], n_dynamic)
        self.joint_encoder = _built(parts["joint_encoder"], n_static + n_dynamic)
        encoders = [self.static_encoder, self.dynamic_encoder, self.joint_encoder]
        used = [e for e in encoders if e is not None]
        two = self.static_encoder is not None and self.dynamic_encoder is not None
        if not used or (self.joint_encoder is not None and len(used) > 1):
            raise ValueError("HNSD needs static/dynamic encoders, or a joint_encoder alone")
        if two != (parts["fusion"] is not None):
            raise ValueError("HNSD fuses two stream encoders: give a fusion with both, else none")
        if parts["pooling"] is None or parts["classifier"] is None:
            raise ValueError("HNSD needs a pooling and a classifier")
        if two:
            self.fusion = _built(
                parts["fusion"], self.static_encoder.out_size, self.dynamic_encoder.out_size
            )
            frame_size = self.fusion.out_size
        else:
            self.fusion = None
            frame_size = used[0].out_size
        self.pooling = _built(parts["pooling"], frame_size)
        # A pooling may return more than a frame (e.g. mean and standard deviation)
        self.utterance_size = getattr(self.pooling, "out_size", frame_size)  # classifier input
        self.classifier = _built(parts["classifier"], self.utterance_size)
        self.expert = None
        if parts["expert"] is not None:  # it classifies both streams into the head's emotions
            n_classes = self.classifier.output.out_features
            self.expert = _built(parts["expert"], n_static + n_dynamic, n_classes)
        # Checkpoints written before the parts had their place (fc, output and a single
        # encoder at the top) still load: their keys are renamed on the way in.
        self.register_load_state_dict_pre_hook(_rename_older_keys)

    @property
    def streams(self):
        """Which streams the model reads: ``"two"``, ``"static"``, ``"dynamic"`` or
        ``"early"`` (``paper_parts``' names).

        Returns
        -------
        str
            The name.
        """
        if self.joint_encoder is not None:
            return "early"
        if self.fusion is not None:
            return "two"
        return "static" if self.static_encoder is not None else "dynamic"

    def sizes(self):
        """The sizes and ablation names that rebuild this model (``HNSD(**model.sizes())``):
        the ``model`` entry of a model folder's ``model_info.json``.

        Returns
        -------
        dict
            The keyword arguments of ``paper_parts``, with ``n_static`` and ``n_dynamic``.

        Raises
        ------
        ValueError
            A part is not one of hnsd_sb's, so a model folder cannot describe it.

        Example
        -------
        >>> HNSD(hidden_size=8, n_classes=2, pooling="mean").sizes()["pooling"]
        'mean'
        """
        encoder = self.joint_encoder or self.static_encoder or self.dynamic_encoder
        known = {
            "encoder": (encoder, (SequenceEncoder,)),
            "fusion": (self.fusion, (GatedMultiFeatureUnit, ConcatFusion, type(None))),
            "pooling": (
                self.pooling,
                (AdditiveAttentionPooling, AttentiveStatisticsPooling, MeanPooling),
            ),
            "classifier": (self.classifier, (UtteranceClassifier,)),
            "expert": (self.expert, (FunctionalsExpert, type(None))),
        }
        for name, (part, classes) in known.items():
            if type(part) not in classes:
                raise ValueError(
                    f"the model's {name} is a {type(part).__name__}, which a model folder "
                    "cannot describe (it holds hnsd_sb's parts, see hnsd_sb.model.paper_parts)"
                )
        sizes = {
            "n_static": self.n_static,
            "n_dynamic": self.n_dynamic,
            "hidden_size": encoder.hidden_size,
            "fc_size": self.classifier.fc.out_features,
            "n_classes": self.classifier.output.out_features,
            "num_layers": encoder.num_layers,
            "bidirectional": encoder.bidirectional,
            "dropout": self.classifier.dropout.p,
            "streams": self.streams,
        }
        if isinstance(self.expert, FunctionalsExpert):
            sizes["expert"] = True
        if encoder.stack_frames > 1:  # absent at 1, so that such folders read as before
            sizes["stack_frames"] = encoder.stack_frames
        if isinstance(self.fusion, GatedMultiFeatureUnit):
            sizes.update(fusion="gmu", fusion_size=self.fusion.out_size)
        elif isinstance(self.fusion, ConcatFusion):
            sizes["fusion"] = "concat"
        if isinstance(self.pooling, AdditiveAttentionPooling):
            stats = isinstance(self.pooling, AttentiveStatisticsPooling)
            sizes.update(
                pooling="attention_stats" if stats else "attention",
                attention_size=self.pooling.score.in_features,
            )
        else:
            sizes["pooling"] = "mean"
        with torch.device("meta"):
            rebuilt = HNSD(**sizes).state_dict()
        mine = self.state_dict()
        if {k: v.shape for k, v in rebuilt.items()} != {k: v.shape for k, v in mine.items()}:
            raise ValueError(
                "the model's parts differ from the paper's parts of the same sizes (e.g. "
                "encoders of different sizes), which a model folder cannot describe"
            )
        return sizes

    def frames(self, static, dynamic, lengths=None):
        """Encodes and fuses the streams into one vector per frame.

        This is the plain PyTorch form; ``hnsd_sb.cpu.accelerate(model)`` replaces it on a model
        with a faster, equivalent one for CPUs. When both encoders read ``stack_frames`` frames
        a step, the streams are fused once a step and each step's vector repeated over its
        frames (the same on real frames; past a sequence's end, where pooling looks at
        nothing, a partial step's padded frames carry its vector).

        Arguments
        ---------
        static : torch.Tensor
            ``[batch, time, n_static]``.
        dynamic : torch.Tensor
            ``[batch, time, n_dynamic]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``.

        Returns
        -------
        torch.Tensor
            Fused frame vectors ``[batch, time, frame_size]``.

        Example
        -------
        >>> model = HNSD(hidden_size=16)
        >>> model.frames(torch.randn(2, 9, 26), torch.randn(2, 9, 52)).shape
        torch.Size([2, 9, 16])
        """
        if self.joint_encoder is not None:
            return self.joint_encoder(torch.cat([static, dynamic], dim=-1), lengths)
        if self.fusion is None:
            if self.static_encoder is not None:
                return self.static_encoder(static, lengths)
            return self.dynamic_encoder(dynamic, lengths)
        k = shared_stack_frames(self.static_encoder, self.dynamic_encoder)
        if k > 1:  # fused once a step, given to each frame of the step
            fused = self.fusion(
                self.static_encoder(static, lengths, per_step=True),
                self.dynamic_encoder(dynamic, lengths, per_step=True),
            )
            return repeat_steps(fused, k, static.shape[1])
        return self.fusion(
            self.static_encoder(static, lengths), self.dynamic_encoder(dynamic, lengths)
        )

    def forward(self, static, dynamic, lengths=None, return_attention=False):
        """Classifies a batch of utterances.

        Arguments
        ---------
        static : torch.Tensor
            ``[batch, time, n_static]``.
        dynamic : torch.Tensor
            ``[batch, time, n_dynamic]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``; ``None`` means all are full length.
        return_attention : bool
            Also return the pooling weights over frames ``[batch, time]``.

        Returns
        -------
        log_probs : torch.Tensor
            ``[batch, n_classes]``. With an ``expert``, in training: the sum of the head's and
            the expert's log-probabilities, not renormalised, so that its negative
            log-likelihood is the sum of theirs (each learns on its own); in evaluation, that
            sum renormalised (their product of probabilities).
        weights : torch.Tensor
            Pooling weights, only when ``return_attention``.
        """
        u, weights = self.pooling(self.frames(static, dynamic, lengths), lengths, True)
        log_probs = self.head(u, static, dynamic, lengths)
        return (log_probs, weights) if return_attention else log_probs

    def head(self, u, static, dynamic, lengths=None):
        """The classifier on the pooled utterance vectors (and the expert beside it): the end of
        ``forward``, on its own for an ONNX graph that z-scores the vectors first
        (``hnsd_sb.backends``).

        Arguments
        ---------
        u : torch.Tensor
            Pooled utterance vectors ``[batch, utterance_size]``.
        static : torch.Tensor
            ``[batch, time, n_static]`` (read by the expert only).
        dynamic : torch.Tensor
            ``[batch, time, n_dynamic]`` (read by the expert only).
        lengths : torch.Tensor
            Relative lengths ``[batch]``.

        Returns
        -------
        torch.Tensor
            Log-probabilities ``[batch, n_classes]``, as ``forward`` gives them.

        Example
        -------
        >>> model = HNSD(hidden_size=8, n_classes=3).eval()
        >>> static, dynamic = torch.randn(2, 9, 26), torch.randn(2, 9, 52)
        >>> u, _ = model.pooling(model.frames(static, dynamic), None, True)
        >>> bool(torch.equal(model.head(u, static, dynamic), model(static, dynamic)))
        True
        """
        log_probs = self.classifier(u)
        if self.expert is not None:
            log_probs = log_probs + self.expert(torch.cat([static, dynamic], dim=-1), lengths)
            if not self.training:
                log_probs = torch.log_softmax(log_probs, dim=-1)
        return log_probs


def newer_name(model, name):
    """A parameter or submodule name of ``HNSD``'s earlier layout, in which the classifier's
    layers (``fc``, ``output``) and a one-stream model's ``encoder`` sat at the top of the model,
    as it is named now (``classifier.fc``, ``static_encoder``, ...); other names are returned
    as they are.

    Arguments
    ---------
    model : HNSD
        The model the name belongs to (a one-stream model's ``encoder`` depends on its stream).
    name : str
        A name relative to the model, e.g. ``fc.weight`` or ``fc``.

    Returns
    -------
    str
        The name now.

    Example
    -------
    >>> newer_name(HNSD(hidden_size=8), "fc.weight")
    'classifier.fc.weight'
    >>> newer_name(HNSD(hidden_size=8, streams="early"), "encoder.lstm.bias_hh_l0")
    'joint_encoder.lstm.bias_hh_l0'
    >>> newer_name(HNSD(hidden_size=8), "pooling")
    'pooling'
    """
    single = {"early": "joint_encoder", "static": "static_encoder", "dynamic": "dynamic_encoder"}
    renames = {"fc": "classifier.fc", "output": "classifier.output"}
    if model.streams in single:
        renames["encoder"] = single[model.streams]
    head, dot, rest = name.partition(".")
    return renames[head] + dot + rest if head in renames else name


def _rename_older_keys(model, state_dict, prefix, *args):
    """Load hook of ``HNSD``: renames the keys of a checkpoint of the earlier layout in place
    (``newer_name``), so that it still loads.

    Arguments
    ---------
    model : HNSD
        The model being loaded.
    state_dict : dict
        The state being loaded (renamed in place).
    prefix : str
        The model's prefix in ``state_dict``.
    *args
        The rest of torch's load hook arguments, unused.
    """
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = prefix + newer_name(model, key[len(prefix) :])
        if new != key:
            state_dict[new] = state_dict.pop(key)
