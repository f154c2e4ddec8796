"""Sharpness-aware minimisation (SAM, Foret et al., ICLR 2021) for the recipe's training step.

SAM takes each step with the gradient at the worst weights within a distance ``rho`` of the
current ones (to first order: one step of length ``rho`` up the gradient), which prefers flat
minima. In the RAVDESS experiments only averages (of weights within a run, of runs) raised the
validation UA on most folds; a flat minimum is what a weight average finds, and SAM seeks one
directly. Neither torch nor SpeechBrain has SAM, so ``SharpnessAware`` keeps the two moves of
the weights here; the recipe's ``EmotionBrain.fit_batch`` runs the two passes around them.
"""

import torch


class SharpnessAware:
    """Moves the weights to the first-order worst point within ``rho`` and back.

    The training step: backward at the weights ``w`` (gradient ``g``); ``perturb`` sets
    ``w + rho * g / |g|`` (``|g|``: the norm over all of the optimizer's gradients) and clears
    the gradients; backward again; ``restore`` puts ``w`` back exactly and leaves the second
    gradients for the optimizer.

    Arguments
    ---------
    rho : float
        Radius of the neighbourhood: the L2 norm, over all the weights that have a gradient,
        of the move. 0 turns SAM off: the recipe then takes its plain one-pass step.

    Example
    -------
    >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    >>> opt = torch.optim.SGD([w], lr=0.1)
    >>> sam = SharpnessAware(rho=0.5)
    >>> (w ** 2).sum().backward()  # gradient 2w = (6, 8), norm 10
    >>> sam.perturb(opt)
    >>> w.data.tolist(), w.grad is None
    ([3.299999952316284, 4.400000095367432], True)
    >>> (w ** 2).sum().backward()  # the gradient at the perturbed weights
    >>> sam.restore()
    >>> w.data.tolist(), w.grad.tolist()
    ([3.0, 4.0], [6.599999904632568, 8.800000190734863])
    """

    def __init__(self, rho=0.05):
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not rho >= 0:
            raise ValueError(f"SharpnessAware: rho must be a number >= 0, got {rho!r}")
        self.rho = float(rho)
        self._saved = None

    @property
    def enabled(self):
        """True where the training step should take two passes (``rho > 0``)."""
        return self.rho > 0

    @torch.no_grad()
    def perturb(self, optimizer):
        """Moves the optimizer's weights with a gradient by ``rho * g / |g|`` (a move of length
        ``rho`` in all of them together) and clears the gradients. A gradient that is not finite
        moves nothing, so the training step meets it as it would without SAM.

        Arguments
        ---------
        optimizer : torch.optim.Optimizer
            Its parameters with a gradient are moved; those without one stay.
        """
        if self._saved is not None:
            raise RuntimeError("SharpnessAware.perturb called twice without restore")
        params = [
            p for group in optimizer.param_groups for p in group["params"] if p.grad is not None
        ]
        if not params:
            raise RuntimeError("SharpnessAware.perturb: no parameter has a gradient")
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # as clipping measures it
        # the saved copies, not w + e - e, restore the weights bit for bit
        self._saved = [(p, p.detach().clone()) for p in params]
        scale = float(self.rho / (norm + 1e-12)) if torch.isfinite(norm) else 0.0
        for p in params:
            if scale:  # 0 * nan is nan: a non-finite gradient must not touch the weights
                p.add_(p.grad, alpha=scale)
            p.grad = None

    @torch.no_grad()
    def restore(self):
        """Puts back the weights that ``perturb`` moved, keeping the new gradients."""
        if self._saved is None:
            raise RuntimeError("SharpnessAware.restore called without perturb")
        for p, saved in self._saved:
            p.copy_(saved)
        self._saved = None
