"""Static and dynamic acoustic features of HNSD.

Static features are 26 log-Mel filterbank energies (25 ms Hamming window, 10 ms hop, 16 kHz),
computed by SpeechBrain's ``Fbank``. Dynamic features are the first- and second-order regression
deltas of the static ones, computed by SpeechBrain's ``Deltas`` applied twice:

    y_i = sum_{n=1..M} n (x_{i+n} - x_{i-n}) / (2 sum_{n=1..M} n^2),   z = delta(y)

and the dynamic stream is ``[y, z]`` (52 dimensions).
"""

import torch
from speechbrain.lobes.features import Fbank
from speechbrain.processing.features import Deltas


def hold_last_frame(feats, n_frames):
    """Overwrites the padded frames of each sequence with its last real frame.

    ``Deltas`` replicates the edge frame at the end of the tensor; repeating each sequence's own
    last frame over its padding makes the deltas of every real frame identical to those of the
    sequence computed alone, whatever it is batched with.

    Arguments
    ---------
    feats : torch.Tensor
        Features ``[batch, time, n_feats]``.
    n_frames : torch.Tensor
        Number of real frames of each sequence ``[batch]``.

    Returns
    -------
    torch.Tensor
        Same shape as ``feats``; frames at and after ``n_frames`` repeat frame ``n_frames - 1``.

    Example
    -------
    >>> x = torch.arange(4.0).view(1, 4, 1)
    >>> hold_last_frame(x, torch.tensor([2])).flatten().tolist()
    [0.0, 1.0, 1.0, 1.0]
    """
    time = torch.arange(feats.shape[1], device=feats.device).unsqueeze(0)
    last = (n_frames.long().to(feats.device) - 1).clamp(min=0).unsqueeze(1)
    index = torch.minimum(time, last).unsqueeze(-1).expand(-1, -1, feats.shape[-1])
    return torch.gather(feats, 1, index)


def trim_silence(feats, n_frames, trim_db):
    """Cuts each sequence down to its frames from the first to the last loud one.

    A frame is loud when its mean log-Mel energy (dB) is within ``trim_db`` of the sequence's
    loudest frame. Each trimmed sequence starts at frame 0; the output is as long as the longest
    of them, and what follows a shorter one repeats its last real frame (see ``hold_last_frame``).
    Every sequence is trimmed by its own real frames only, so batching does not change it.

    Arguments
    ---------
    feats : torch.Tensor
        Log-Mel energies in dB ``[batch, time, n_mels]``.
    n_frames : torch.Tensor
        Number of real frames of each sequence ``[batch]``.
    trim_db : float
        How far below the loudest frame a frame still counts as loud.

    Returns
    -------
    feats : torch.Tensor
        ``[batch, new_time, n_mels]``.
    n_frames : torch.Tensor
        Real frames left in each sequence ``[batch]`` (at least 1).

    Example
    -------
    >>> x = torch.tensor([[-80.0, -80.0, -10.0, -30.0, -70.0, -80.0]]).unsqueeze(-1)
    >>> y, n = trim_silence(x, torch.tensor([6]), trim_db=40.0)
    >>> y.flatten().tolist(), n.tolist()
    ([-10.0, -30.0], [2])
    """
    n_frames = n_frames.long().to(feats.device)
    time = torch.arange(feats.shape[1], device=feats.device).unsqueeze(0)
    real = time < n_frames.unsqueeze(1)
    energy = feats.mean(dim=-1).masked_fill(~real, float("-inf"))
    loud = (energy >= energy.amax(dim=1, keepdim=True) - trim_db) & real
    first = torch.where(loud, time, feats.shape[1]).amin(dim=1)
    last = torch.where(loud, time, -1).amax(dim=1)
    kept = (last - first + 1).clamp(min=1)
    index = first.unsqueeze(1) + torch.minimum(time, (kept - 1).unsqueeze(1))
    index = index[:, : int(kept.max())]
    index = index.unsqueeze(-1).expand(-1, -1, feats.shape[-1])
    return torch.gather(feats, 1, index), kept


