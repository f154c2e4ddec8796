"""A statistics baseline for HNSD: utterance functionals and a linear classifier.

The yardstick every result of the recipes is measured against. It reads the same features
(``StaticDynamicFeatures``), speaker normalisation and folds as the recipe, summarises each
utterance's real frames by a few functionals (mean, standard deviation, minimum, maximum and
quantiles of every feature) and classifies them with L2-regularised multinomial logistic
regression. If a sequence model does not beat this on a corpus, its cost buys nothing there.

The functionals are computed here because SpeechBrain's ``StatisticsPooling`` gives only the mean
and standard deviation, and adds Gaussian noise to the mean. The classifier is written here in a
few lines of torch (full-batch L-BFGS on a convex loss, so the result does not depend on a seed or
a batch order) rather than taken from scikit-learn, which the project does not otherwise need.
"""

import torch

from hnsd_sb.normalization import real_frame_mask

DEFAULT_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
_STATISTICS = ("mean", "std", "min", "max")  # all that utterance_functionals computes
DEFAULT_STATISTICS = _STATISTICS


def utterance_functionals(
    feats, lengths=None, quantiles=DEFAULT_QUANTILES, statistics=DEFAULT_STATISTICS
):
    """Summarises each sequence's real frames by per-feature statistics.

    Arguments
    ---------
    feats : torch.Tensor
        Frame features ``[batch, time, n_feats]``.
    lengths : torch.Tensor
        Relative lengths ``[batch]``; ``None`` means all are full length.
    quantiles : sequence of float
        Quantiles in [0, 1] to add after the statistics.
    statistics : sequence of str
        Which of ``"mean"``, ``"std"``, ``"min"`` and ``"max"`` to compute, in the order given
        (a subset measures what the others add).

    Returns
    -------
    torch.Tensor
        ``[batch, n_feats * (len(statistics) + len(quantiles))]``: all features' first
        statistic, then the next ones and each quantile in turn. Padding does not change them.

    Raises
    ------
    ValueError
        An unknown statistic, a quantile outside [0, 1], or nothing to compute.

    Example
    -------
    >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> utterance_functionals(x, torch.tensor([2 / 3]), quantiles=(0.5,)).tolist()
    [[2.0, 1.0, 1.0, 3.0, 2.0]]
    >>> utterance_functionals(x, torch.tensor([2 / 3]), quantiles=(), statistics=("mean",))
    tensor([[2.]])
    """
    statistics = (statistics,) if isinstance(statistics, str) else tuple(statistics)
    unknown = set(statistics) - set(_STATISTICS)
    if any(not 0 <= q <= 1 for q in quantiles):
        raise ValueError(f"quantiles must lie in [0, 1], got {list(quantiles)}")
    if unknown or not (statistics or quantiles):
        raise ValueError(
            f"statistics must be some of {sorted(_STATISTICS)}, with at least one statistic "
            f"or quantile; got statistics={list(statistics)}, quantiles={list(quantiles)}"
        )
    if lengths is None:
        lengths = torch.ones(feats.shape[0], device=feats.device)
    # The whole batch at once, in double precision, without a loop over utterances (a model
    # that computes them, FunctionalsExpert, exports to ONNX): padding is masked out of sums
    # and extremes, and sorted to the end for the quantiles.
    mask = real_frame_mask(lengths, feats.shape[1], feats.device).unsqueeze(-1)
    x = feats.double()
    n = mask.sum(1).clamp_min(1).double()  # real frames [batch, 1]
    mean = (x * mask).sum(1) / n
    computed = {
        "mean": lambda: mean,
        "std": lambda: ((x - mean.unsqueeze(1)) * mask).square().sum(1).div(n).sqrt(),
        "min": lambda: x.masked_fill(~mask, float("inf")).amin(1),
        "max": lambda: x.masked_fill(~mask, float("-inf")).amax(1),
    }
    parts = [computed[name]() for name in statistics]
    if quantiles:
        ordered = x.masked_fill(~mask, float("inf")).sort(dim=1).values
        last = (n - 1).long().unsqueeze(-1).expand(-1, 1, x.shape[2])  # [batch, 1, n_feats]
        for q in quantiles:
            # linear interpolation between the order statistics around q * (n - 1), as
            # torch.quantile does
            position = q * (n - 1)
            low = position.floor().long().unsqueeze(-1).expand_as(last)
            high = torch.minimum(low + 1, last)
            below, above = ordered.gather(1, low), ordered.gather(1, high)
            fraction = (position - position.floor()).unsqueeze(-1)
            parts.append((below + fraction * (above - below)).squeeze(1))
    return torch.cat(parts, dim=1).to(feats.dtype)


class LinearClassifier(torch.nn.Module):
    """Multinomial logistic regression on standardised inputs, fitted by full-batch L-BFGS.

    Arguments
    ---------
    l2 : float
        Weight of the L2 penalty on the weights (not the biases), per training example.
    max_iter : int
        L-BFGS iterations.

    Example
    -------
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(40, 3, generator=gen)
    >>> y = (x[:, 0] > 0).long()
    >>> clf = LinearClassifier(l2=1e-3).fit(x, y, n_classes=2)
    >>> float((clf(x).argmax(1) == y).float().mean())
    1.0
    """

    def __init__(self, l2=1e-3, max_iter=500):
        super().__init__()
        self.l2 = l2
        self.max_iter = max_iter
        self.linear = None
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("std", torch.ones(0))

    def fit(self, x, y, n_classes, class_weights=None):
        """Fits the classifier to a training set.

        Arguments
        ---------
        x : torch.Tensor
            Inputs ``[n, n_feats]``.
        y : torch.Tensor
            Class indices ``[n]``.
        n_classes : int
            Number of classes.
        class_weights : torch.Tensor
            Optional loss weight of each class ``[n_classes]``.

        Returns
        -------
        LinearClassifier
            ``self``, fitted.
        """
        x = x.double()
        self.mean = x.mean(0)
        self.std = x.std(0, unbiased=False).clamp(min=1e-8)
        z = (x - self.mean) / self.std
        self.linear = torch.nn.Linear(z.shape[1], n_classes, dtype=torch.float64)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)
        weight = None if class_weights is None else class_weights.double()
        optimizer = torch.optim.LBFGS(
            self.linear.parameters(),
            max_iter=self.max_iter,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )

        def closure():
            """L-BFGS's loss evaluation: the penalised loss, with its gradients."""
            optimizer.zero_grad()
            logits = self.linear(z)
            loss = torch.nn.functional.cross_entropy(logits, y, weight=weight)
            loss = loss + 0.5 * self.l2 * self.linear.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return self

    def forward(self, x):
        """Returns the log-probabilities of the classes.

        Arguments
        ---------
        x : torch.Tensor
            Inputs ``[n, n_feats]``.

        Returns
        -------
        torch.Tensor
            ``[n, n_classes]`` log-probabilities (float64).
        """
        if self.linear is None:
            raise RuntimeError("LinearClassifier is not fitted: call fit first")
        z = (x.double() - self.mean) / self.std
        return torch.log_softmax(self.linear(z), dim=-1)
