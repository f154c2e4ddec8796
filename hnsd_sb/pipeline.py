"""HNSD's pipeline from waveforms to emotions, written once.

waveforms -> ``StaticDynamicFeatures`` -> speaker-level z-scores (``SpeakerNormalization``, on
the static and dynamic streams together) -> ``HNSD`` -> log-probabilities and attention. The
recipe's ``train.py``, ``EmotionRecognizer`` (and through it the ``hnsd`` command) and the
benchmarks call these functions, so the order of the steps and the way the two streams are
joined and split again live here alone.
"""

import torch


def normalized_streams(
    features, normalizer, wavs, wav_lens, speakers=None, feat_augment=None, mix=None, crop=None
):
    """The speaker-normalised static and dynamic streams of a batch of waveforms.

    Arguments
    ---------
    features : hnsd_sb.StaticDynamicFeatures
        Computes the two streams.
    normalizer : hnsd_sb.SpeakerNormalization
        Z-scores each utterance with its speaker's statistics (``unseen`` fallback otherwise).
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor
        Relative lengths ``[batch]``.
    speakers : list of str or None
        Speaker of each waveform; None uses the normaliser's fallback for all.
    feat_augment : callable or None
        Applied to the normalised ``[batch, frames, features]`` (training only: e.g. time
        masking, where a zeroed frame is then the speaker's mean frame).
    mix : callable or None
        ``mix(feats, frame_lens) -> (feats, frame_lens)``, applied to the normalised features
        before ``feat_augment``: mixes utterances of the batch (training only:
        ``hnsd_sb.augment.Mixup``).
    crop : callable or None
        ``crop(feats, frame_lens) -> (feats, frame_lens)``, applied to the normalised features
        before ``mix``: cuts spans of the utterances (training only:
        ``hnsd_sb.augment.RandomCrop``).

    Returns
    -------
    static : torch.Tensor
        ``[batch, frames, n_static]``.
    dynamic : torch.Tensor
        ``[batch, frames, n_dynamic]``.
    frame_lens : torch.Tensor
        Relative lengths in frames ``[batch]``.

    Example
    -------
    >>> from hnsd_sb import SpeakerNormalization, StaticDynamicFeatures
    >>> features, normalizer = StaticDynamicFeatures(), SpeakerNormalization()
    >>> static, dynamic, lens = normalized_streams(
    ...     features, normalizer, torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
    >>> static.shape, dynamic.shape, [round(x, 2) for x in lens.tolist()]
    (torch.Size([2, 101, 26]), torch.Size([2, 101, 52]), [1.0, 0.5])
    """
    static, dynamic, lens = features(wavs, wav_lens, return_lengths=True)
    n_static = static.shape[-1]
    feats = normalizer(torch.cat([static, dynamic], -1), lens, speakers)
    if crop is not None:
        feats, lens = crop(feats, lens)
    if mix is not None:
        feats, lens = mix(feats, lens)
    if feat_augment is not None:
        feats = feat_augment(feats)
    return feats[..., :n_static], feats[..., n_static:], lens


def classify(
    features,
    normalizer,
    model,
    wavs,
    wav_lens,
    speakers=None,
    feat_augment=None,
    mix=None,
    crop=None,
):
    """Emotion log-probabilities and attention of a batch of waveforms.

    Arguments
    ---------
    features : hnsd_sb.StaticDynamicFeatures
        Computes the two streams.
    normalizer : hnsd_sb.SpeakerNormalization
        Speaker-level z-scores.
    model : hnsd_sb.HNSD
        Or any network called as ``model(static, dynamic, lengths, return_attention=True)``.
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor
        Relative lengths ``[batch]``.
    speakers : list of str or None
        Speaker of each waveform.
    feat_augment, mix, crop : callable or None
        See ``normalized_streams``.

    Returns
    -------
    log_probs : torch.Tensor
        ``[batch, n_classes]``.
    attention : torch.Tensor
        Pooling weights over frames ``[batch, frames]`` (zero on padding).
    frame_lens : torch.Tensor
        Relative lengths in frames ``[batch]``.

    Example
    -------
    >>> from hnsd_sb import HNSD, SpeakerNormalization, StaticDynamicFeatures
    >>> parts = StaticDynamicFeatures(), SpeakerNormalization(), HNSD(hidden_size=8, n_classes=3)
    >>> log_probs, attention, _ = classify(*parts, torch.randn(2, 8000), torch.ones(2))
    >>> log_probs.shape, attention.shape
    (torch.Size([2, 3]), torch.Size([2, 51]))
    """
    static, dynamic, lens = normalized_streams(
        features, normalizer, wavs, wav_lens, speakers, feat_augment, mix, crop
    )
    log_probs, attention = model(static, dynamic, lens, return_attention=True)
    return log_probs, attention, lens


def accumulate_statistics(features, normalizer, wavs, wav_lens, speakers):
    """Adds a batch's features to its speakers' statistics (no labels are involved).

    Arguments
    ---------
    features : hnsd_sb.StaticDynamicFeatures
        Computes the two streams.
    normalizer : hnsd_sb.SpeakerNormalization
        Accumulates the statistics of the joined streams.
    wavs : torch.Tensor
        ``[batch, samples]``.
    wav_lens : torch.Tensor
        Relative lengths ``[batch]``.
    speakers : list of str
        Speaker of each waveform.

    Example
    -------
    >>> from hnsd_sb import SpeakerNormalization, StaticDynamicFeatures
    >>> normalizer = SpeakerNormalization()
    >>> accumulate_statistics(StaticDynamicFeatures(), normalizer, torch.randn(2, 16000),
    ...                       torch.ones(2), ["s1", "s2"])
    >>> sorted(normalizer.speakers)
    ['s1', 's2']
    """
    with torch.no_grad():
        static, dynamic, lens = features(wavs, wav_lens, return_lengths=True)
    normalizer.accumulate(torch.cat([static, dynamic], -1), lens, speakers)
