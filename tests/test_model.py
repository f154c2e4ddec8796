"""Tests of the HNSD model: padding invariance, gradients, size, options."""

import pytest
import torch

from hnsd_sb import HNSD, SpeakerNormalization, StaticDynamicFeatures

VARIANTS = [
    {},
    {"fusion": "concat"},
    {"pooling": "mean"},
    {"streams": "static"},
    {"streams": "dynamic"},
    {"streams": "early"},
    {"bidirectional": True, "num_layers": 2},
    {"stack_frames": 3},
    {"stack_frames": 2, "bidirectional": True, "num_layers": 2},
]


@pytest.mark.parametrize("options", VARIANTS)
def test_utterance_gives_same_output_alone_and_in_padded_batch(options):
    torch.manual_seed(0)
    model = HNSD(hidden_size=32, fc_size=16, n_classes=4, **options).eval()
    static, dynamic = torch.randn(3, 50, 26), torch.randn(3, 50, 52)
    lens = torch.tensor([1.0, 0.62, 0.3])
    static[1:, 31:] = 1e3  # garbage padding must not leak in
    dynamic[1:, 31:] = -1e3
    with torch.no_grad():
        batch = model(static, dynamic, lens)
        for b, n in enumerate((50, 31, 15)):
            alone = model(static[b : b + 1, :n], dynamic[b : b + 1, :n])
            torch.testing.assert_close(batch[b : b + 1], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stack_frames", [1, 3])
def test_waveform_to_prediction_pipeline_is_padding_invariant(stack_frames):
    torch.manual_seed(0)
    compute, norm = StaticDynamicFeatures(), SpeakerNormalization()
    model = HNSD(hidden_size=32, fc_size=16, stack_frames=stack_frames).eval()
    wavs = torch.randn(2, 32000)
    wavs[1, 20011:] = 0
    lens = torch.tensor([1.0, 20011 / 32000])

    def predict(w, ln):
        static, dynamic, flens = compute(w, ln, return_lengths=True)
        feats = norm(torch.cat([static, dynamic], -1), flens, ["x"] * w.shape[0])
        return model(feats[..., :26], feats[..., 26:], flens)

    with torch.no_grad():
        batch = predict(wavs, lens)
        alone = predict(wavs[1:, :20011], torch.ones(1))
    torch.testing.assert_close(batch[1:], alone, rtol=1e-5, atol=1e-5)


def test_gradients_reach_both_encoders_and_the_gate():
    model = HNSD(hidden_size=16, fc_size=8)
    logp = model(torch.randn(2, 12, 26), torch.randn(2, 12, 52), torch.tensor([1.0, 0.5]))
    torch.nn.functional.nll_loss(logp, torch.tensor([0, 3])).backward()
    for part in (model.static_encoder, model.dynamic_encoder, model.fusion, model.pooling):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), part


def test_paper_settings_parameter_count():
    model = HNSD()
    count = sum(p.numel() for p in model.parameters())
    lstm = lambda n_in: 4 * 512 * (n_in + 512) + 2 * 4 * 512  # noqa: E731
    expected = lstm(26) + lstm(52) + 3 * 512 * 512 + 512 * 512  # GMU: W_s, W_d and W_c
    expected += 512 * 16 + 16 + 16 + 512 * 128 + 128 + 128 * 4 + 4
    assert count == expected == 3_388_068


def test_return_attention_gives_weights_over_real_frames():
    model = HNSD(hidden_size=16).eval()
    _, alpha = model(torch.randn(2, 10, 26), torch.randn(2, 10, 52), torch.tensor([1.0, 0.4]), True)
    torch.testing.assert_close(alpha.sum(1), torch.ones(2))
    assert (alpha[1, 4:] == 0).all()


