"""The HNSD model: two LSTM encoders, GMU fusion, attention pooling and a classifier.

Cao et al., "Hierarchical Network Based on the Fusion of Static and Dynamic Features for Speech
Emotion Recognition", ICASSP 2021. The ablation switches (``streams``, ``fusion``, ``pooling``)
build the variants the paper argues against from the same parts.
"""

import torch

from hnsd_sb.fusion import ConcatFusion, GatedMultiFeatureUnit
from hnsd_sb.normalization import real_frame_mask
from hnsd_sb.pooling import AdditiveAttentionPooling, MeanPooling

STREAMS = ("two", "static", "dynamic", "early")
FUSIONS = ("gmu", "concat")
POOLINGS = ("attention", "mean")


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

    Example
    -------
    >>> enc = SequenceEncoder(3, 8)
    >>> out = enc(torch.randn(2, 7, 3), torch.tensor([1.0, 4 / 7]))
    >>> out.shape, out[1, 4:].abs().sum().item()
    (torch.Size([2, 7, 8]), 0.0)
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0):
        super().__init__()
        self.bidirectional = bidirectional
        self.out_size = hidden_size * (2 if bidirectional else 1)
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

    def forward(self, x, lengths=None):
        """Encodes a padded batch.

        Arguments
        ---------
        x : torch.Tensor
            ``[batch, time, input_size]``.
        lengths : torch.Tensor
            Relative lengths ``[batch]``; ``None`` means all are full length.

        Returns
        -------
        torch.Tensor
            ``[batch, time, out_size]``, zero on padded frames.
        """
        if lengths is None:
            lengths = torch.ones(x.shape[0], device=x.device)
        mask = real_frame_mask(lengths, x.shape[1], x.device).unsqueeze(-1)
        if not self.bidirectional:
            return self.lstm(x)[0] * mask
        n_frames = mask.sum(dim=1).squeeze(-1)
        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if i > 0:
                x = self.layer_dropout(x)
            back = reverse_within_length(bwd(reverse_within_length(x, n_frames))[0], n_frames)
            x = torch.cat([fwd(x)[0], back], dim=-1) * mask
        return x


class HNSD(torch.nn.Module):
    """Hierarchical network fusing static and dynamic features for emotion recognition.

    With the defaults this is the paper's model: an LSTM per stream (so the streams do not
    interfere), a GMU fusing them frame by frame, additive attention pooling over the real frames,
    a 128-unit fully connected layer (ReLU: the paper does not name the activation; our choice)
    and a softmax output, returned as log-probabilities.

    Arguments
    ---------
    n_static : int
        Size of the static stream (log-Mel energies).
    n_dynamic : int
        Size of the dynamic stream (deltas and delta-deltas).
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
        Dropout on the pooled vector and on the fully connected layer's output.
    streams : str
        ``"two"`` (HNSD), ``"static"`` or ``"dynamic"`` (one stream alone), or ``"early"`` (both
        streams concatenated into one LSTM: the direct fusion the paper argues against).
    fusion : str
        ``"gmu"`` (HNSD) or ``"concat"`` (ungated); used only when ``streams="two"``.
    pooling : str
        ``"attention"`` (HNSD) or ``"mean"``.

    Example
    -------
    >>> model = HNSD(hidden_size=16, fc_size=8, n_classes=4).eval()
    >>> static, dynamic = torch.randn(3, 20, 26), torch.randn(3, 20, 52)
    >>> logp = model(static, dynamic, torch.tensor([1.0, 0.8, 0.5]))
    >>> logp.shape
    torch.Size([3, 4])
    >>> bool(torch.allclose(logp.exp().sum(dim=1), torch.ones(3)))
    True
    """

    def __init__(
        self,
        n_static=26,
        n_dynamic=52,
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
    ):
        super().__init__()
        for name, value, allowed in (
            ("streams", streams, STREAMS),
            ("fusion", fusion, FUSIONS),
            ("pooling", pooling, POOLINGS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.streams = streams
        self.n_static, self.n_dynamic = n_static, n_dynamic
        lstm = dict(
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
        )
        input_sizes = {"static": n_static, "dynamic": n_dynamic, "early": n_static + n_dynamic}
        if streams == "two":
            self.static_encoder = SequenceEncoder(n_static, **lstm)
            self.dynamic_encoder = SequenceEncoder(n_dynamic, **lstm)
            enc_size = self.static_encoder.out_size
            if fusion == "gmu":
                self.fusion = GatedMultiFeatureUnit(enc_size, enc_size, fusion_size or hidden_size)
            else:
                self.fusion = ConcatFusion(enc_size, enc_size)
            frame_size = self.fusion.out_size
        else:
            self.encoder = SequenceEncoder(input_sizes[streams], **lstm)
            frame_size = self.encoder.out_size
        if pooling == "attention":
            self.pooling = AdditiveAttentionPooling(frame_size, attention_size)
        else:
            self.pooling = MeanPooling()
        self.dropout = torch.nn.Dropout(dropout)
        self.fc = torch.nn.Linear(frame_size, fc_size)
        self.output = torch.nn.Linear(fc_size, n_classes)

    def frames(self, static, dynamic, lengths=None):
        """Encodes and fuses the streams into one vector per frame.

        This is the plain PyTorch form; ``hnsd_sb.cpu.accelerate(model)`` replaces it on a model
        with a faster, equivalent one for CPUs.

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
        if self.streams == "two":
            return self.fusion(
                self.static_encoder(static, lengths), self.dynamic_encoder(dynamic, lengths)
            )
        x = {"static": static, "dynamic": dynamic}.get(self.streams)
        if x is None:
            x = torch.cat([static, dynamic], dim=-1)
        return self.encoder(x, lengths)

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
            ``[batch, n_classes]``.
        weights : torch.Tensor
            Pooling weights, only when ``return_attention``.
        """
        u, weights = self.pooling(self.frames(static, dynamic, lengths), lengths, True)
        hidden = self.dropout(torch.relu(self.fc(self.dropout(u))))
        log_probs = torch.log_softmax(self.output(hidden), dim=-1)
        return (log_probs, weights) if return_attention else log_probs
