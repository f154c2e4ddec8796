"""Emotion over time: a long recording classified window by window, in bounded memory.

Calls, interviews and meetings last minutes or hours, and what users want to know is where the
emotion changes; one attention pooling over an hour means little. ``classify_windows`` reads a
file span by span (never whole), classifies windows of ``segment`` seconds every ``hop``
seconds in batches, and yields a record per window and a per-file summary: the mean of the
window probabilities, and its most likely label. Memory is bounded by the window and the batch,
not by the file.

The defaults, 4 s windows every 2 s, follow the training data: the utterances of IEMOCAP and
RAVDESS last 2 to 5 s, so a 4 s window is an input of the length the model learned from, and
a 2 s hop lets every moment but the first and last 2 s fall in two windows.

Speaker normalisation: unless a speaker is named (one the model has statistics for, or one
enrolled), the statistics come from the recording itself, gathered in a first pass over it, as
the recipe does for each speaker from that speaker's own audio. A model that z-scores its
pooled vectors per speaker (``vector_normalization``) uses the named speaker's statistics of
the vectors, and otherwise those of all the speakers it knows.
"""

import os

import numpy as np
import soundfile as sf
import torch

from hnsd_sb.audio import AudioError, check_audio_header, to_model_rate

# Most windows per file: a day at the default hop. A header can declare any length, and the
# window plan is a list.
MAX_WINDOWS = 50_000
DEFAULT_SEGMENT = 4.0
DEFAULT_HOP = 2.0
ENVELOPE_RATE = 10  # envelope values per second, for plots
SUMMARY = "mean of the window probabilities"


def plan_windows(n_frames, rate, segment, hop):
    """Start and end frames of the windows covering a recording.

    Windows are ``segment`` long and start every ``hop``; the last one ends with the recording
    (it may overlap its neighbour more), so every window has the full length and every sample
    is covered. A recording no longer than ``segment`` is one window.

    Arguments
    ---------
    n_frames : int
        Length of the recording in frames.
    rate : int
        Its sampling rate.
    segment, hop : float
        Window length and step in seconds.

    Returns
    -------
    list of (int, int)
        ``(start, end)`` frames.

    Example
    -------
    >>> plan_windows(10, 1, 4.0, 2.0)
    [(0, 4), (2, 6), (4, 8), (6, 10)]
    >>> plan_windows(9, 1, 4.0, 2.0)
    [(0, 4), (2, 6), (4, 8), (5, 9)]
    >>> plan_windows(3, 1, 4.0, 2.0)
    [(0, 3)]
    """
    length, step = _frames(rate, segment, hop)
    if n_frames <= length:
        return [(0, n_frames)]
    starts = list(range(0, n_frames - length, step))
    starts.append(n_frames - length)
    return [(start, start + length) for start in starts]


def _frames(rate, segment, hop):
    """Window length and step in frames."""
    return max(1, round(segment * rate)), max(1, round(hop * rate))