def test_an_encoder_reading_frames_in_threes_is_an_lstm_over_the_stacked_frames():
    """Three frames a step: the LSTM reads their vectors concatenated, each step's output is
    given to the three frames it read, and a sequence's last, partial step reads zeros past
    its end, whatever the batch holds there."""
    from hnsd_sb import SequenceEncoder

    torch.manual_seed(0)
    enc = SequenceEncoder(5, 6, stack_frames=3)
    assert enc.lstm.input_size == 15 and enc.out_size == 6
    x = torch.randn(2, 9, 5)
    x[1, 7:] = 1e3  # padding of the second sequence (7 real frames)
    with torch.no_grad():
        out = enc(x, torch.tensor([1.0, 7 / 9]))
        full = enc.lstm(x[:1].reshape(1, 3, 15))[0]
        torch.testing.assert_close(out[0], full[0].repeat_interleave(3, dim=0))
        part = torch.cat([x[1, :7], torch.zeros(2, 5)]).reshape(1, 3, 15)
        expected = enc.lstm(part)[0][0].repeat_interleave(3, dim=0)[:7]
        torch.testing.assert_close(out[1, :7], expected)
    assert (out[1, 7:] == 0).all()
    for wrong in (0, None, 2.5):
        with pytest.raises(
            ValueError, match=f"stack_frames must be a whole number >= 1, got {wrong}"
        ):
            SequenceEncoder(5, 6, stack_frames=wrong)
    sizes = HNSD(hidden_size=8, fc_size=4, stack_frames=3).sizes()
    assert sizes["stack_frames"] == 3 and "stack_frames" not in HNSD(hidden_size=8).sizes()
    assert HNSD(**sizes).static_encoder.lstm.input_size == 78
    # HNSD fuses the streams once a step: on every real frame, what fusing each frame gives
    model = HNSD(**sizes)
    static, dynamic, lens = torch.randn(2, 11, 26), torch.randn(2, 11, 52), torch.tensor([1, 0.6])
    with torch.no_grad():
        per_frame = model.fusion(
            model.static_encoder(static, lens), model.dynamic_encoder(dynamic, lens)
        )
        got = model.frames(static, dynamic, lens)
    torch.testing.assert_close(got[0], per_frame[0])
    torch.testing.assert_close(got[1, :7], per_frame[1, :7])


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="fusion"):
        HNSD(fusion="sum")
    with pytest.raises(ValueError, match="streams"):
        HNSD(streams="three")


# The model assembled from its parts by the recipes' hparams files, and the ablations as the
# README writes them (overrides that swap a part).
ABLATIONS = {
    "two": [],
    "static": ["--dynamic_encoder=null", "--fusion=null"],
    "dynamic": ["--static_encoder=null", "--fusion=null"],
    "early": [
        "--static_encoder=null",
        "--dynamic_encoder=null",
        "--fusion=null",
        "--joint_encoder=!ref <lstm>",
    ],
    "concat": ["--fusion=!name:hnsd_sb.ConcatFusion"],
    "mean": ["--pooling=!name:hnsd_sb.MeanPooling"],
    "bidirectional": ["--bidirectional=True"],  # not an ablation: the encoders' switch
    "stats": ["--pooling=!name:hnsd_sb.AttentiveStatisticsPooling"],  # nor this: a pooling
    "expert": ["--expert=!name:hnsd_sb.FunctionalsExpert"],  # a second classifier
    "stack": ["--stack_frames=3"],  # the encoders' steps
}
EXPECTED = {
    "two": {"streams": "two", "fusion": "gmu", "pooling": "attention"},
    "static": {"streams": "static", "pooling": "attention"},
    "dynamic": {"streams": "dynamic", "pooling": "attention"},
    "early": {"streams": "early", "pooling": "attention"},
    "concat": {"streams": "two", "fusion": "concat", "pooling": "attention"},
    "mean": {"streams": "two", "fusion": "gmu", "pooling": "mean"},
    "bidirectional": {"streams": "two", "bidirectional": True, "pooling": "attention"},
    "stats": {"streams": "two", "fusion": "gmu", "pooling": "attention_stats"},
    "expert": {"streams": "two", "fusion": "gmu", "pooling": "attention", "expert": True},
    "stack": {"streams": "two", "fusion": "gmu", "pooling": "attention", "stack_frames": 3},
}


def recipe_model(hparams_file, overrides):
    """The model a recipe hparams file builds with these command-line overrides."""
    import speechbrain as sb
    from hyperpyyaml import load_hyperpyyaml

    argv = [hparams_file, "--data_folder=unused", "--lstm_size=16", "--fc_size=8", *overrides]
    _, _, yaml_overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as f:
        return load_hyperpyyaml(f, yaml_overrides)["model"]


