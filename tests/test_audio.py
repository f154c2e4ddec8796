"""Tests of robust audio loading: every bad file is rejected naming it, good ones load right."""

import pickle
import re
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from hnsd_sb.audio import (
    AudioError,
    audio_duration,
    check_audio_header,
    check_decodes,
    load_audio,
    make_audio_pipeline,
)


def sine(freq, duration, rate, amplitude=0.5):
    """A sine wave as float64 numpy samples."""
    t = np.arange(round(duration * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def write(path, samples, rate=16000, subtype=None):
    sf.write(str(path), samples, rate, subtype=subtype)
    return path


def assert_rejected(path, match, **kwargs):
    with pytest.raises(AudioError, match=match) as err:
        load_audio(path, **kwargs)
    assert err.value.path == str(path)
    assert str(path) in str(err.value)
    return err.value


@pytest.fixture
def valid_wav_bytes(tmp_path):
    path = write(tmp_path / "valid.wav", sine(440, 0.5, 16000), subtype="PCM_16")
    return path.read_bytes()


def test_missing_file(tmp_path):
    assert_rejected(tmp_path / "nope.wav", "file not found")
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)


def test_zero_byte_and_random_bytes_are_unreadable(tmp_path):
    (tmp_path / "zero.wav").write_bytes(b"")
    assert_rejected(tmp_path / "zero.wav", "unreadable as audio")
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    assert_rejected(tmp_path / "noise.wav", "unreadable as audio")
    (tmp_path / "text.wav").write_text("ID,duration,wav\n")
    assert_rejected(tmp_path / "text.wav", "unreadable as audio")


def test_valid_header_without_samples_is_empty(tmp_path):
    assert_rejected(write(tmp_path / "empty.wav", np.zeros(0)), "empty")


def test_truncated_riff_is_rejected_or_read_partially(tmp_path, valid_wav_bytes):
    half = tmp_path / "half.wav"
    half.write_bytes(valid_wav_bytes[: len(valid_wav_bytes) // 2])
    assert_rejected(half, "truncated")
    with pytest.raises(AudioError, match="truncated"):
        check_audio_header(half)
    partial = load_audio(half, allow_truncated=True)
    assert partial.shape[0] == (len(valid_wav_bytes) // 2 - 44) // 2
    full = load_audio(write(tmp_path / "full.wav", sine(440, 0.5, 16000), subtype="PCM_16"))
    torch.testing.assert_close(partial, full[: partial.shape[0]])


@pytest.mark.parametrize("kept", [0.5, 0.0], ids=["half", "none"])
def test_stream_decoding_to_fewer_frames_than_its_header_is_truncated(tmp_path, monkeypatch, kept):
    """A compressed stream whose decoder stops early (its header, e.g. FLAC's STREAMINFO, keeps
    the full length) is named truncated, also when nothing decodes; allow_truncated reads it."""
    import hnsd_sb.audio as audio

    path = write(tmp_path / "cut.flac", sine(440, 1.0, 16000))
    real_read = audio.sf.read

    def early_stop(*args, **kwargs):
        data, rate = real_read(*args, **kwargs)
        return data[: int(len(data) * kept)], rate

    monkeypatch.setattr(audio.sf, "read", early_stop)
    declared = f"header declares 16000 frames but {int(16000 * kept)} decode"
    assert_rejected(path, re.escape(f"truncated: the {declared}"))
    if kept:
        assert load_audio(path, allow_truncated=True).shape == (8000,)


@pytest.mark.parametrize("cut", [4, 20, 40, 44])
def test_cut_inside_header(tmp_path, valid_wav_bytes, cut):
    path = tmp_path / f"cut{cut}.wav"
    path.write_bytes(valid_wav_bytes[:cut])
    # Cut inside fmt/data headers libsndfile refuses the file; cut right after them it has
    # no samples. Either way the file is named.
    assert_rejected(path, "unreadable as audio|empty|truncated", allow_truncated=True)


def test_unfinalised_streaming_header_loads(tmp_path, valid_wav_bytes):
    """Writers that stream leave the data size at 0xFFFFFFFF; that is not truncation."""
    data_at = valid_wav_bytes.index(b"data")
    patched = bytearray(valid_wav_bytes)
    patched[data_at + 4 : data_at + 8] = struct.pack("<I", 0xFFFFFFFF)
    path = tmp_path / "stream.wav"
    path.write_bytes(bytes(patched))
    assert load_audio(path).shape[0] == 8000


@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_non_finite_samples(tmp_path, bad, kind, subtype):
    samples = sine(440, 0.1, 16000)
    samples[[10, 500]] = bad
    err = assert_rejected(write(tmp_path / "nf.wav", samples, subtype=subtype), kind)
    assert "2 samples" in str(err)


@pytest.mark.parametrize("subtype, step", [("PCM_U8", 2**-7), ("PCM_24", 2**-15)])
def test_bit_depths_match_16_bit_within_quantisation(tmp_path, subtype, step):
    samples = sine(300, 0.2, 16000, amplitude=0.8)
    ref = load_audio(write(tmp_path / "ref.wav", samples, subtype="PCM_16"))
    other = load_audio(write(tmp_path / "other.wav", samples, subtype=subtype))
    assert other.dtype == torch.float32 and other.shape == ref.shape
    assert (other - ref).abs().max() <= step
    # libsndfile truncates rather than rounds to 8 bits, so the error reaches one full step.
    assert (other - torch.from_numpy(samples).float()).abs().max() <= step + 1e-6


@pytest.mark.parametrize("ext, subtype", [("wav", "PCM_32"), ("flac", None), ("ogg", None)])
def test_other_containers(tmp_path, ext, subtype):
    samples = sine(440, 0.3, 16000)
    wav = load_audio(write(tmp_path / f"a.{ext}", samples, subtype=subtype))
    assert wav.shape[0] == samples.shape[0]
    tol = 0.05 if ext == "ogg" else 1e-4  # Vorbis is lossy
    assert (wav - torch.from_numpy(samples).float()).abs().max() < tol


def test_stereo_is_averaged(tmp_path):
    left, right = sine(440, 0.1, 16000), sine(700, 0.1, 16000, amplitude=0.3)
    path = write(tmp_path / "st.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    expected = torch.from_numpy((left + right) / 2).float()
    torch.testing.assert_close(load_audio(path), expected)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_resampling_keeps_duration_and_pitch(tmp_path, rate):
    duration = 1.3
    wav = load_audio(write(tmp_path / f"s{rate}.wav", sine(440, duration, rate), rate))
    assert abs(wav.shape[0] - round(duration * 16000)) <= 1
    spectrum = torch.fft.rfft(wav[:16000])  # exactly 1 s: 1 Hz bins
    assert int(spectrum.abs().argmax()) == 440


def test_too_short(tmp_path):
    err = assert_rejected(write(tmp_path / "10ms.wav", sine(440, 0.01, 16000)), "too short")
    assert "160 samples" in str(err)
    assert load_audio(write(tmp_path / "25ms.wav", np.zeros(400))).shape[0] == 400
    assert_rejected(write(tmp_path / "399.wav", np.zeros(399)), "too short")
    # At 44.1 kHz one 25 ms frame is 1102.5 samples, so 1102 is short and 1103 is not.
    assert_rejected(write(tmp_path / "s.wav", np.zeros(1102), 44100), "too short")
    assert load_audio(write(tmp_path / "l.wav", np.zeros(1103), 44100)).shape[0] >= 400
    assert load_audio(tmp_path / "10ms.wav", min_duration=0).shape[0] == 160


def test_long_file_loads(tmp_path):
    path = write(tmp_path / "long.wav", sine(440, 60.0, 16000), subtype="PCM_16")
    assert load_audio(path).shape[0] == 60 * 16000
    assert audio_duration(path) == 60.0


def test_audio_duration_errors_name_the_file(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF....")
    with pytest.raises(AudioError, match="bad.wav"):
        audio_duration(tmp_path / "bad.wav")


def test_pipeline_in_dataset_and_picklable(tmp_path):
    write(tmp_path / "a.wav", sine(440, 0.5, 48000), 48000)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    pipeline = make_audio_pipeline(16000)
    assert list(pipeline.takes) == ["wav"] and list(pipeline.provides) == ["sig"]
    data = DynamicItemDataset(
        {"a": {"wav": str(tmp_path / "a.wav")}, "b": {"wav": str(tmp_path / "bad.wav")}},
        dynamic_items=[pickle.loads(pickle.dumps(pipeline))],
        output_keys=["id", "sig"],
    )
    assert data[0]["sig"].shape == (8000,)
    with pytest.raises(AudioError, match="bad.wav"):
        data[1]


def test_truncation_reports_declared_and_present_frames(tmp_path, valid_wav_bytes):
    path = tmp_path / "cut.wav"
    path.write_bytes(valid_wav_bytes[: 44 + 2 * 1000])
    assert_rejected(path, "declares 8000 frames but the file holds only 1000")
    # A partial last frame is tolerated.
    path.write_bytes(valid_wav_bytes[:-1])
    assert load_audio(path).shape[0] == 7999


def test_implausible_rates_long_files_and_rounding_are_named(tmp_path):
    one_hertz = tmp_path / "one_hertz.wav"
    sf.write(str(one_hertz), np.zeros(1000), 1)
    with pytest.raises(AudioError, match="implausible sampling rate 1 Hz"):
        load_audio(one_hertz)
    two_seconds = tmp_path / "two.wav"
    sf.write(str(two_seconds), np.zeros(32000), 16000)
    with pytest.raises(AudioError, match=r"too long: 2 s, maximum 1\.5 s"):
        load_audio(two_seconds, max_duration=1.5)
    assert load_audio(two_seconds, max_duration=2.0).numel() == 32000
    almost = tmp_path / "almost.wav"
    sf.write(str(almost), np.zeros(399), 16000)  # one sample short of 25 ms
    with pytest.raises(AudioError, match=r"too short: 0\.02494 s .*minimum 0\.025 s"):
        load_audio(almost)


def test_absurd_float_samples_and_cut_compressed_streams_are_refused(tmp_path):
    loud = tmp_path / "loud.wav"
    sf.write(str(loud), np.full(1600, 1e29, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"samples reach 1e\+29"):
        load_audio(loud)
    overshoot = tmp_path / "overshoot.wav"  # mild overs of float masters are kept
    sf.write(str(overshoot), np.full(1600, 1.5, dtype=np.float32), 16000, subtype="FLOAT")
    assert float(load_audio(overshoot).max()) == 1.5
    half = tmp_path / "half.flac"
    sf.write(str(half), np.random.default_rng(0).normal(0, 0.1, 32000), 16000)
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    with pytest.raises(AudioError, match="half.flac: cannot decode samples"):
        load_audio(half)


def test_odd_sampling_rate_is_resampled_without_a_huge_filter(tmp_path):
    """16001 Hz would need a 4.7 GB exact filter: it is resampled as 16000 Hz instead."""
    path = write(tmp_path / "odd.wav", sine(440, 1.0, 16001), rate=16001)
    wav = load_audio(path)
    assert wav.shape == (16001,)  # as if recorded at 16000 Hz: no sample dropped or invented
    assert load_audio(write(tmp_path / "cd.wav", sine(440, 1.0, 44100), rate=44100)).shape == (
        16000,
    )


def flac_declaring(path, frames):
    """A valid FLAC file whose STREAMINFO claims ``frames`` samples (36-bit field)."""
    write(path, sine(440, 0.5, 16000), subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    info = 8  # "fLaC" + the metadata block header: STREAMINFO follows
    field = int.from_bytes(data[info + 13 : info + 18], "big")
    field = (field & ~((1 << 36) - 1)) | frames  # the low 36 bits: total samples
    data[info + 13 : info + 18] = field.to_bytes(5, "big")
    path.write_bytes(bytes(data))
    return path


def test_a_header_declaring_billions_of_frames_takes_no_memory(tmp_path):
    path = flac_declaring(tmp_path / "huge.flac", (1 << 36) - 1)
    with pytest.raises(AudioError, match="cannot decode samples|truncated: the header declares"):
        check_decodes(path)  # preflight's check: block by block
    with pytest.raises(AudioError, match="too long"):
        load_audio(path, max_duration=900)
    with pytest.raises(
        AudioError, match="1 channels of 68719476735 frames are 68719476735 samples"
    ):
        load_audio(path)
