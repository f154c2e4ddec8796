"""Feature augmentation that knows HNSD's two streams.

The normalised features that training masks are ``[static, delta, delta-delta]``, three blocks
of the same Mel bands side by side. SpeechBrain's ``SpectrogramDrop`` masks along the feature
axis of whatever it is given, so on these 78 columns it would drop a band from one block and
leave its deltas, which still carry the band's movement. ``BandDrop`` lays the three blocks
over each other first, so SpeechBrain's masking drops the same bands from all of them.

``Mixup`` trains on mixtures of pairs of utterances and of their labels. SpeechBrain has no
mixup; it is kept here because the mixture has to reach the loss: the module remembers the
pairing it drew, and ``Mixup.loss`` mixes the two labels' losses with it.

``RandomCrop`` trains on random spans of the utterances. SpeechBrain has no crop: its
``RandomShift`` rolls the whole batch by one amount (frames wrap around) and its chunk drops
keep every length. This one cuts a span per utterance from the trimmed, normalised features
(a span of the waveform could be mostly the silence that HNSD trims later) and returns the
new lengths, which the attention then masks by.
"""

import torch
from speechbrain.augment.freq_domain import SpectrogramDrop

from hnsd_sb.normalization import real_frame_mask


class BandDrop(torch.nn.Module):
    """SpecAugment-style frequency masking of the same Mel bands in the static stream and in
    its deltas (SpeechBrain's ``SpectrogramDrop`` on the bands, per utterance).

    Arguments
    ---------
    n_bands : int
        Mel bands per block (the static stream's size).
    drop_count_high : int
        Each batch draws 0 to this many masks per utterance; 0 turns the masking off without
        drawing a random number, so a run with it off is the run without it.
    drop_length_low : int
        Fewest bands in a mask.
    drop_length_high : int
        One more than the most bands in a mask.

    Example
    -------
    >>> drop = BandDrop(n_bands=4, drop_count_high=1, drop_length_low=2, drop_length_high=3)
    >>> _ = torch.manual_seed(0)
    >>> feats = torch.ones(1, 2, 12)  # [static, delta, delta-delta] of 4 bands, 2 frames
    >>> # 0 or 1 mask of 2 bands per draw; one that starts at the top band drops only it
    >>> draws = [drop(feats.clone()).split(4, dim=-1) for _ in range(4)]
    >>> all(torch.equal(static, delta) and torch.equal(static, delta2)
    ...     for static, delta, delta2 in draws)
    True
    >>> [int((static == 0).sum()) for static, _, _ in draws]  # zeroed (bands x frames)
    [0, 4, 2, 2]
    >>> BandDrop(n_bands=4)(feats) is feats  # off
    True
    """

    def __init__(self, n_bands=26, drop_count_high=0, drop_length_low=2, drop_length_high=7):
        super().__init__()
        self.n_bands = n_bands
        self.drop = SpectrogramDrop(
            drop_length_low=drop_length_low,
            drop_length_high=drop_length_high,
            drop_count_low=0,
            drop_count_high=drop_count_high,
            replace="zeros",
            dim=2,
        )

    def forward(self, feats):
        """Masks bands of normalised features.

        Arguments
        ---------
        feats : torch.Tensor
            ``[batch, frames, blocks * n_bands]``, the blocks side by side.

        Returns
        -------
        torch.Tensor
            The same shape, the same bands of every block set to 0 (the speaker's mean).
        """
        if self.drop.drop_count_high == 0:
            return feats
        batch, frames, size = feats.shape
        if size % self.n_bands:
            raise ValueError(
                f"BandDrop: {size} features are not whole blocks of n_bands={self.n_bands}"
            )
        stacked = feats.reshape(batch, frames * (size // self.n_bands), self.n_bands)
        return self.drop(stacked).reshape(batch, frames, size)


class Mixup(torch.nn.Module):
    """Mixup of a training batch: each utterance is mixed with another of the same batch, and
    the loss with the two labels' losses in the same proportion (Zhang et al., ICLR 2018).

    The weight ``lam ~ Beta(alpha, alpha)`` is drawn per batch and folded to ``lam >= 0.5``, so
    the first utterance of each pair dominates and the training metrics read its label. The
    mixture is as long as the longer of the two (normalised features are zero on padding, so
    each utterance enters it whole). The partners are a random permutation of the batch, which
    may leave an utterance paired with itself, i.e. unmixed. Use it on the features only in
    training (``hnsd_sb.pipeline`` takes it as ``mix``), and take the loss from ``loss`` after
    each call.

    Arguments
    ---------
    alpha : float
        Beta distribution parameter; 0 turns mixup off without drawing a random number, so a
        run with it off is the run without it.

    Example
    -------
    >>> mixup = Mixup(alpha=0.2)
    >>> feats = torch.stack([torch.zeros(3, 2), torch.ones(3, 2)])  # 2 utterances, 3 frames
    >>> feats[1, 2:] = 0  # the second is 2 frames long: padding is zero
    >>> _ = torch.manual_seed(2)
    >>> mixed, lens = mixup(feats, torch.tensor([1.0, 2 / 3]))
    >>> partner, lam = mixup.pairing
    >>> partner.tolist(), round(lam, 2), lens.tolist()  # each mixed with the other, both whole
    ([1, 0], 0.51, [1.0, 1.0])
    >>> torch.allclose(mixed[0, :2], torch.full((2, 2), 1 - lam))
    True
    >>> nll = torch.nn.functional.nll_loss
    >>> log_probs, targets = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]])), torch.tensor([0, 1])
    >>> expected = lam * nll(log_probs, targets) + (1 - lam) * nll(log_probs, targets.flip(0))
    >>> torch.allclose(mixup.loss(nll, log_probs, targets), expected)
    True
    >>> Mixup(alpha=0.0)(feats, lens)[0] is feats  # off
    True
    """

    def __init__(self, alpha=0.0):
        super().__init__()
        if alpha < 0:
            raise ValueError(f"Mixup: alpha must be 0 (off) or positive, not {alpha}")
        self.alpha = float(alpha)
        self.pairing = None  # (partner of each utterance, lam) of the last batch

    def forward(self, feats, lengths):
        """Mixes each utterance of a batch with a random partner from it.

        Arguments
        ---------
        feats : torch.Tensor
            ``[batch, frames, features]``, normalised, zero on padding.
        lengths : torch.Tensor
            Relative lengths ``[batch]``.

        Returns
        -------
        feats : torch.Tensor
            ``lam * feats + (1 - lam) * feats[partner]``.
        lengths : torch.Tensor
            The longer of each pair's relative lengths.
        """
        self.pairing = None
        if not self.alpha:
            return feats, lengths
        concentration = torch.tensor(self.alpha)
        lam = float(torch.distributions.Beta(concentration, concentration).sample())
        lam = max(lam, 1.0 - lam)
        partner = torch.randperm(feats.shape[0]).to(feats.device)
        self.pairing = (partner, lam)
        mixed = lam * feats + (1.0 - lam) * feats[partner]
        return mixed, torch.maximum(lengths, lengths[partner])

    def loss(self, loss_fn, log_probs, targets):
        """The loss of the last mixed batch: ``lam * loss_fn(first labels) + (1 - lam) *
        loss_fn(partners' labels)``; ``loss_fn`` itself where the batch was not mixed.

        Arguments
        ---------
        loss_fn : callable
            ``loss_fn(log_probs, targets)``, e.g. a weighted ``nll_loss``.
        log_probs : torch.Tensor
            ``[batch, n_classes]``.
        targets : torch.Tensor
            ``[batch]`` class indices, in the batch order that ``forward`` saw.

        Returns
        -------
        torch.Tensor
            The scalar loss.
        """
        if self.pairing is None:
            return loss_fn(log_probs, targets)
        partner, lam = self.pairing
        self.pairing = None
        if partner.numel() != targets.numel():
            raise RuntimeError(
                f"Mixup: the last mixed batch had {partner.numel()} utterances, "
                f"the loss got {targets.numel()} labels"
            )
        partner = partner.to(targets.device)
        return lam * loss_fn(log_probs, targets) + (1.0 - lam) * loss_fn(
            log_probs, targets[partner]
        )


class RandomCrop(torch.nn.Module):
    """One random contiguous span of each utterance of a training batch: its length a fraction
    of the utterance's real frames drawn uniformly from ``[min_fraction, 1]``, its start
    uniform over the places where it fits. The spans are moved to the first frame, the batch is
    cut to the longest, and the rest is zero padding (as normalised features are). Use it on
    the features only in training (``hnsd_sb.pipeline`` takes it as ``crop``); evaluation reads
    whole utterances.

    Arguments
    ---------
    min_fraction : float
        The shortest span, as a fraction of the utterance, in (0, 1]; 1.0 turns cropping off
        without drawing a random number, so a run with it off is the run without it.

    Example
    -------
    >>> crop = RandomCrop(min_fraction=0.5)
    >>> feats = torch.arange(1.0, 9.0).reshape(1, 8, 1).repeat(2, 1, 1)  # frames 1..8
    >>> feats[1, 4:] = 0  # the second utterance is 4 frames long
    >>> _ = torch.manual_seed(2)
    >>> cropped, lens = crop(feats, torch.tensor([1.0, 0.5]))
    >>> cropped.shape, [round(x, 3) for x in lens.tolist()]  # 7 of 8 frames, 3 of 4
    (torch.Size([2, 7, 1]), [1.0, 0.429])
    >>> cropped[..., 0].tolist()  # contiguous spans from inside each utterance, then zeros
    [[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]]
    >>> RandomCrop(min_fraction=1.0)(feats, lens)[0] is feats  # off
    True
    """

    def __init__(self, min_fraction=1.0):
        super().__init__()
        if isinstance(min_fraction, bool) or not 0.0 < min_fraction <= 1.0:
            raise ValueError(
                f"RandomCrop: min_fraction must be in (0, 1] (1.0: off), not {min_fraction!r}"
            )
        self.min_fraction = float(min_fraction)

    def forward(self, feats, lengths):
        """Cuts a random span from each utterance of a batch.

        Arguments
        ---------
        feats : torch.Tensor
            ``[batch, frames, features]``, zero on padding.
        lengths : torch.Tensor
            Relative lengths ``[batch]``.

        Returns
        -------
        feats : torch.Tensor
            ``[batch, longest span, features]``, each span from its first frame.
        lengths : torch.Tensor
            The spans' lengths relative to the longest.
        """
        if self.min_fraction >= 1.0:
            return feats, lengths
        batch, frames = feats.shape[:2]
        real = real_frame_mask(lengths.detach().cpu(), frames).sum(1)
        fraction = self.min_fraction + (1.0 - self.min_fraction) * torch.rand(batch)
        kept = torch.minimum(torch.ceil(fraction * real).long(), real)
        start = torch.floor(torch.rand(batch) * (real - kept + 1)).long()
        longest = int(kept.max())
        index = (start[:, None] + torch.arange(longest)).clamp(max=frames - 1).to(feats.device)
        cropped = feats.gather(1, index[..., None].expand(-1, -1, feats.shape[-1]))
        new_lengths = kept / longest
        outside = ~real_frame_mask(new_lengths, longest, feats.device)
        return (
            cropped.masked_fill(outside[..., None], 0.0),
            new_lengths.to(lengths.device, lengths.dtype),
        )
