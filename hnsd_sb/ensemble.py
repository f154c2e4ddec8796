"""Averaging several trained HNSD networks: ``HNSDEnsemble``.

On RAVDESS, two runs of the recommended setting that differ only in their seed disagree by 2 UA
points on average, and the mean of their class probabilities beats the mean of the two runs on
every fold (``recipes/RAVDESS/hnsd/README.md``). ``HNSDEnsemble`` is that average as a network
called like ``HNSD``, so the recipe's pipeline, ``EmotionRecognizer`` and ``hnsd predict`` run
it unchanged (``EmotionRecognizer.from_folders``, ``hnsd predict --model A --model B``).
Neither torch nor SpeechBrain has a container that averages its members' probabilities and
attention, hence this small class.
"""

import math

import torch


class HNSDEnsemble(torch.nn.Module):
    """Networks called like ``HNSD`` whose class probabilities and attention are averaged.

    The members read the same normalised streams and must share the label order. The output is
    the log of the mean of the members' probabilities (not the mean of their log-probabilities:
    a member that is sure of a wrong class cannot veto the others), and the attention is the
    mean of the members' pooling weights, so it still sums to one over the real frames.

    Arguments
    ---------
    members : list of torch.nn.Module
        ``HNSD`` models (or any network called as ``model(static, dynamic, lengths,
        return_attention=True)``, e.g. ``hnsd_sb.backends.OnnxNetwork``), at least one.

    Example
    -------
    >>> from hnsd_sb import HNSD
    >>> _ = torch.manual_seed(0)
    >>> a, b = HNSD(hidden_size=8, n_classes=3).eval(), HNSD(hidden_size=8, n_classes=3).eval()
    >>> x = torch.randn(2, 9, 26), torch.randn(2, 9, 52), torch.tensor([1.0, 0.6])
    >>> log_probs, attention = HNSDEnsemble([a, b])(*x, return_attention=True)
    >>> mean = (a(*x).exp() + b(*x).exp()) / 2
    >>> bool(torch.allclose(log_probs.exp(), mean))
    True
    >>> bool(torch.allclose(attention.sum(1), torch.ones(2)))
    True
    """

    def __init__(self, members):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)

    def forward(self, static, dynamic, lengths=None, return_attention=False):
        """Classifies a batch of utterances with every member and averages them.

        Arguments
        ---------
        static, dynamic, lengths, return_attention
            As for ``hnsd_sb.HNSD.forward``.

        Returns
        -------
        log_probs : torch.Tensor
            ``[batch, n_classes]``, the log of the members' mean probabilities.
        weights : torch.Tensor
            Mean pooling weights, only when ``return_attention``.
        """
        outputs = [
            member(static, dynamic, lengths, return_attention=True) for member in self.members
        ]
        log_probs = torch.stack([out[0] for out in outputs])
        log_probs = torch.logsumexp(log_probs, dim=0) - math.log(len(outputs))
        if not return_attention:
            return log_probs
        return log_probs, torch.stack([out[1] for out in outputs]).mean(0)
