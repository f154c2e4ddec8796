"""A small synthetic corpus in the exact IEMOCAP release format, for tests and demos.

The audio is speech-like: a harmonic source with a moving F0 contour, shaped by formant
resonances that change from syllable to syllable, under syllable-like amplitude envelopes, with
aspiration, consonant-like noise bursts and a background noise floor. Emotions differ in F0 level
and range, loudness, syllable rate and brightness; speakers differ in F0, formants, loudness and
tempo, so a model has to normalise speakers to do well. Everything is deterministic given the
seed. Run ``python -m hnsd_sb.synthetic OUT_DIR`` to write one from the command line.
"""

import argparse
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

# F0 factor, F0 range (semitones), level (dB), syllables per second, brightness cutoff (Hz),
# mean valence/activation/dominance and the word the evaluators use.
EMOTION_STYLES = {
    "neu": dict(f0=1.00, f0_range=2.0, level=0.0, rate=3.8, cutoff=2200, vad=(3.0, 2.5, 2.5)),
    "ang": dict(f0=1.30, f0_range=4.0, level=7.0, rate=5.6, cutoff=4500, vad=(1.6, 4.2, 4.0)),
    "sad": dict(f0=0.82, f0_range=1.0, level=-7.0, rate=2.6, cutoff=1200, vad=(1.8, 1.8, 2.0)),
    "hap": dict(f0=1.25, f0_range=8.0, level=3.0, rate=4.6, cutoff=3000, vad=(4.0, 3.4, 3.0)),
    "exc": dict(f0=1.30, f0_range=8.0, level=4.0, rate=4.9, cutoff=3300, vad=(4.2, 3.9, 3.3)),
    "fru": dict(f0=1.10, f0_range=3.0, level=3.0, rate=4.4, cutoff=3500, vad=(2.0, 3.2, 3.2)),
    "xxx": dict(f0=1.05, f0_range=3.0, level=1.0, rate=4.2, cutoff=2800, vad=(2.8, 3.0, 2.8)),
}
EVALUATOR_WORDS = {
    "neu": "Neutral",
    "ang": "Anger",
    "sad": "Sadness",
    "hap": "Happiness",
    "exc": "Excited",
    "fru": "Frustration",
    "xxx": "Other",
}
# The four benchmark classes each speaker gets ``utterances_per_emotion`` of; the happy class is
# labelled hap and exc alternately, as IEMOCAP splits it.
CLASSES = ("neu", "ang", "sad", "hap")
DROPPED_LABELS = ("fru", "xxx")
# (F1, F2, F3) of a few vowels for an adult male; female speakers scale them up.
VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]]
)
BANDWIDTHS = np.array([80.0, 100.0, 150.0])


def _speaker_profiles(rng, n_sessions, speakers_per_session):
    """Voice parameters of each speaker, keyed by speaker id (``Ses01F``)."""
    profiles = {}
    for session in range(1, n_sessions + 1):
        for gender in "FM"[:speakers_per_session]:
            female = gender == "F"
            profiles[f"Ses{session:02d}{gender}"] = dict(
                gender=gender,
                f0=rng.uniform(185, 240) if female else rng.uniform(95, 135),
                formants=rng.uniform(1.10, 1.20) if female else rng.uniform(0.92, 1.02),
                gain=rng.uniform(-6.0, 6.0),
                tempo=rng.uniform(0.85, 1.15),
                breath=rng.uniform(0.05, 0.2),
            )
    return profiles


def _vowel_response(freqs, formants, cutoff):
    """Magnitude response of cascaded formant resonators and a brightness low-pass."""
    response = 1.0 / np.sqrt(1.0 + (freqs / cutoff) ** 2)
    for formant, bandwidth in zip(formants, BANDWIDTHS):
        ratio = freqs / formant
        response = response / np.sqrt((1 - ratio**2) ** 2 + (freqs * bandwidth / formant**2) ** 2)
    return response