@pytest.mark.parametrize(
    "recipe", ["IEMOCAP/hnsd/hparams/hnsd.yaml", "RAVDESS/hnsd/hparams/hnsd_improved.yaml"]
)
@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_recipe_parts_build_each_ablation_as_the_sizes_do(recipe, ablation):
    """Each ablation override gives the model its name describes, initialised exactly as the
    same model built from sizes (so rows run before the parts existed are reproduced)."""
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "recipes", recipe)
    model = recipe_model(path, ABLATIONS[ablation])  # the file seeds torch first
    sizes = model.sizes()
    assert {k: sizes.get(k) for k in EXPECTED[ablation]} == EXPECTED[ablation]
    assert sizes["hidden_size"] == 16 and sizes["fc_size"] == 8
    torch.manual_seed(1986)
    rebuilt = HNSD(**sizes)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in model.state_dict().items())


def earlier_layout(state, streams):
    """A state_dict as HNSD wrote it before its parts had their place."""
    single = {"static": "static_encoder.", "dynamic": "dynamic_encoder.", "early": "joint_encoder."}
    old = {}
    for key, value in state.items():
        key = key.replace("classifier.", "", 1) if key.startswith("classifier.") else key
        if streams in single and key.startswith(single[streams]):
            key = "encoder." + key[len(single[streams]) :]
        old[key] = value
    return old


@pytest.mark.parametrize("streams", ["two", "static", "early"])
def test_checkpoints_of_the_earlier_layout_still_load(streams):
    torch.manual_seed(0)
    trained = HNSD(hidden_size=8, fc_size=4, n_classes=3, streams=streams)
    old = earlier_layout(trained.state_dict(), streams)
    assert "fc.weight" in old and "output.bias" in old
    fresh = HNSD(hidden_size=8, fc_size=4, n_classes=3, streams=streams)
    fresh.load_state_dict(old)  # strict
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_parts_given_built_or_as_factories_and_wrong_assemblies_are_refused():
    from functools import partial

    from hnsd_sb import AdditiveAttentionPooling, SequenceEncoder, UtteranceClassifier

    lstm = partial(SequenceEncoder, hidden_size=8)
    head = partial(UtteranceClassifier, fc_size=4, n_classes=2)
    model = HNSD(static_encoder=SequenceEncoder(26, 8), pooling=AdditiveAttentionPooling(8),
                 classifier=head)  # fmt: skip
    assert model.sizes()["streams"] == "static"
    with pytest.raises(ValueError, match="give a fusion with both"):
        HNSD(static_encoder=lstm, dynamic_encoder=lstm, pooling=AdditiveAttentionPooling,
             classifier=head)  # fmt: skip
    with pytest.raises(TypeError, match="parts or sizes, not both"):
        HNSD(static_encoder=lstm, pooling=AdditiveAttentionPooling, classifier=head, hidden_size=8)
    with pytest.raises(TypeError, match="parts or sizes, not both"):
        HNSD(static_encoder=lstm, pooling="mean", classifier=head)  # a switch among parts
    # A part of one's own trains, but a model folder cannot describe it.
    mine = torch.nn.Sequential(torch.nn.Linear(8, 2), torch.nn.LogSoftmax(-1))
    own = HNSD(static_encoder=lstm, pooling=AdditiveAttentionPooling, classifier=mine)
    assert own(torch.randn(1, 5, 26), torch.randn(1, 5, 52)).shape == (1, 2)
    with pytest.raises(ValueError, match="classifier is a Sequential"):
        own.sizes()


