"""Speaker-level z-score normalisation of feature sequences.

SpeechBrain removed ``InputNormalization(norm_type="speaker")`` in 1.0.4; HNSD needs it to remove
speaker differences, so this module keeps per-speaker statistics itself. Statistics are exact
sums over the real (unpadded) frames, accumulated in float64, and travel with SpeechBrain's
checkpointer and ``Pretrainer``. They are sums rather than SpeechBrain's
``gaussian_statistics`` (a masked mean and standard deviation of one batch) because sums of
counts, values and squares add up exactly across batches, processes (``merge_state``) and
enrolment recordings, in any order.
"""

import contextlib

import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    mark_as_transfer,
    register_checkpoint_hooks,
)

UNSEEN_POLICIES = ("utterance", "global")
# The pooled vectors' fallback: an utterance has one vector, whose own statistics say nothing.
VECTOR_UNSEEN_POLICIES = ("global",)


def real_frame_mask(lengths, max_len, device=None):
    """Returns a boolean mask of the real frames of a padded batch.

    Not ``speechbrain.dataio.dataio.length_to_mask``: that calls ``len()`` on the lengths, which
    fixes the batch size in an exported graph (``torch.onnx.export``); this is the same
    comparison, broadcast instead.

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths ``[batch]`` in (0, 1] (SpeechBrain convention).
    max_len : int
        Padded length in frames.
    device : torch.device
        Device of the mask.

    Returns
    -------
    torch.Tensor
        Boolean mask ``[batch, max_len]``, True on real frames (at least one per sequence).

    Example
    -------
    >>> real_frame_mask(torch.tensor([1.0, 0.5]), 4).int().tolist()
    [[1, 1, 1, 1], [1, 1, 0, 0]]
    """
    n_frames = torch.round(lengths.float() * max_len).clamp(min=1, max=max_len)
    frames = torch.arange(max_len, device=lengths.device, dtype=n_frames.dtype)
    mask = frames.unsqueeze(0) < n_frames.unsqueeze(1)
    return mask if device is None else mask.to(device)