def synthesize_utterance(rng, speaker, emotion, duration, sample_rate=16000, noise_floor=5e-4):
    """Synthesizes one speech-like utterance.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of randomness (the only one used).
    speaker : dict
        Voice with ``f0`` (Hz), ``formants`` (scale), ``gain`` (dB), ``tempo`` and ``breath``.
    emotion : str
        A key of ``EMOTION_STYLES``.
    duration : float
        Length in seconds.
    sample_rate : int
        Sampling rate in Hz.
    noise_floor : float
        Standard deviation of the background noise.

    Returns
    -------
    numpy.ndarray
        float32 samples in [-1, 1].

    Example
    -------
    >>> voice = dict(f0=120.0, formants=1.0, gain=0.0, tempo=1.0, breath=0.1)
    >>> rng = np.random.default_rng(0)
    >>> loud = synthesize_utterance(rng, voice, "ang", 1.0)
    >>> quiet = synthesize_utterance(rng, voice, "sad", 1.0)
    >>> loud.shape, bool(np.std(loud) > np.std(quiet))
    ((16000,), True)
    """
    style = EMOTION_STYLES[emotion]
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate

    # Syllable clock: its integer part indexes syllables, its fraction is the position inside.
    rate = style["rate"] * speaker["tempo"] * np.exp(rng.normal(0, 0.08))
    wobble = 1 + 0.15 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
    clock = np.cumsum(rate * wobble) / sample_rate
    index = clock.astype(int)
    frac = clock - index
    n_syllables = index[-1] + 1
    # Some syllables are silent, which gives pauses.
    amplitude = rng.uniform(0.5, 1.0, n_syllables) * (rng.random(n_syllables) > 0.12)
    accent = rng.uniform(-1.0, 1.0, n_syllables)
    edges = np.clip(t / 0.1, 0, 1) * np.clip((duration - t) / 0.1, 0, 1)
    envelope = np.sin(np.pi * frac) ** 1.5 * amplitude[index] * edges

    # F0 contour: per-syllable accents, a slow drift and a declination over the utterance.
    semitones = style["f0_range"] * (
        0.6 * accent[index] * np.sin(np.pi * frac)
        + 0.3 * np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 2 * np.pi))
        - 0.4 * t / duration
    )
    f0 = speaker["f0"] * style["f0"] * np.exp(rng.normal(0, 0.04)) * 2 ** (semitones / 12)
    cycles = np.cumsum(f0) / sample_rate
    voiced = (2 * (cycles % 1.0) - 1) * envelope
    voiced += speaker["breath"] * rng.standard_normal(n) * envelope
    bursts = rng.standard_normal(n) * (frac < 0.1) * amplitude[index] * edges

    # Two vowels alternate from syllable to syllable, cross-faded.
    # Filtering in the frequency domain, zero-padded to a power of two: FFTs of arbitrary
    # (often prime) lengths are many times slower.
    n_fft = 1 << (n - 1).bit_length()
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    cutoff = style["cutoff"] * np.exp(rng.normal(0, 0.08))
    spectrum = np.fft.rfft(voiced, n_fft)
    vowels = VOWELS[rng.choice(len(VOWELS), 2, replace=False)] * speaker["formants"]
    first = np.fft.irfft(spectrum * _vowel_response(freqs, vowels[0], cutoff), n_fft)[:n]
    second = np.fft.irfft(spectrum * _vowel_response(freqs, vowels[1], cutoff), n_fft)[:n]
    mix = 0.5 - 0.5 * np.cos(np.pi * clock)
    fricative = freqs**2 / (freqs**2 + 3000.0**2) * min(cutoff / 3000.0, 1.0)
    signal = mix * first + (1 - mix) * second
    signal /= np.sqrt(np.mean(signal**2)) + 1e-12
    signal += 0.3 * np.fft.irfft(np.fft.rfft(bursts, n_fft) * fricative, n_fft)[:n]

    level = speaker["gain"] + style["level"] + rng.normal(0, 1.0)
    signal *= 0.025 * 10 ** (level / 20) / (np.sqrt(np.mean(signal**2)) + 1e-12)
    signal += noise_floor * rng.standard_normal(n)
    return np.clip(signal, -0.99, 0.99).astype(np.float32)


def _label_plan(profiles, utterances_per_emotion, dropped_per_speaker):
    """(speaker, raw label) of every utterance, in a fixed order."""
    plan = []
    for spk in profiles:
        for emotion in CLASSES:
            for i in range(utterances_per_emotion):
                plan.append((spk, ("hap", "exc")[i % 2] if emotion == "hap" else emotion))
        for i in range(dropped_per_speaker):
            plan.append((spk, DROPPED_LABELS[i % len(DROPPED_LABELS)]))
    return plan


def _evaluator_lines(rng, emotion, gender, vad):
    """The categorical and attribute lines that follow a record in EmoEvaluation files."""
    words = [EVALUATOR_WORDS[emotion]] * 3
    if emotion == "xxx":  # No majority: the evaluators disagree.
        words = ["Neutral", "Frustration", "Anger"]
    lines = [f"C-E{j + 1}:\t{word};\t()" for j, word in enumerate(words)]
    lines.append(f"C-{gender}1:\t{words[0]};\t()")
    for j in range(2):
        val, act, dom = np.clip(np.round(np.array(vad) + rng.normal(0, 0.5, 3)), 1, 5).astype(int)
        lines.append(f"A-E{j + 1}:\tval {val}; act {act}; dom  {dom};\t()")
    return lines


