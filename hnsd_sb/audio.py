"""Robust audio loading for training and inference.

``load_audio`` reads anything libsndfile reads (WAV of any PCM / float subtype, FLAC, OGG, ...),
downmixes to mono, resamples to the model's rate and rejects files that would silently poison
training (empty, truncated, too short, non-finite samples) with an ``AudioError`` naming the file.
``check_audio_header`` runs the checks that need no decoding, for fast manifest validation, and
``make_audio_pipeline`` wraps ``load_audio`` as a SpeechBrain dynamic item (``wav`` -> ``sig``).
"""

import functools
import math
import os
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torchaudio
from speechbrain.utils.data_pipeline import provides, takes

from hnsd_sb.files import is_plain_file

# RIFF data sizes that streaming writers leave in a header they never finalise.
_UNFINALISED_SIZES = (0, 0xFFFFFFFF)
# Float audio is nominally within [-1, 1]; real files may overshoot a little, but samples beyond
# this bound (+36 dB over full scale) are corrupt or mis-scaled, and overflow the features.
MAX_ABS_AMPLITUDE = 64.0
# Sampling rates outside these bounds are corrupt headers: at 1 Hz, resampling a 64 KB file to
# 16 kHz would take gigabytes.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000
# The exact resampling filter between two rates has (rate_a / gcd) x (rate_b / gcd) phases: 70 k
# for 44.1 to 16 kHz, but 256 M (4.7 GB, 10 s) for 16001 Hz. Beyond this many, a file is
# resampled as if recorded at the nearest multiple of 100 Hz (see ``resampling_rate``).
MAX_RESAMPLING_PHASES = 1_000_000
# Most samples (frames x channels) decoded into memory at once: 900 s of 48 kHz stereo fit;
# longer or wider recordings are read span by span (hnsd_sb.segments).
MAX_DECODED_SAMPLES = 100_000_000


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file.

    Arguments
    ---------
    path : str
        The file at fault (kept as ``.path``).
    reason : str
        What is wrong with it.

    Example
    -------
    >>> err = AudioError("/data/a.wav", "empty file (0 samples)")
    >>> str(err)
    '/data/a.wav: empty file (0 samples)'
    >>> err.path, isinstance(err, ValueError)
    ('/data/a.wav', True)
    """

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class AudioInfo:
    """What the header of an audio file says.

    Arguments
    ---------
    path : str
        The file.
    frames : int
        Number of samples per channel actually present.
    sample_rate : int
        Sampling rate in Hz.
    channels : int
        Number of channels.
    """

    path: str
    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self):
        """Duration in seconds."""
        return self.frames / self.sample_rate


def _wav_missing_frames(path):
    """Frames the WAV ``data`` chunk declares beyond the end of the file (0 if complete or not
    a RIFF/WAVE file). libsndfile quietly shortens such files, so this is how truncation shows.
    """
    file_size = os.path.getsize(path)
    block_align = 1
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        offset = 12
        while offset + 8 <= file_size:
            f.seek(offset)
            chunk_id, size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"fmt " and size >= 14:
                block_align = max(1, struct.unpack("<12xH", f.read(14))[0])
            elif chunk_id == b"data":
                if size in _UNFINALISED_SIZES:
                    return 0
                # A partial last frame is harmless and some writers miscount it.
                return max(0, size - (file_size - offset - 8)) // block_align
            offset += 8 + size + (size & 1)  # chunks are word aligned
    return 0


def check_audio_header(path, min_duration=0.025, allow_truncated=False, max_duration=None):
    """Checks an audio file from its header alone, without decoding the samples.

    Catches missing, unreadable, truncated (WAV), empty and too short files and implausible
    sampling rates; non-finite or absurd samples and compressed streams cut short need a full
    decode and are left to ``load_audio``.

    Arguments
    ---------
    path : str
        Audio file.
    min_duration : float
        Shortest accepted duration in seconds (default: one 25 ms analysis frame).
    allow_truncated : bool
        Accept a WAV whose header declares more samples than the file holds.
    max_duration : float or None
        Longest accepted duration in seconds (None: no limit).

    Returns
    -------
    AudioInfo
        Frames, sampling rate and channels of the file.

    Raises
    ------
    AudioError
        Naming the file and the problem.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> path = getfixture("tmpdir").join("a.wav").strpath
    >>> sf.write(path, np.zeros(8000), 8000)
    >>> info = check_audio_header(path)
    >>> info.frames, info.sample_rate, info.duration
    (8000, 8000, 1.0)
    >>> sf.write(path, np.zeros(80), 8000)
    >>> check_audio_header(path)
    Traceback (most recent call last):
    ...
    hnsd_sb.audio.AudioError: ...a.wav: too short: 0.01 s (80 samples at 8000 Hz), minimum 0.025 s
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(path, "file not found")
    if not is_plain_file(path):  # a FIFO, a device, /proc/kmsg: reading could block
        raise AudioError(path, "not a regular file")
    try:
        # libsndfile gets the name as bytes: a str holding a non-UTF-8 name cannot be encoded.
        info = sf.info(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(path, f"unreadable as audio ({err})") from err
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, "empty file (0 samples)")
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(
            path,
            f"implausible sampling rate {info.samplerate} Hz (accepted: {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz)",
        )
    if not allow_truncated:
        missing = _wav_missing_frames(path)
        if missing:
            raise AudioError(
                path,
                f"truncated: the WAV header declares {info.frames + missing} frames but the "
                f"file holds only {info.frames}",
            )
    min_frames = math.ceil(round(min_duration * info.samplerate, 6))
    if info.frames < min_frames:
        raise AudioError(
            path,
            # 4 significant digits: 399 samples at 16 kHz must not read as the 0.025 s minimum.
            f"too short: {info.frames / info.samplerate:.4g} s ({info.frames} samples at "
            f"{info.samplerate} Hz), minimum {min_duration:.4g} s",
        )
    if max_duration is not None and info.frames > max_duration * info.samplerate:
        raise AudioError(
            path,
            f"too long: {info.frames / info.samplerate:.4g} s, maximum {max_duration:g} s",
        )
    return AudioInfo(path, info.frames, info.samplerate, info.channels)