@register_checkpoint_hooks
class SpeakerNormalization(torch.nn.Module):
    """Speaker-level z-score normalisation with a fallback for unseen speakers.

    Call ``accumulate`` over the training data (no labels are needed) to gather each speaker's
    mean and standard deviation, then ``forward`` normalises every frame of an utterance with its
    speaker's statistics. The padded frames of the output are set to zero.

    A speaker never accumulated (a new speaker at inference) is normalised according to
    ``unseen``:

    - ``"utterance"`` (default): the utterance's own mean and standard deviation. This is the
      closest stand-in for speaker statistics one utterance allows, and like them it removes the
      speaker's and the recording's offsets (a change of gain or microphone shifts log-Mel
      energies by a constant, which it cancels). Its price is that it also removes the
      utterance's own mean, part of which is emotion; pass a speaker's other recordings to
      ``accumulate`` to get true speaker statistics instead.
    - ``"global"``: the pooled statistics of all accumulated speakers. It keeps the utterance's
      level but leaves the speaker's offset (and any recording gain) in the features.

    Arguments
    ---------
    unseen : str
        Fallback for speakers without statistics: ``"utterance"`` or ``"global"``.
    std_floor : float
        Lower bound on standard deviations, so constant features stay finite.

    Example
    -------
    >>> norm = SpeakerNormalization()
    >>> feats = torch.randn(2, 50, 3) * 4 + 10
    >>> lens = torch.tensor([1.0, 0.6])
    >>> norm.accumulate(feats, lens, ["spk1", "spk1"])
    >>> out = norm(feats, lens, ["spk1", "spk1"])
    >>> mask = real_frame_mask(lens, 50)
    >>> bool(out[mask].mean(0).abs().max() < 1e-5)
    True
    >>> bool((out[mask].std(0, unbiased=False) - 1).abs().max() < 1e-4)
    True
    >>> norm.speakers
    ['spk1']
    """

    def __init__(self, unseen="utterance", std_floor=1e-5):
        super().__init__()
        if unseen not in UNSEEN_POLICIES:
            raise ValueError(f"unseen must be one of {UNSEEN_POLICIES}, got {unseen!r}")
        self.unseen = unseen
        self.std_floor = std_floor
        self.reset()

    def reset(self):
        """Forgets all accumulated statistics.

        Example
        -------
        >>> norm = SpeakerNormalization()
        >>> norm.accumulate(torch.randn(1, 5, 2), torch.ones(1), ["a"])
        >>> norm.reset()
        >>> norm.speakers
        []
        """
        # speaker -> [frame count, sum, sum of squares], float64 so long corpora stay exact
        self.stats = {}
        self._cache = None  # forward's table of the speakers' moments

    @property
    def speakers(self):
        """Sorted list of the speakers with statistics."""
        return sorted(self.stats)

    @torch.no_grad()
    def accumulate(self, feats, lengths, speakers):
        """Adds a batch's real frames to its speakers' statistics.

        Arguments
        ---------
        feats : torch.Tensor
            Features ``[batch, time, n_feats]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``.
        speakers : list of str
            Speaker of each sequence.

        Example
        -------
        >>> norm = SpeakerNormalization()
        >>> norm.accumulate(torch.ones(2, 4, 1), torch.tensor([1.0, 0.5]), ["a", "b"])
        >>> norm.stats["b"][0].item()
        2.0
        """
        if len(speakers) != feats.shape[0]:
            raise ValueError(f"got {len(speakers)} speakers for a batch of {feats.shape[0]}")
        mask = real_frame_mask(lengths, feats.shape[1], feats.device).unsqueeze(-1)
        x = feats.detach().double() * mask
        counts = mask.sum(dim=1).squeeze(-1).double()
        sums = x.sum(dim=1)
        sumsq = (x * x).sum(dim=1)
        counts, sums, sumsq = counts.cpu(), sums.cpu(), sumsq.cpu()  # one copy each
        for i, spk in enumerate(speakers):
            self._add(spk, [counts[i], sums[i], sumsq[i]])

    def forget(self, speaker):
        """Drops a speaker's statistics, if it has any (its frames fall back on ``unseen``).

        Arguments
        ---------
        speaker : str
            The speaker to forget; an unknown one is ignored.

        Example
        -------
        >>> norm = SpeakerNormalization()
        >>> norm.accumulate(torch.ones(1, 3, 1), torch.ones(1), ["a"])
        >>> norm.forget("a")
        >>> norm.forget("b")
        >>> norm.speakers
        []
        """
        self.stats.pop(speaker, None)

    def _add(self, speaker, entry):
        """Adds ``[count, sum, sum of squares]`` to a speaker's statistics (a new entry, never
        changed in place: ``_table`` relies on it)."""
        if speaker in self.stats:
            entry = [a + b for a, b in zip(self.stats[speaker], entry)]
        self.stats[speaker] = entry

    def _moments(self, count, total, total_sq):
        """Mean and floored standard deviation from running sums."""
        mean = total / count
        var = (total_sq / count - mean * mean).clamp(min=0.0)
        return mean, var.sqrt().clamp(min=self.std_floor)

    def speaker_moments(self, speaker):
        """Returns the mean and standard deviation of an accumulated speaker.

        Arguments
        ---------
        speaker : str
            A speaker in ``speakers``.

        Returns
        -------
        mean, std : torch.Tensor
            ``[n_feats]`` each (float64).

        Example
        -------
        >>> norm = SpeakerNormalization()
        >>> norm.accumulate(torch.tensor([[[1.0], [3.0]]]), torch.ones(1), ["a"])
        >>> [t.item() for t in norm.speaker_moments("a")]
        [2.0, 1.0]
        """
        return self._moments(*self.stats[speaker])

    def global_moments(self):
        """Returns the mean and standard deviation pooled over all speakers' frames.

        Returns
        -------
        mean, std : torch.Tensor
            ``[n_feats]`` each (float64).

        Example
        -------
        >>> norm = SpeakerNormalization()
        >>> norm.accumulate(torch.tensor([[[0.0]], [[2.0]]]), torch.ones(2), ["a", "b"])
        >>> [t.item() for t in norm.global_moments()]
        [1.0, 1.0]
        """
        if not self.stats:
            raise RuntimeError("SpeakerNormalization has no statistics: call accumulate first")
        entries = list(self.stats.values())
        return self._moments(*(sum(e[k] for e in entries) for k in range(3)))

    def forward(self, feats, lengths=None, speakers=None):
        """Normalises each sequence with its speaker's statistics.

        Arguments
        ---------
        feats : torch.Tensor
            Features ``[batch, time, n_feats]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``; ``None`` means all are full length.
        speakers : list of str
            Speaker of each sequence; ``None`` treats every sequence as an unseen speaker.

        Returns
        -------
        torch.Tensor
            Normalised features, zero on padded frames.
        """
        batch, max_len, _ = feats.shape
        if lengths is None:
            lengths = torch.ones(batch, device=feats.device)
        if speakers is None:
            speakers = [None] * batch
        if len(speakers) != batch:
            raise ValueError(f"got {len(speakers)} speakers for a batch of {batch}")
        mask = real_frame_mask(lengths, max_len, feats.device).unsqueeze(-1)
        # Whole-batch tensor work: the speakers' moments come from a table kept on the
        # features' device (built once per set of statistics) and one index picks each row's;
        # an utterance's own moments are computed only when some row needs them.
        rows = [-1] * batch
        if self.stats:
            table_mean, table_std, index = self._table(feats.device)
            fallback = len(index) if self.unseen == "global" else -1  # last row: pooled
            rows = [index.get(spk, fallback) for spk in speakers]
        if min(rows) < 0:
            x = feats.detach().double() * mask
            own = self._moments(mask.sum(dim=1).double(), x.sum(dim=1), (x * x).sum(dim=1))
        if max(rows) < 0:
            mean, std = own
        else:
            picked = torch.tensor(rows, device=feats.device).clamp(min=0)
            mean, std = table_mean[picked], table_std[picked]
            if min(rows) < 0:
                known = torch.tensor(rows, device=feats.device).ge(0).unsqueeze(-1)
                mean, std = torch.where(known, mean, own[0]), torch.where(known, std, own[1])
        mean = mean.to(feats.dtype).unsqueeze(1)
        std = std.to(feats.dtype).unsqueeze(1)
        return (feats - mean) / std * mask

    def moments_of(self, speakers, device="cpu"):
        """The mean and standard deviation with which ``forward`` z-scores each speaker's
        sequences: its own, or, for a speaker without statistics (or None), those of all
        speakers (``unseen="global"`` only: an utterance's own depend on the utterance).

        Arguments
        ---------
        speakers : list
            Speaker ids (str or None).
        device : str or torch.device
            Where the moments go.

        Returns
        -------
        mean, std : torch.Tensor
            ``[len(speakers), n_feats]`` each (float64).

        Example
        -------
        >>> norm = SpeakerNormalization(unseen="global")
        >>> norm.accumulate(torch.tensor([[[0.0]], [[2.0]]]), torch.ones(2), ["a", "b"])
        >>> mean, std = norm.moments_of(["b", "stranger"])
        >>> mean.flatten().tolist(), std.flatten().tolist()
        ([2.0, 1.0], [1e-05, 1.0])
        """
        if not self.stats:
            raise RuntimeError("SpeakerNormalization has no statistics: call accumulate first")
        if self.unseen != "global":
            raise ValueError(f"moments_of needs unseen='global', not {self.unseen!r}")
        table_mean, table_std, index = self._table(device)
        picked = torch.tensor([index.get(s, len(index)) for s in speakers], device=device)
        return table_mean[picked], table_std[picked]

    def _table(self, device):
        """The speakers' moments ``[n + 1, n_feats]`` (last row: pooled over all speakers) on
        ``device``, and speaker -> row; rebuilt only when the statistics changed."""
        # An entry is replaced (never changed in place) when its speaker's statistics change, so
        # the table is current while it was built from these very entries (compared by
        # identity; the cache holds them, so no new entry can take a freed one's place).
        entries = list(self.stats.items())
        cached = self._cache
        if (
            cached is None
            or cached[0] != str(device)
            or len(cached[1]) != len(entries)
            or any(a != c or b is not d for (a, b), (c, d) in zip(entries, cached[1]))
        ):
            speakers = self.speakers
            moments = [self.speaker_moments(spk) for spk in speakers] + [self.global_moments()]
            table_mean = torch.stack([m for m, _ in moments]).to(device)
            table_std = torch.stack([s for _, s in moments]).to(device)
            index = {spk: i for i, spk in enumerate(speakers)}
            self._cache = (str(device), entries, table_mean, table_std, index)
        return self._cache[2:]

    def state(self):
        """Returns the statistics as plain tensors and strings (safe for ``weights_only`` loads).

        Returns
        -------
        dict
            ``speakers`` (list of str), ``count`` ``[n]``, ``sum`` and ``sumsq`` ``[n, n_feats]``.

        Example
        -------
        >>> norm = SpeakerNormalization()
        >>> norm.accumulate(torch.ones(1, 3, 2), torch.ones(1), ["a"])
        >>> norm.state()["sum"].tolist()
        [[3.0, 3.0]]
        """
        speakers = self.speakers
        if not speakers:
            return {"speakers": [], "count": torch.zeros(0), "sum": None, "sumsq": None}
        return {
            "speakers": speakers,
            "count": torch.stack([self.stats[s][0] for s in speakers]),
            "sum": torch.stack([self.stats[s][1] for s in speakers]),
            "sumsq": torch.stack([self.stats[s][2] for s in speakers]),
        }

    def load_state(self, state):
        """Restores statistics produced by ``state``.

        Arguments
        ---------
        state : dict
            As returned by ``state``.

        Example
        -------
        >>> a, b = SpeakerNormalization(), SpeakerNormalization()
        >>> a.accumulate(torch.randn(1, 6, 2), torch.ones(1), ["x"])
        >>> b.load_state(a.state())
        >>> torch.equal(a.speaker_moments("x")[1], b.speaker_moments("x")[1])
        True
        """
        self.reset()
        for i, spk in enumerate(state["speakers"]):
            self.stats[spk] = [state["count"][i], state["sum"][i], state["sumsq"][i]]

    def merge_state(self, state):
        """Adds statistics produced by ``state`` (e.g. another process's) to these.

        Arguments
        ---------
        state : dict
            As returned by ``state``.

        Example
        -------
        >>> a, b, both = SpeakerNormalization(), SpeakerNormalization(), SpeakerNormalization()
        >>> x, y = torch.randn(1, 6, 2), torch.randn(1, 4, 2)
        >>> a.accumulate(x, torch.ones(1), ["s"]); b.accumulate(y, torch.ones(1), ["s"])
        >>> both.accumulate(torch.cat([x, y], 1), torch.ones(1), ["s"])
        >>> a.merge_state(b.state())
        >>> bool(torch.allclose(a.speaker_moments("s")[0], both.speaker_moments("s")[0]))
        True
        """
        for i, spk in enumerate(state["speakers"]):
            self._add(spk, [state["count"][i], state["sum"][i], state["sumsq"][i]])

    @mark_as_saver
    def _save(self, path):
        torch.save(self.state(), path)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        del end_of_epoch  # statistics do not depend on where in an epoch they were saved
        self.load_state(torch.load(path, map_location="cpu", weights_only=True))

    @mark_as_transfer
    def _transfer(self, path):
        self._load(path)