def _write_dialog(root, session, dialog, utterances, rng):
    """Writes the label file and the decoy per-evaluator files of one dialog."""
    label_folder = root / f"Session{session}" / "dialog" / "EmoEvaluation"
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    categorical, attribute = [], []
    for utt in utterances:
        vad = ", ".join(f"{v:.4f}" for v in utt["vad"])
        lines.append(
            f"[{utt['start']:.4f} - {utt['end']:.4f}]\t{utt['ID']}\t{utt['raw_emo']}\t[{vad}]"
        )
        lines += _evaluator_lines(rng, utt["raw_emo"], utt["gender"], utt["vad"])
        lines.append("")
        categorical.append(f"{utt['ID']} :{EVALUATOR_WORDS[utt['raw_emo']]};\t()")
        attribute.append(f"{utt['ID']} :act {round(utt['vad'][1])}; val {round(utt['vad'][0])};")
    (label_folder / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    (label_folder / "Categorical" / f"{dialog}_e1_cat.txt").write_text("\n".join(categorical))
    (label_folder / "Attribute" / f"{dialog}_e1_atr.txt").write_text("\n".join(attribute))


def make_synthetic_iemocap(
    root,
    speakers_per_session=2,
    n_sessions=5,
    utterances_per_emotion=9,
    dropped_per_speaker=2,
    seed=0,
    sample_rate=16000,
    min_duration=1.5,
    max_duration=4.0,
):
    """Writes a synthetic corpus in the IEMOCAP release layout under ``root``.

    Each session has a female (``Ses01F``) and a male (``Ses01M``) speaker, two improvised and
    two scripted dialogs (led by either speaker, both speakers talking in each), label files with
    the header, records, evaluator lines and blank lines, plus decoy files in ``Categorical/``
    and ``Attribute/``. Each speaker has ``utterances_per_emotion`` utterances of each of neu,
    ang, sad and the happy class (labelled hap and exc alternately) plus ``dropped_per_speaker``
    utterances labelled fru or xxx, which the default 4-class map drops. The defaults give 380
    utterances, about 1050 s of audio, written in a few seconds.

    Arguments
    ---------
    root : path-like
        Output folder (the equivalent of ``IEMOCAP_full_release``).
    speakers_per_session : int
        2 (female and male) or 1 (female only).
    n_sessions : int
        Number of sessions, 1 to 5.
    utterances_per_emotion : int
        Utterances per speaker of each of the four benchmark classes.
    dropped_per_speaker : int
        Extra utterances per speaker labelled fru/xxx.
    seed : int
        Seed of the only random generator used: same seed, same corpus.
    sample_rate : int
        Sampling rate of the wav files.
    min_duration, max_duration : float
        Range of the uniformly drawn utterance durations, in seconds.

    Returns
    -------
    list of dict
        One per utterance: ``ID, spk_id, raw_emo, session, dialog, utt_type, duration, path``.

    Example
    -------
    >>> root = Path(getfixture("tmpdir")) / "iemocap"
    >>> utts = make_synthetic_iemocap(root, utterances_per_emotion=1, dropped_per_speaker=0,
    ...                               min_duration=0.2, max_duration=0.3)
    >>> len(utts), len({u["spk_id"] for u in utts})
    (40, 10)
    >>> sorted(p.name for p in (root / "Session1" / "dialog" / "EmoEvaluation").iterdir())[:3]
    ['Attribute', 'Categorical', 'Ses01F_impro01.txt']
    """
    if speakers_per_session not in (1, 2):
        raise ValueError(f"speakers_per_session must be 1 or 2, got {speakers_per_session}")
    if not 1 <= n_sessions <= 5:
        raise ValueError(f"n_sessions must be between 1 and 5, got {n_sessions}")
    if not 0 < min_duration <= max_duration:
        raise ValueError(
            f"Need 0 < min_duration <= max_duration, got {min_duration}, {max_duration}"
        )
    root = Path(root)
    rng = np.random.default_rng(seed)
    profiles = _speaker_profiles(rng, n_sessions, speakers_per_session)
    plan = _label_plan(profiles, utterances_per_emotion, dropped_per_speaker)

    # Assign the utterances to dialogs, then order each dialog in time.
    by_dialog = defaultdict(list)
    leads = "FMFM" if speakers_per_session == 2 else "FFFF"
    for spk, emotion in plan:
        session = int(spk[3:5])
        kind = rng.integers(4)
        name = ("impro0{}", "impro0{}", "script0{}_1", "script0{}_2")[kind].format(kind % 2 + 1)
        dialog = f"Ses{session:02d}{leads[kind]}_{name}"
        by_dialog[dialog].append((spk, emotion))

    utterances = []
    for dialog in sorted(by_dialog):
        session = int(dialog[3:5])
        turns = [by_dialog[dialog][i] for i in rng.permutation(len(by_dialog[dialog]))]
        counters = defaultdict(int)
        clock = rng.uniform(1.0, 5.0)
        dialog_utts = []
        for spk, emotion in turns:
            gender = profiles[spk]["gender"]
            utt_id = f"{dialog}_{gender}{counters[gender]:03d}"
            counters[gender] += 1
            n = int(round(rng.uniform(min_duration, max_duration) * sample_rate))
            vad = np.clip(np.array(EMOTION_STYLES[emotion]["vad"]) + rng.normal(0, 0.3, 3), 1, 5)
            dialog_utts.append(
                dict(
                    ID=utt_id,
                    spk_id=spk,
                    gender=gender,
                    raw_emo=emotion,
                    session=session,
                    dialog=dialog,
                    utt_type="impro" if "_impro" in dialog else "script",
                    duration=n / sample_rate,
                    start=clock,
                    end=clock + n / sample_rate,
                    vad=[round(float(v) * 2) / 2 for v in vad],
                )
            )
            clock += n / sample_rate + rng.uniform(0.3, 2.0)
        utterances += dialog_utts

    for session in range(1, n_sessions + 1):
        label_folder = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        for sub in ("Categorical", "Attribute"):
            (label_folder / sub).mkdir(parents=True, exist_ok=True)
    noise_floor = {s: rng.uniform(3e-4, 1e-3) for s in range(1, n_sessions + 1)}
    for utt in utterances:
        folder = root / f"Session{utt['session']}" / "sentences" / "wav" / utt["dialog"]
        folder.mkdir(parents=True, exist_ok=True)
        utt["path"] = folder / f"{utt['ID']}.wav"
        audio = synthesize_utterance(
            rng,
            profiles[utt["spk_id"]],
            utt["raw_emo"],
            utt["duration"],
            sample_rate,
            noise_floor[utt["session"]],
        )
        sf.write(utt["path"], audio, sample_rate, subtype="PCM_16")
    for dialog in sorted(by_dialog):
        dialog_utts = [utt for utt in utterances if utt["dialog"] == dialog]
        _write_dialog(root, dialog_utts[0]["session"], dialog, dialog_utts, rng)

    total = sum(utt["duration"] for utt in utterances)
    logger.info("Wrote %d synthetic utterances (%.0f s) to %s", len(utterances), total, root)
    keys = ("ID", "spk_id", "raw_emo", "session", "dialog", "utt_type", "duration", "path")
    return [{key: utt[key] for key in keys} for utt in utterances]


def main(argv=None):
    """Command line: ``python -m hnsd_sb.synthetic OUT_DIR [--utterances-per-emotion N]``.

    Arguments
    ---------
    argv : list of str or None
        Arguments; None reads ``sys.argv``.

    Returns
    -------
    list of dict
        What ``make_synthetic_iemocap`` returns.

    Example
    -------
    >>> out = str(Path(getfixture("tmpdir")) / "corpus")
    >>> args = ["--utterances-per-emotion", "1", "--min-duration", "0.2", "--max-duration", "0.3"]
    >>> utterances = main([out] + args)  # doctest: +ELLIPSIS
    Wrote 60 utterances (16 s of audio) to .../corpus
    """
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output folder (IEMOCAP release layout)")
    parser.add_argument("--utterances-per-emotion", type=int, default=9)
    parser.add_argument("--dropped-per-speaker", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--min-duration", type=float, default=1.5)
    parser.add_argument("--max-duration", type=float, default=4.0)
    args = parser.parse_args(argv)
    utterances = make_synthetic_iemocap(
        args.out_dir,
        utterances_per_emotion=args.utterances_per_emotion,
        dropped_per_speaker=args.dropped_per_speaker,
        seed=args.seed,
        sample_rate=args.sample_rate,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
    )
    total = sum(utt["duration"] for utt in utterances)
    print(f"Wrote {len(utterances)} utterances ({total:.0f} s of audio) to {args.out_dir}")
    return utterances


if __name__ == "__main__":
    main()