def audio_duration(path):
    """Duration of an audio file in seconds, read from its header.

    Arguments
    ---------
    path : str
        Audio file.

    Returns
    -------
    float
        Duration in seconds.

    Raises
    ------
    AudioError
        If the file is missing, unreadable, truncated or empty.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> path = getfixture("tmpdir").join("a.flac").strpath
    >>> sf.write(path, np.zeros(24000), 16000)
    >>> audio_duration(path)
    1.5
    """
    return check_audio_header(path, min_duration=0.0).duration


def load_audio(
    path, sample_rate=16000, min_duration=0.025, allow_truncated=False, max_duration=None
):
    """Loads an audio file as a mono float32 waveform at ``sample_rate``.

    Multichannel audio is averaged to mono; other rates are resampled with
    ``torchaudio.functional.resample``. A WAV whose header declares more samples than the file
    holds (a copy cut short) is rejected unless ``allow_truncated``, in which case the samples
    present are returned.

    Arguments
    ---------
    path : str
        Audio file in any format libsndfile reads.
    sample_rate : int
        Rate of the returned waveform in Hz.
    min_duration : float
        Shortest accepted duration in seconds (default: one 25 ms analysis frame, i.e. 400
        samples at 16 kHz).
    allow_truncated : bool
        Return what a truncated WAV holds instead of raising.
    max_duration : float or None
        Longest accepted duration in seconds, checked from the header before anything is
        decoded (None: no limit).

    Returns
    -------
    torch.Tensor
        ``[samples]`` float32 waveform, nominally in ``[-1, 1]``.

    Raises
    ------
    AudioError
        If the file is missing, unreadable, truncated, empty, too short, holds NaN / Inf or
        samples beyond ``MAX_ABS_AMPLITUDE``, or declares a sampling rate outside
        ``MIN_SAMPLE_RATE`` to ``MAX_SAMPLE_RATE``.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> path = getfixture("tmpdir").join("stereo.wav").strpath
    >>> sf.write(path, np.stack([np.full(4800, 0.5), np.zeros(4800)], axis=1), 48000)
    >>> wav = load_audio(path)
    >>> wav.shape, wav.dtype
    (torch.Size([1600]), torch.float32)
    >>> round(float(wav[800]), 3)
    0.25
    """
    path = os.fspath(path)
    info = check_audio_header(path, min_duration, allow_truncated, max_duration)
    samples = info.frames * info.channels
    if samples > MAX_DECODED_SAMPLES:  # a few MB of compressed silence can declare this many
        raise AudioError(
            path,
            f"{info.channels} channels of {info.frames} frames are {samples} samples to decode, "
            f"more than {MAX_DECODED_SAMPLES} at once; classify it window by window "
            "(hnsd predict --segment)",
        )
    try:
        data, file_rate = sf.read(os.fsencode(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(path, f"cannot decode samples ({err})") from err
    except MemoryError:  # a header declaring billions of frames (see also MAX_DECODED_SAMPLES)
        raise AudioError(
            path,
            f"{info.frames} frames ({info.duration:.4g} s) do not fit in memory; classify it "
            "window by window (hnsd predict --segment)",
        ) from None
    if data.shape[0] < info.frames and not allow_truncated:
        # A compressed stream cut short: the header promises more than decodes.
        raise AudioError(
            path, f"truncated: the header declares {info.frames} frames but {data.shape[0]} decode"
        )
    if data.shape[0] == 0:
        raise AudioError(path, "empty file (0 samples)")
    return to_model_rate(path, data, file_rate, sample_rate)


def to_model_rate(path, data, file_rate, sample_rate):
    """Checks decoded samples and turns them into the model's mono waveform.

    ``load_audio`` calls it on a whole file, ``hnsd_sb.segments`` on each span of a long one.

    Arguments
    ---------
    path : str
        The file, for error messages.
    data : numpy.ndarray
        ``[frames, channels]`` float32 samples as soundfile decodes them.
    file_rate : int
        Their sampling rate.
    sample_rate : int
        The rate to return.

    Returns
    -------
    torch.Tensor
        ``[samples]`` float32, channels averaged, resampled to ``sample_rate``.

    Raises
    ------
    AudioError
        The samples hold NaN / Inf or values beyond ``MAX_ABS_AMPLITUDE``.

    Example
    -------
    >>> to_model_rate("a.wav", np.full((4800, 2), 0.5, np.float32), 48000, 16000).shape
    torch.Size([1600])
    >>> to_model_rate("a.wav", np.full((8, 1), np.nan, np.float32), 16000, 16000)
    Traceback (most recent call last):
    ...
    hnsd_sb.audio.AudioError: a.wav: 8 samples are NaN
    """
    check_samples(path, data)
    wav = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
    if file_rate != sample_rate:
        wav = torchaudio.functional.resample(
            wav, resampling_rate(file_rate, sample_rate), sample_rate
        )
    return wav.contiguous()


def check_samples(path, data):
    """Raises the ``AudioError`` of decoded samples holding NaN / Inf or absurd values.

    Arguments
    ---------
    path : str
        The file, for the message.
    data : numpy.ndarray
        Decoded samples.

    Example
    -------
    >>> check_samples("a.wav", np.array([0.5, 100.0]))
    Traceback (most recent call last):
    ...
    hnsd_sb.audio.AudioError: a.wav: samples reach 100: float audio is nominally within [-1, 1], \
and beyond ±64 it is taken as corrupt or mis-scaled
    """
    finite = np.isfinite(data)
    if not finite.all():
        bad = data[~finite]
        kinds = " and ".join(k for k, m in (("NaN", np.isnan), ("Inf", np.isinf)) if m(bad).any())
        raise AudioError(path, f"{bad.size} samples are {kinds}")
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > MAX_ABS_AMPLITUDE:
        raise AudioError(
            path,
            f"samples reach {peak:.3g}: float audio is nominally within [-1, 1], and beyond "
            f"±{MAX_ABS_AMPLITUDE:g} it is taken as corrupt or mis-scaled",
        )


def check_decodes(path, allow_truncated=False, block=1 << 16):
    """Decodes a whole file block by block, in bounded memory, and raises the ``AudioError``
    that ``load_audio`` would for its samples (preflight's check of float and compressed files).

    Arguments
    ---------
    path : str
        Audio file, whose header is assumed checked (``check_audio_header``).
    allow_truncated : bool
        Accept fewer decoded frames than the header declares.
    block : int
        Frames decoded at a time.

    Example
    -------
    >>> import soundfile as sf
    >>> path = getfixture("tmpdir").join("nan.wav").strpath
    >>> sf.write(path, np.full(800, np.nan), 16000, subtype="FLOAT")
    >>> check_decodes(path)
    Traceback (most recent call last):
    ...
    hnsd_sb.audio.AudioError: ...nan.wav: 800 samples are NaN
    """
    path = os.fspath(path)
    frames = 0
    try:
        with sf.SoundFile(os.fsencode(path)) as f:
            declared = f.frames
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                if not len(data):
                    break
                check_samples(path, data)
                frames += len(data)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(path, f"cannot decode samples ({err})") from err
    if frames < declared and not allow_truncated:
        raise AudioError(
            path, f"truncated: the header declares {declared} frames but {frames} decode"
        )
    if frames == 0:
        raise AudioError(path, "empty file (0 samples)")


def resampling_rate(file_rate, sample_rate):
    """The rate a file is resampled from: its own, unless the exact filter would be huge.

    For an odd rate (16001 Hz, 11127 Hz) the exact filter has billions of taps; such a file is
    resampled as if recorded at the nearest multiple of 100 Hz, which changes its speed and
    pitch by at most 0.5 % above 10 kHz (5 % at 1 kHz): far less than speakers differ. (With a
    model at 11025, 22050 or 44100 Hz a few rates need the nearest multiple of 1000 Hz.)

    Arguments
    ---------
    file_rate : int
        The file's sampling rate.
    sample_rate : int
        The model's.

    Returns
    -------
    int
        ``file_rate``, or the nearest multiple of 100 Hz.

    Example
    -------
    >>> resampling_rate(44100, 16000), resampling_rate(16001, 16000), resampling_rate(11127, 16000)
    (44100, 16000, 11100)
    """
    for step in (1, 100, 1000):  # the first rounding whose filter is small enough
        rate = max(step, round(file_rate / step) * step)
        common = math.gcd(rate, sample_rate)
        if (rate // common) * (sample_rate // common) <= MAX_RESAMPLING_PHASES:
            return rate
    return sample_rate  # not reached for the model rates model_info.MODEL_SAMPLE_RATES allows


def make_audio_pipeline(sample_rate=16000, min_duration=0.025, allow_truncated=False):
    """A SpeechBrain dynamic item that loads the ``wav`` path of a row into ``sig``.

    The item wraps ``functools.partial(load_audio, ...)`` rather than a closure so datasets that
    hold it can be pickled into DataLoader worker processes.

    Arguments
    ---------
    sample_rate : int
        Rate of the loaded waveforms.
    min_duration : float
        Shortest accepted duration in seconds.
    allow_truncated : bool
        Load truncated WAVs instead of raising.

    Returns
    -------
    speechbrain.utils.data_pipeline.DynamicItem
        Takes ``"wav"``, provides ``"sig"``; pass it to
        ``speechbrain.dataio.dataset.add_dynamic_item``.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> path = getfixture("tmpdir").join("a.wav").strpath
    >>> sf.write(path, np.zeros(8000), 8000)
    >>> data = DynamicItemDataset({"utt1": {"wav": path}})
    >>> data.add_dynamic_item(make_audio_pipeline(16000))
    >>> data.set_output_keys(["id", "sig"])
    >>> data[0]["sig"].shape
    torch.Size([16000])
    """
    load = functools.partial(
        load_audio,
        sample_rate=sample_rate,
        min_duration=min_duration,
        allow_truncated=allow_truncated,
    )
    return takes("wav")(provides("sig")(load))