def test_export_reads_a_model_given_by_parts_as_its_sizes(tmp_path):
    """hnsd export describes a recipe's model by its sizes (model folders stay as they were),
    and refuses a part that is not hnsd_sb's, naming the file and the entry."""
    import os

    from hnsd_sb.hparams_yaml import read_module_specs

    recipe = os.path.join(os.path.dirname(__file__), "..", "recipes", "RAVDESS", "hnsd")
    text = open(os.path.join(recipe, "hparams", "hnsd_improved.yaml"), encoding="utf-8").read()
    text = text.replace("data_folder: !PLACEHOLDER", "data_folder: unused  #")
    path = tmp_path / "hyperparams.yaml"
    # MeanPooling takes no attention_size: the error names the file and the entry
    path.write_text(
        text.replace("!name:hnsd_sb.AdditiveAttentionPooling", "!name:hnsd_sb.MeanPooling")
    )
    with pytest.raises(ValueError, match=r"yaml: modules.model: MeanPooling.*attention_size"):
        read_module_specs(path)
    gmu = "fusion: !name:hnsd_sb.GatedMultiFeatureUnit\n    out_size: !ref <lstm_size>"
    assert gmu in text
    path.write_text(text.replace(gmu, "fusion: !name:hnsd_sb.ConcatFusion"))
    class_path, sizes = read_module_specs(path)["model"]
    assert class_path == "hnsd_sb.HNSD" and sizes["fusion"] == "concat"
    assert sizes["hidden_size"] == 128 and sizes["dropout"] == 0.3 and sizes["n_classes"] == 8
    assert sizes["bidirectional"] is False
    path.write_text(text.replace("bidirectional: False", "bidirectional: True"))
    assert read_module_specs(path)["model"][1]["bidirectional"] is True
    assert "stack_frames" not in sizes  # a step per frame: folders read as before
    path.write_text(text.replace("stack_frames: 1 ", "stack_frames: 3 "))
    assert read_module_specs(path)["model"][1]["stack_frames"] == 3
    stats = "!name:hnsd_sb.AttentiveStatisticsPooling"
    path.write_text(text.replace("!name:hnsd_sb.AdditiveAttentionPooling", stats))
    assert read_module_specs(path)["model"][1]["pooling"] == "attention_stats"
    path.write_text(text.replace("hnsd_sb.AdditiveAttentionPooling", "torch.nn.Identity"))
    with pytest.raises(ValueError, match=r"hyperparams.yaml: modules.model.pooling is torch"):
        read_module_specs(path)
    # hnsd_sb's other public names are no parts: reading the file must not call them
    attack = "pooling: !new:hnsd_sb.export_model\n    source: nowhere\n    folder: anywhere\n"
    path.write_text(text.replace("pooling: !name:hnsd_sb.AdditiveAttentionPooling\n", attack))
    with pytest.raises(ValueError, match=r"modules.model.pooling is hnsd_sb.export_model"):
        read_module_specs(path)


def test_a_functionals_expert_learns_on_its_own_and_multiplies_the_heads_probabilities():
    """With an expert, training minimises the sum of the two negative log-likelihoods (neither
    learns from the other's errors) and evaluation gives their renormalised product."""
    torch.manual_seed(0)
    model = HNSD(hidden_size=8, fc_size=4, n_classes=3, expert=True)
    static, dynamic = torch.randn(4, 12, 26), torch.randn(4, 12, 52)
    lens, targets = torch.tensor([1.0, 0.9, 0.5, 0.25]), torch.tensor([0, 1, 2, 1])

    def parts():
        head = model.classifier(model.pooling(model.frames(static, dynamic, lens), lens))
        return head, model.expert(torch.cat([static, dynamic], dim=-1), lens)

    nll = torch.nn.functional.nll_loss
    model.train()  # no dropout here: the same head twice
    loss = nll(model(static, dynamic, lens), targets)
    head, expert = parts()
    torch.testing.assert_close(loss, nll(head, targets) + nll(expert, targets))
    # the expert's gradient is that of its own likelihood: the head does not enter it
    loss.backward()
    joint = model.expert.output.weight.grad.clone()
    model.zero_grad()
    nll(model.expert(torch.cat([static, dynamic], dim=-1), lens), targets).backward()
    torch.testing.assert_close(joint, model.expert.output.weight.grad)
    model.eval()
    head, expert = parts()
    torch.testing.assert_close(
        model(static, dynamic, lens), torch.log_softmax(head + expert, dim=-1)
    )
    # A model folder describes it, and the paper's model has none.
    sizes = model.sizes()
    assert sizes["expert"] is True and "expert" not in HNSD(hidden_size=8).sizes()
    assert HNSD(**sizes).state_dict().keys() == model.state_dict().keys()