class Recording:
    """An audio file read span by span, each span checked and converted like ``load_audio``.

    Arguments
    ---------
    path : str
        Audio file.
    sample_rate : int
        Rate of the returned waveforms.

    Raises
    ------
    hnsd_sb.audio.AudioError
        From the header check (missing, unreadable, truncated, empty, implausible rate).

    Example
    -------
    >>> import soundfile as sf
    >>> path = getfixture("tmpdir").join("a.wav").strpath
    >>> sf.write(path, np.zeros(48000), 48000)
    >>> with Recording(path, 16000) as rec:
    ...     rec.duration, rec.read(0, 4800).shape
    (1.0, torch.Size([1600]))
    """

    def __init__(self, path, sample_rate):
        self.path = os.fspath(path)
        self.sample_rate = sample_rate
        self.info = check_audio_header(self.path)
        self.rate = self.info.sample_rate
        self.n_frames = self.info.frames
        self.duration = self.n_frames / self.rate
        try:
            self.file = sf.SoundFile(os.fsencode(self.path))
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(self.path, f"unreadable as audio ({err})") from err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def read(self, start, end):
        """The mono waveform of frames ``start`` to ``end`` at ``sample_rate``.

        Arguments
        ---------
        start, end : int
            Frames of the file.

        Returns
        -------
        torch.Tensor
            ``[samples]`` float32.
        """
        try:
            self.file.seek(start)
            data = self.file.read(end - start, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(self.path, f"cannot decode samples ({err})") from err
        if data.shape[0] < end - start:
            raise AudioError(
                self.path,
                f"truncated: the header declares {self.n_frames} frames but decoding stops "
                f"at {start + data.shape[0]}",
            )
        return to_model_rate(self.path, data, self.rate, self.sample_rate)


def _chunks(recording, segment):
    """Consecutive spans of about ``segment`` seconds covering the recording."""
    length = max(1, round(segment * recording.rate))
    for start in range(0, recording.n_frames, length):
        yield recording.read(start, min(start + length, recording.n_frames))


def first_pass(recognizer, recording, speaker=None, segment=DEFAULT_SEGMENT):
    """Reads a recording once: its envelope (RMS, ``ENVELOPE_RATE`` values per second), and,
    with ``speaker``, its feature statistics added to the normaliser under that id.

    Arguments
    ---------
    recognizer : hnsd_sb.inference.EmotionRecognizer
        The model.
    recording : Recording
        The open recording.
    speaker : str or None
        The id its statistics go under; None: no statistics.
    segment : float
        Seconds read at a time.

    Returns
    -------
    numpy.ndarray
        The envelope.
    """
    envelope = []
    block = recognizer.sample_rate // ENVELOPE_RATE
    for wav in _chunks(recording, segment):
        n = wav.numel() // block * block
        if n:
            envelope.append(wav[:n].view(-1, block).pow(2).mean(1).sqrt().numpy())
        if speaker is not None and wav.numel() >= recognizer.sample_rate * 0.025:
            recognizer.accumulate(speaker, wav)  # a shorter tail has no analysis frame
    return np.concatenate(envelope) if envelope else np.zeros(0)


def classify_windows(
    recognizer,
    path,
    segment=DEFAULT_SEGMENT,
    hop=DEFAULT_HOP,
    speaker=None,
    batch_size=16,
    progress=None,
    envelope=None,
):
    """Classifies a recording window by window.

    Arguments
    ---------
    recognizer : hnsd_sb.inference.EmotionRecognizer
        The model.
    path : str
        Audio file of any length.
    segment, hop : float
        Window length and step in seconds.
    speaker : str or None
        A speaker the model has statistics for (from training or ``enroll``); None: the
        recording's own statistics, from a first pass over it.
    batch_size : int
        Windows classified at once.
    progress : callable or None
        ``progress(n)`` after each batch of ``n`` windows, e.g. a tqdm bar's ``update``.
    envelope : list or None
        If a list, the recording's envelope (see ``first_pass``) is appended to it.

    Yields
    ------
    dict
        A record per window (``path``, ``window`` index, ``start``, ``end`` in seconds,
        ``label``, ``score``, ``probabilities``, ``error``), then the summary record
        (``window: "summary"``, the whole recording, ``windows``: their count). A file that
        cannot be read yields one summary record with its ``error``.

    Example
    -------
    >>> import soundfile as sf
    >>> from hnsd_sb import HNSD
    >>> from hnsd_sb.export import write_model_folder
    >>> from hnsd_sb.inference import EmotionRecognizer
    >>> tmp = getfixture("tmpdir")
    >>> spec = {"model": ("hnsd_sb.HNSD", {"hidden_size": 8, "fc_size": 4, "n_classes": 2})}
    >>> state = HNSD(hidden_size=8, fc_size=4, n_classes=2).state_dict()
    >>> _ = write_model_folder(tmp.join("m").strpath, ["neg", "pos"], state, modules=spec)
    >>> recognizer = EmotionRecognizer.from_folder(tmp.join("m").strpath)
    >>> sf.write(tmp.join("a.wav").strpath, np.random.default_rng(0).normal(0, .1, 80000), 16000)
    >>> records = list(classify_windows(recognizer, tmp.join("a.wav").strpath))
    >>> [(r["window"], r["start"], r["end"]) for r in records]
    [(0, 0.0, 4.0), (1, 1.0, 5.0), ('summary', 0.0, 5.0)]
    """
    shown = os.fspath(path)
    labels = recognizer.labels
    try:
        with Recording(path, recognizer.sample_rate) as recording:
            count = window_count(recording.n_frames, recording.rate, segment, hop)
            if count > MAX_WINDOWS:
                raise AudioError(
                    shown,
                    f"{recording.duration:.4g} s in windows every {hop:g} s make {count} windows, "
                    f"more than {MAX_WINDOWS}; use a larger --hop or split the file",
                )
            windows = plan_windows(recording.n_frames, recording.rate, segment, hop)
            own = speaker is None
            if own:  # a key no real speaker id can be
                speaker = f"\0recording\0{shown}"
            if own or envelope is not None:
                shape = first_pass(recognizer, recording, speaker if own else None, segment)
                if envelope is not None:
                    envelope.append(shape)
            try:
                total = torch.zeros(len(labels))
                for first in range(0, len(windows), batch_size):
                    batch = windows[first : first + batch_size]
                    wavs = torch.stack([recording.read(s, e) for s, e in batch])
                    wavs = wavs.to(recognizer.device)
                    with torch.no_grad():
                        log_probs, _, _ = recognizer.infer_batch(wavs, None, speaker)
                    if not log_probs.isfinite().all():
                        raise AudioError(shown, "the model's output is not finite")
                    probs = log_probs.exp().cpu()
                    total += probs.sum(0)
                    for i, ((start, end), p) in enumerate(zip(batch, probs)):
                        yield _record(shown, first + i, start, end, recording.rate, p, labels)
                    if progress is not None:
                        progress(len(batch))
            finally:
                if own:
                    recognizer.mods.normalizer.forget(speaker)
            mean = total / len(windows)
            summary = _record(shown, "summary", 0, recording.n_frames, recording.rate, mean, labels)
            summary.update(windows=len(windows), summary=SUMMARY)
            yield summary
    except (AudioError, OSError, RuntimeError, ValueError, MemoryError) as err:
        if isinstance(err, AudioError):
            message = str(err)
        else:  # MemoryError has no text of its own
            message = f"{shown}: {err or type(err).__name__}"
        yield dict(
            path=shown, window="summary", start=None, end=None, label=None, score=None,
            probabilities=None, error=message,
        )  # fmt: skip


def _record(path, window, start, end, rate, probs, labels):
    """The output record of a window (or of the summary) from its probabilities."""
    best = int(probs.argmax())
    return dict(
        path=path,
        window=window,
        start=round(start / rate, 3),
        end=round(end / rate, 3),
        label=labels[best],
        score=round(float(probs[best]), 6),
        probabilities={lab: round(float(p), 6) for lab, p in zip(labels, probs)},
        error=None,
    )


def plot_timeline(records, envelope, labels, png_path, title=None):
    """Draws a recording's class probabilities over time above its waveform envelope.

    Arguments
    ---------
    records : list of dict
        The window records of one file (``classify_windows``, without the summary).
    envelope : numpy.ndarray
        RMS at ``ENVELOPE_RATE`` values per second.
    labels : list of str
        The classes.
    png_path : str
        Output PNG.
    title : str or None
        Figure title (default: the file's name).

    Example
    -------
    >>> recs = [dict(start=0.0, end=4.0, probabilities={"neg": .8, "pos": .2}),
    ...         dict(start=2.0, end=6.0, probabilities={"neg": .3, "pos": .7})]
    >>> png = getfixture("tmpdir").join("t.png").strpath
    >>> plot_timeline(recs, np.abs(np.sin(np.arange(60) / 5)), ["neg", "pos"], png)
    >>> os.path.getsize(png) > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False}):  # "$" in a name is not TeX
        _draw(plt, records, envelope, labels, png_path, title)


def _draw(plt, records, envelope, labels, png_path, title):
    """``plot_timeline``'s figure."""

    centres = [(r["start"] + r["end"]) / 2 for r in records]
    duration = max([r["end"] for r in records] + [len(envelope) / ENVELOPE_RATE])
    width = min(24.0, max(8.0, duration / 30))  # long recordings get a wider figure
    fig, (top, strip, bottom) = plt.subplots(
        3, 1, figsize=(width, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 0.35, 1]}
    )
    colours = plt.get_cmap("tab10")
    # The most likely label over time, readable at a glance on an hour-long recording: each
    # window's colour reaches halfway to its neighbours' centres.
    edges = [records[0]["start"]]
    edges += [(a + b) / 2 for a, b in zip(centres[:-1], centres[1:])] + [records[-1]["end"]]
    for i, label in enumerate(labels):
        spans = [
            (edges[k], edges[k + 1] - edges[k])
            for k, r in enumerate(records)
            if max(r["probabilities"], key=r["probabilities"].get) == label
        ]
        strip.broken_barh(spans, (0, 1), color=colours(i % 10))
    strip.set_yticks([])
    strip.set_ylabel("label", rotation=0, ha="right", va="center")
    for i, label in enumerate(labels):
        values = [r["probabilities"][label] for r in records]
        top.plot(centres, values, marker="o" if len(records) < 40 else None, markersize=3,
                 color=colours(i % 10), label=label, linewidth=1.5)  # fmt: skip
    top.set_ylim(0, 1)
    top.set_ylabel("probability")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    top.set_title(title or "emotion over time (window centres)")
    times = np.arange(len(envelope)) / ENVELOPE_RATE
    if len(envelope):
        peak = float(envelope.max()) or 1.0
        bottom.fill_between(times, -envelope / peak, envelope / peak, color="0.5", linewidth=0)
    bottom.set_ylim(-1.05, 1.05)
    bottom.set_yticks([])
    bottom.set_ylabel("envelope")
    bottom.set_xlabel("time (s)")
    bottom.set_xlim(0, max(duration, 1e-3))
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def window_count(n_frames, rate, segment=DEFAULT_SEGMENT, hop=DEFAULT_HOP):
    """The number of windows ``plan_windows`` gives, without building them (a header may
    declare billions of frames).

    Arguments
    ---------
    n_frames : int
        Length of the recording in frames.
    rate : int
        Its sampling rate.
    segment, hop : float
        Window length and step in seconds.

    Returns
    -------
    int
        ``len(plan_windows(n_frames, rate, segment, hop))``.

    Example
    -------
    >>> window_count(10, 1, 4.0, 2.0), window_count(3, 1, 4.0, 2.0)
    (4, 1)
    """
    length, step = _frames(rate, segment, hop)
    return 1 if n_frames <= length else len(range(0, n_frames - length, step)) + 1
