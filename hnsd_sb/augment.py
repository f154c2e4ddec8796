"""Feature augmentation that knows HNSD's two streams.

The normalised features that training masks are ``[static, delta, delta-delta]``, three blocks
of the same Mel bands side by side. SpeechBrain's ``SpectrogramDrop`` masks along the feature
axis of whatever it is given, so on these 78 columns it would drop a band from one block and
leave its deltas, which still carry the band's movement. ``BandDrop`` lays the three blocks
over each other first, so SpeechBrain's masking drops the same bands from all of them.
"""

import torch
from speechbrain.augment.freq_domain import SpectrogramDrop


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