def _current_speakers(state):
    """The speakers ``PooledSpeakerNormalization.for_speakers`` set (an error outside it)."""
    if state["speakers"] is None:
        raise RuntimeError(
            "PooledSpeakerNormalization: run the model inside for_speakers(speakers)"
        )
    return state["speakers"]


class PooledSpeakerNormalization:
    """Z-scores the pooled utterance vectors that a model's classifier reads with their
    speaker's statistics: the speaker normalisation of the features, applied again one level up.

    The features are z-scored per speaker, yet the pooled vectors of a trained HNSD still tell
    the speakers apart about 8 times better than chance (``diagnose.py --speaker_probe``), and a
    linear classifier fitted on vectors z-scored per speaker scores new actors higher than one
    fitted on plain ones (``experiments/proxy/SELECTION.md``). ``attach`` gives the model's
    classifier a forward pre-hook that z-scores its input with the statistics gathered by the
    last ``collecting`` pass, for the speakers set by ``for_speakers``; the statistics are a
    ``SpeakerNormalization`` over vectors seen as one-frame sequences. A speaker without
    statistics gets the pooled statistics of all speakers (``unseen="global"``).

    The statistics depend on the weights, so the recipe gathers them again before each stage
    with the network that stage runs (eval mode, no augmentation). They are not checkpointed;
    at the end of training the recipe saves those of the selected checkpoint's network beside
    its weights, for ``hnsd export`` (``vector_normalizer.ckpt``).

    Arguments
    ---------
    enabled : bool or None
        False: the recipe leaves it out. None: the fine-tuning files' "as the pretrained
        model", which ``train.py`` resolves to True or False before training (off until then).
    statistics : SpeakerNormalization or None
        The statistics to z-score with (a model folder's ``vector_normalizer``); None: new,
        empty ones with ``unseen="global"``.

    Example
    -------
    >>> from hnsd_sb import HNSD
    >>> model = HNSD(hidden_size=8, n_classes=2).eval()
    >>> norm = PooledSpeakerNormalization()
    >>> norm.attach(model)
    >>> static, dynamic = torch.randn(6, 20, 26), torch.randn(6, 20, 52)
    >>> speakers = ["a", "a", "a", "b", "b", "b"]
    >>> with torch.no_grad(), norm.collecting(), norm.for_speakers(speakers):
    ...     _ = model(static, dynamic)
    >>> norm.statistics.speakers
    ['a', 'b']
    >>> with norm.for_speakers(speakers):
    ...     log_probs = model(static, dynamic)
    >>> log_probs.shape
    torch.Size([6, 2])
    """

    def __init__(self, enabled=True, statistics=None):
        self.enabled = enabled
        self.statistics = statistics if statistics is not None else SpeakerNormalization("global")
        if self.statistics.unseen not in VECTOR_UNSEEN_POLICIES:
            # one vector's own statistics z-score it to zero: every unknown speaker alike
            raise ValueError(
                f"the pooled vectors' statistics need unseen={VECTOR_UNSEEN_POLICIES[0]!r}, "
                f"got {self.statistics.unseen!r}"
            )
        self._state = {"speakers": None, "collect": False}
        self._hook = self._graph = None

    def attach(self, model):
        """Gives ``model.classifier`` the pre-hook (replacing one that an earlier ``attach``
        added). Attach before copying the model (the weight average): the copy then calls the
        same hook, with the same statistics. A network that z-scores the vectors itself (an
        ONNX graph, ``hnsd_sb.backends.OnnxNetwork``) is given this object instead, and asks
        it for ``moments`` and ``gather``.

        Arguments
        ---------
        model : hnsd_sb.HNSD or hnsd_sb.backends.OnnxNetwork
            Its ``classifier``'s input is the pooled utterance vector.
        """
        self.detach()
        if hasattr(model, "attach_vector_normalization"):  # a graph that z-scores inside
            model.attach_vector_normalization(self)
            self._graph = model
            return
        statistics, state = self.statistics, self._state

        # A plain function (not a method), so a deep copy of the model keeps calling it.
        def normalize(module, args):
            """Forward pre-hook of the classifier: z-scores (or collects) the pooled vectors."""
            speakers = _current_speakers(state)
            u = args[0].unsqueeze(1)  # [batch, 1, size]: one frame per utterance
            if state["collect"]:
                statistics.accumulate(u, torch.ones(u.shape[0], device=u.device), speakers)
                return None
            return (statistics(u, None, speakers).squeeze(1), *args[1:])

        self._hook = model.classifier.register_forward_pre_hook(normalize)

    def detach(self):
        """Undoes ``attach``: the model then classifies plain pooled vectors (``hnsd export``
        writes the bare network as an ONNX graph that z-scores them itself)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._graph is not None:
            self._graph.attach_vector_normalization(None)
            self._graph = None

    def moments(self):
        """For a network that z-scores its pooled vectors itself (an ONNX graph,
        ``hnsd_sb.backends.OnnxNetwork``): the mean and standard deviation ``[batch, size]``
        (float64) of the current speakers (``for_speakers``), as the hook z-scores with them;
        None while collecting, when the vectors must pass unchanged.

        Returns
        -------
        tuple or None
            ``(mean, std)``, or None.

        Example
        -------
        >>> norm = PooledSpeakerNormalization()
        >>> with norm.collecting(), norm.for_speakers(["a", "a"]):  # as OnnxNetwork does
        ...     print(norm.moments())
        ...     norm.gather(torch.tensor([[0.0], [2.0]]))
        None
        >>> with norm.for_speakers(["a", "stranger"]):
        ...     mean, std = norm.moments()
        >>> mean.flatten().tolist(), std.flatten().tolist()
        ([1.0, 1.0], [1.0, 1.0])
        """
        speakers = _current_speakers(self._state)
        return None if self._state["collect"] else self.statistics.moments_of(speakers)

    def gather(self, vectors):
        """For a network that z-scores its pooled vectors itself: while collecting, adds the
        pooled vectors it returned to the current speakers' statistics (what the hook does
        inside a PyTorch model); otherwise nothing.

        Arguments
        ---------
        vectors : torch.Tensor
            ``[batch, size]``, one per utterance of the batch.
        """
        if self._state["collect"]:
            u = vectors.unsqueeze(1)
            lengths = torch.ones(u.shape[0], device=u.device)
            self.statistics.accumulate(u, lengths, _current_speakers(self._state))

    @contextlib.contextmanager
    def for_speakers(self, speakers):
        """Within it, the model's batches are of these speakers (one per utterance).

        Arguments
        ---------
        speakers : list of str
            Speaker of each utterance of the batch the model classifies.
        """
        self._state["speakers"] = list(speakers)
        try:
            yield
        finally:
            self._state["speakers"] = None

    @contextlib.contextmanager
    def collecting(self, reset=True):
        """Within it, the statistics gather the vectors instead of z-scoring them.

        Arguments
        ---------
        reset : bool
            Start the statistics afresh (False: add to them, e.g. one enrolled speaker's).

        Example
        -------
        >>> from hnsd_sb import HNSD
        >>> model, norm = HNSD(hidden_size=8, n_classes=2).eval(), PooledSpeakerNormalization()
        >>> norm.attach(model)
        >>> for speaker in ("a", "b"):
        ...     with torch.no_grad(), norm.collecting(reset=False), norm.for_speakers([speaker]):
        ...         _ = model(torch.randn(1, 9, 26), torch.randn(1, 9, 52))
        >>> norm.statistics.speakers
        ['a', 'b']
        """
        if reset:
            self.statistics.reset()
        self._state["collect"] = True
        try:
            yield
        finally:
            self._state["collect"] = False
