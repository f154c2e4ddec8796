"""Utterance-level pooling of frame sequences that ignores padded frames."""

import torch

from hnsd_sb.normalization import real_frame_mask


class AdditiveAttentionPooling(torch.nn.Module):
    """Bahdanau (additive) attention pooling over the real frames of each sequence.

    ``s_t = v^T tanh(W h_t + b)``, ``alpha = softmax(s)`` over the unpadded frames only (padded
    frames get weight exactly 0), and the output is ``u = sum_t alpha_t h_t``.

    Arguments
    ---------
    input_size : int
        Size of the frame vectors ``h_t``.
    attention_size : int
        Size of the hidden attention layer (16 in the paper).

    Example
    -------
    >>> pool = AdditiveAttentionPooling(8, attention_size=16)
    >>> u, alpha = pool(torch.randn(2, 5, 8), torch.tensor([1.0, 0.6]), return_weights=True)
    >>> u.shape
    torch.Size([2, 8])
    >>> bool(torch.allclose(alpha.sum(dim=1), torch.ones(2)))
    True
    >>> alpha[1, 3:].tolist()
    [0.0, 0.0]
    """

    def __init__(self, input_size, attention_size=16):
        super().__init__()
        self.projection = torch.nn.Linear(input_size, attention_size)
        self.score = torch.nn.Linear(attention_size, 1, bias=False)

    def forward(self, x, lengths=None, return_weights=False):
        """Pools a batch of sequences into one vector each.

        Arguments
        ---------
        x : torch.Tensor
            Frame vectors ``[batch, time, input_size]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``; ``None`` means all are full length.
        return_weights : bool
            Also return the attention weights.

        Returns
        -------
        u : torch.Tensor
            ``[batch, input_size]``.
        alpha : torch.Tensor
            ``[batch, time]`` weights, only when ``return_weights``.
        """
        scores = self.score(torch.tanh(self.projection(x))).squeeze(-1)
        if lengths is not None:
            mask = real_frame_mask(lengths, x.shape[1], x.device)
            scores = scores.masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(scores, dim=1)
        u = torch.bmm(alpha.unsqueeze(1), x).squeeze(1)
        return (u, alpha) if return_weights else u


class AttentiveStatisticsPooling(AdditiveAttentionPooling):
    """Additive attention pooling that also returns the attention-weighted standard deviation.

    The same attention as ``AdditiveAttentionPooling`` (the paper's), and the output is
    ``[u, s]`` with ``u = sum_t alpha_t h_t`` and ``s = sqrt(sum_t alpha_t (h_t - u)^2)``: how
    much the frames vary over the utterance, which a weighted mean cannot carry (the statistics
    baseline's standard deviations are such a measure). Kept here rather than SpeechBrain's
    ``AttentiveStatisticsPooling``, whose attention is a TDNN with global context, not the
    paper's additive attention over the frames alone.

    Arguments
    ---------
    input_size : int
        Size of the frame vectors ``h_t``; the output is twice as large (``out_size``).
    attention_size : int
        Size of the hidden attention layer.

    Example
    -------
    >>> pool = AttentiveStatisticsPooling(8, attention_size=16)
    >>> x = torch.randn(2, 5, 8)
    >>> u, alpha = pool(x, torch.tensor([1.0, 0.6]), return_weights=True)
    >>> u.shape, pool.out_size
    (torch.Size([2, 16]), 16)
    >>> mean = (alpha.unsqueeze(-1) * x).sum(1)
    >>> bool(torch.allclose(u[:, :8], mean, atol=1e-6))
    True
    """

    # Added to the variance before the square root, so that its gradient stays finite (a fixed
    # constant, not an argument: a model folder describes the pooling by its sizes alone)
    EPS = 1e-5

    def __init__(self, input_size, attention_size=16):
        super().__init__(input_size, attention_size)
        self.out_size = 2 * input_size

    def forward(self, x, lengths=None, return_weights=False):
        """Pools a batch of sequences into their weighted mean and standard deviation.

        Arguments
        ---------
        x : torch.Tensor
            Frame vectors ``[batch, time, input_size]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``; ``None`` means all are full length.
        return_weights : bool
            Also return the attention weights.

        Returns
        -------
        u : torch.Tensor
            ``[batch, 2 * input_size]``: the weighted mean, then the weighted standard deviation.
        alpha : torch.Tensor
            ``[batch, time]`` weights, only when ``return_weights``.
        """
        mean, alpha = super().forward(x, lengths, return_weights=True)
        deviation = x - mean.unsqueeze(1)
        if lengths is not None:  # zero, not just weight 0: whatever the padding holds
            mask = real_frame_mask(lengths, x.shape[1], x.device).unsqueeze(-1)
            deviation = deviation.masked_fill(~mask, 0.0)
        var = torch.bmm(alpha.unsqueeze(1), deviation**2).squeeze(1)
        u = torch.cat([mean, torch.sqrt(var + self.EPS)], dim=-1)
        return (u, alpha) if return_weights else u


class MeanPooling(torch.nn.Module):
    """Average of the real frames of each sequence (the ablation of attention pooling).

    Arguments
    ---------
    input_size : int or None
        Size of the frame vectors; unused (no weights), taken so that ``HNSD`` builds every
        pooling from its input size alike.

    Example
    -------
    >>> pool = MeanPooling()
    >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> pool(x, torch.tensor([2 / 3])).tolist()
    [[2.0]]
    """

    def __init__(self, input_size=None):
        super().__init__()

    def forward(self, x, lengths=None, return_weights=False):
        """Averages each sequence over its real frames.

        Arguments
        ---------
        x : torch.Tensor
            Frame vectors ``[batch, time, size]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``; ``None`` means all are full length.
        return_weights : bool
            Also return the (uniform) frame weights.

        Returns
        -------
        u : torch.Tensor
            ``[batch, size]``.
        weights : torch.Tensor
            ``[batch, time]``, only when ``return_weights``.
        """
        if lengths is None:
            lengths = torch.ones(x.shape[0], device=x.device)
        mask = real_frame_mask(lengths, x.shape[1], x.device).to(x.dtype)
        weights = mask / mask.sum(dim=1, keepdim=True)
        u = torch.bmm(weights.unsqueeze(1), x).squeeze(1)
        return (u, weights) if return_weights else u