class StaticDynamicFeatures(torch.nn.Module):
    """Computes HNSD's static (log-Mel) and dynamic (delta, delta-delta) feature streams.

    Arguments
    ---------
    sample_rate : int
        Sampling rate of the input waveforms (Hz).
    n_mels : int
        Number of Mel filters: the size of the static stream.
    win_length : float
        Analysis window length in ms (a Hamming window, SpeechBrain's default).
    hop_length : float
        Hop between frames in ms.
    n_fft : int
        FFT size.
    delta_window : int
        Regression window ``2M + 1`` of the deltas (5 means M = 2, as in HTK and SpeechBrain).
    f_min : float
        Lowest filter frequency (Hz).
    f_max : float
        Highest filter frequency (Hz); ``None`` means the Nyquist frequency.
    trim_db : float
        If given, cut the leading and trailing silence of each utterance: keep its frames from
        the first to the last whose mean log-Mel energy is within ``trim_db`` dB of its loudest
        frame (see ``trim_silence``). ``None`` (the paper) keeps every frame.

    Example
    -------
    >>> compute = StaticDynamicFeatures()
    >>> wavs = torch.randn(2, 16000)
    >>> static, dynamic = compute(wavs, torch.tensor([1.0, 0.5]))
    >>> static.shape, dynamic.shape
    (torch.Size([2, 101, 26]), torch.Size([2, 101, 52]))
    >>> _, _, frame_lens = compute(wavs, torch.tensor([1.0, 0.5]), return_lengths=True)
    >>> (frame_lens * 101).round().tolist()
    [101.0, 51.0]
    """

    def __init__(
        self,
        sample_rate=16000,
        n_mels=26,
        win_length=25,
        hop_length=10,
        n_fft=400,
        delta_window=5,
        f_min=0,
        f_max=None,
        trim_db=None,
    ):
        super().__init__()
        self.n_mels = n_mels
        self.trim_db = trim_db
        self.hop_samples = int(round(sample_rate * hop_length / 1000))
        self.fbank = Fbank(
            sample_rate=sample_rate,
            n_mels=n_mels,
            win_length=win_length,
            hop_length=hop_length,
            n_fft=n_fft,
            f_min=f_min,
            f_max=f_max if f_max is not None else sample_rate // 2,
        )
        self.deltas = Deltas(input_size=n_mels, window_length=delta_window)

    def frame_counts(self, wav_lens, n_samples):
        """Returns the number of real (unpadded) frames of each waveform.

        A centred STFT gives ``1 + samples // hop`` frames; computing it from the samples (rather
        than scaling the relative length by the padded frame count) keeps the count exact.

        Arguments
        ---------
        wav_lens : torch.Tensor
            Relative waveform lengths ``[batch]`` in (0, 1].
        n_samples : int
            Padded waveform length in samples.

        Returns
        -------
        torch.Tensor
            Frame counts ``[batch]`` (long).

        Example
        -------
        >>> StaticDynamicFeatures().frame_counts(torch.tensor([1.0, 0.5]), 16000).tolist()
        [101, 51]
        """
        samples = torch.round(wav_lens.float() * n_samples).long()
        return torch.div(samples, self.hop_samples, rounding_mode="floor") + 1

    def forward(self, wavs, wav_lens=None, return_lengths=False):
        """Computes the two feature streams.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms ``[batch, samples]``.
        wav_lens : torch.Tensor
            Relative lengths ``[batch]``; ``None`` means all are full length.
        return_lengths : bool
            Also return the relative lengths in frames (exact, see ``frame_counts``).

        Returns
        -------
        static : torch.Tensor
            Log-Mel energies ``[batch, frames, n_mels]``.
        dynamic : torch.Tensor
            ``[delta, delta-delta]`` ``[batch, frames, 2 * n_mels]``.
        frame_lens : torch.Tensor
            Relative lengths in frames ``[batch]``, only when ``return_lengths``.
        """
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        static = self.fbank(wavs)
        n_frames = self.frame_counts(wav_lens, wavs.shape[1]).clamp(max=static.shape[1])
        if self.trim_db is not None:
            static, n_frames = trim_silence(static, n_frames, self.trim_db)
        delta = self.deltas(hold_last_frame(static, n_frames))
        delta2 = self.deltas(hold_last_frame(delta, n_frames))
        dynamic = torch.cat([delta, delta2], dim=-1)
        if return_lengths:
            frame_lens = n_frames.to(static.device, static.dtype) / static.shape[1]
            return static, dynamic, frame_lens
        return static, dynamic
