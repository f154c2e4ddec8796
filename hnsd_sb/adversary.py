"""Speaker-adversarial training: a speaker classifier that the network is trained to defeat.

In training only, a small speaker classifier reads HNSD's pooled utterance vector (the
classifier head's input) through a gradient reversal (Ganin and Lempitsky, ICML 2015): the
speaker head learns to tell the training speakers apart, while the reversed gradient, scaled by
``weight``, pushes the encoders, fusion and pooling to make that hard. The tested and exported
network is HNSD as it is; the speaker head is dropped after training. Neither torch nor
SpeechBrain has a gradient reversal, so it is kept here (``reverse_gradient``). On RAVDESS the
head stayed near chance while a linear probe still read the speakers from the vectors (RAVDESS
README, "Speaker-adversarial training"): defeating this head is not removing the information.
"""

import torch


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-scale``."""

    @staticmethod
    def forward(ctx, x, scale):
        """Returns ``x`` unchanged (a view) and keeps ``scale`` for the backward pass."""
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        """The gradient reversed and scaled; none for ``scale``."""
        return -ctx.scale * grad, None


def reverse_gradient(x, scale=1.0):
    """Returns ``x``; the gradient that flows back through it is multiplied by ``-scale``.

    Arguments
    ---------
    x : torch.Tensor
        Any tensor.
    scale : float
        Factor of the reversed gradient.

    Returns
    -------
    torch.Tensor
        ``x``'s values.

    Example
    -------
    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> (3 * reverse_gradient(x, 0.5)).sum().backward()
    >>> x.grad.tolist()
    [-1.5, -1.5]
    """
    return _ReverseGradient.apply(x, scale)


class SpeakerAdversary(torch.nn.Module):
    """A speaker classifier on HNSD's pooled utterance vector, behind a gradient reversal.

    ``attach`` reads the training speakers and the model, builds the head (a ReLU layer of
    ``hidden_size`` units and an output per speaker) and keeps the input of the model's
    classifier head at every forward pass (a forward pre-hook). Called after a training forward
    pass with the batch's speakers, it returns the speaker cross-entropy, to be added to the
    emotion loss: its gradient trains the head, and reaches the model reversed and multiplied
    by ``weight``.

    Arguments
    ---------
    weight : float
        Scale of the reversed gradient that reaches the model (0: off, the recipe's default).
    hidden_size : int
        Units of the head's hidden layer.

    Example
    -------
    >>> from hnsd_sb import HNSD
    >>> model = HNSD(hidden_size=8, fc_size=4, n_classes=4)
    >>> adversary = SpeakerAdversary(weight=0.3, hidden_size=6)
    >>> adversary.attach(model, ["spk2", "spk1", "spk2"])
    >>> adversary.speakers
    ['spk1', 'spk2']
    >>> _ = model(torch.randn(3, 10, 26), torch.randn(3, 10, 52))
    >>> loss, correct = adversary(adversary.speaker_indices(["spk1", "spk2", "spk1"]))
    >>> loss.shape, 0 <= correct <= 3
    (torch.Size([]), True)
    """

    def __init__(self, weight=0.0, hidden_size=128):
        super().__init__()
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"SpeakerAdversary: weight must be a number >= 0, got {weight!r}")
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(
                f"SpeakerAdversary: hidden_size must be an int >= 1, got {hidden_size!r}"
            )
        self.weight = float(weight)
        self.hidden_size = hidden_size
        self.speakers = []
        self._index = {}
        self.head = None
        self._pooled = {}  # the last input of the model's classifier (the hook's)
        self._hook = None

    @property
    def enabled(self):
        """True where training should add the adversary's loss (``weight > 0``)."""
        return self.weight > 0

    def attach(self, model, speakers):
        """Builds the head for these training speakers and starts keeping the pooled vectors.

        The model's classifier gets a forward pre-hook (replacing one that an earlier
        ``attach`` added); the head's input size is the model's ``utterance_size``.

        Arguments
        ---------
        model : hnsd_sb.HNSD
            The network trained; its ``classifier``'s input is the pooled utterance vector, of
            ``utterance_size`` values.
        speakers : list of str
            The speaker of every training utterance (at least two distinct ones).
        """
        self.speakers = sorted(set(speakers))
        if len(self.speakers) < 2:
            raise ValueError(
                f"SpeakerAdversary needs at least 2 training speakers, got {self.speakers}"
            )
        self._index = {s: i for i, s in enumerate(self.speakers)}
        pooled = self._pooled

        # A plain function (not a method), so that a deep copy of the model (the weight
        # average) keeps calling it rather than copying the adversary along.
        def keep_pooled(module, args):
            """Forward pre-hook of the classifier: keeps its input, the pooled vectors."""
            pooled["u"] = args[0]

        if self._hook is not None:
            self._hook.remove()
        self._hook = model.classifier.register_forward_pre_hook(keep_pooled)
        device = next(model.parameters()).device
        in_size = model.utterance_size
        self.head = torch.nn.Sequential(
            torch.nn.Linear(in_size, self.hidden_size),
            torch.nn.ReLU(),
            torch.nn.Linear(self.hidden_size, len(self.speakers)),
        ).to(device)

    def speaker_indices(self, speakers):
        """The head's class index of each speaker.

        Arguments
        ---------
        speakers : list of str
            Training speakers.

        Returns
        -------
        torch.Tensor
            ``[len(speakers)]``, long.
        """
        unknown = sorted({s for s in speakers if s not in self._index})
        if unknown:
            raise ValueError(f"SpeakerAdversary: speakers not in the training set: {unknown}")
        return torch.tensor([self._index[s] for s in speakers], dtype=torch.long)

    def forward(self, speakers):
        """The speaker loss of the last forward pass's pooled vectors.

        Arguments
        ---------
        speakers : torch.Tensor
            The speaker index of each utterance of that pass (``speaker_indices``).

        Returns
        -------
        loss : torch.Tensor
            The mean cross-entropy of the head (a scalar).
        correct : int
            How many utterances the head assigned to their speaker.
        """
        if self.head is None or "u" not in self._pooled:
            raise RuntimeError("SpeakerAdversary: attach it to the model and run a forward pass")
        u = self._pooled.pop("u")
        logits = self.head(reverse_gradient(u, self.weight))
        speakers = speakers.to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits, speakers)
        return loss, int((logits.argmax(dim=-1) == speakers).sum())
