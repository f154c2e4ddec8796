"""ONNX Runtime and int8 backends: parity with PyTorch, loading checks, the CLI options."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hnsd_sb import HNSD
from hnsd_sb.audio import load_audio
from hnsd_sb.cli import main
from hnsd_sb.export import write_model_folder
from hnsd_sb.inference import EmotionRecognizer

pytest.importorskip("onnxruntime")

RAVDESS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess"
LABELS = ["ang", "hap", "neu", "sad"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A paper-size model folder with model.onnx and model.int8.onnx (one export: ~20 s).
    With dropout: the checks must compare the network in eval mode, as it was exported."""
    torch.manual_seed(0)
    state = HNSD(n_classes=4, dropout=0.3).state_dict()
    spec = {"model": ("hnsd_sb.HNSD", {"n_classes": 4, "dropout": 0.3})}
    out = tmp_path_factory.mktemp("backends") / "model"
    return write_model_folder(out, LABELS, state, modules=spec, onnx=True, int8=True)


@pytest.fixture(scope="module")
def recognizers(folder):
    return {
        backend: EmotionRecognizer.from_folder(folder, {"device": "cpu"}, backend=backend)
        for backend in ("torch", "onnx", "onnx-int8", "torch-int8")
    }


def padded(wavs):
    """A padded batch and its relative lengths."""
    longest = max(w.numel() for w in wavs)
    batch = torch.zeros(len(wavs), longest)
    for i, w in enumerate(wavs):
        batch[i, : w.numel()] = w
    return batch, torch.tensor([w.numel() / longest for w in wavs])


def log_probs(recognizer, wavs, lens):
    return recognizer.infer_batch(wavs, lens)[0]


def test_onnx_matches_pytorch_on_padded_batches(recognizers):
    rng = np.random.default_rng(0)
    wavs = [
        torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32)) for n in (48000, 20000, 7000)
    ]
    batch, lens = padded(wavs)
    expected = log_probs(recognizers["torch"], batch, lens)
    got = log_probs(recognizers["onnx"], batch, lens)
    assert float((expected - got).abs().max()) <= 1e-4
    # each utterance alone gives what it gets in the padded batch
    alone = torch.cat([log_probs(recognizers["onnx"], w.unsqueeze(0), None) for w in wavs])
    assert float((alone - got).abs().max()) <= 1e-4


@pytest.mark.skipif(not RAVDESS.is_dir(), reason="RAVDESS copy not found at ../shared/data")
def test_onnx_matches_pytorch_on_real_ravdess_files(recognizers):
    files = sorted((RAVDESS / "Actor_01").glob("*.wav"))[::10][:8]
    batch, lens = padded([load_audio(str(f)) for f in files])
    expected = log_probs(recognizers["torch"], batch, lens)
    got = log_probs(recognizers["onnx"], batch, lens)
    assert float((expected - got).abs().max()) <= 1e-4


def test_int8_backends_stay_close_to_fp32(recognizers):
    rng = np.random.default_rng(1)
    batch = torch.from_numpy(rng.normal(0, 0.1, (4, 32000)).astype(np.float32))
    reference = log_probs(recognizers["torch"], batch, None).exp()
    for backend in ("onnx-int8", "torch-int8"):
        probs = log_probs(recognizers[backend], batch, None).exp()
        assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-4)
        assert float((probs - reference).abs().max()) < 0.05, backend  # int8, not another model


def test_onnx_int8_quantises_the_lstms_and_keeps_the_time_axis_free(folder):
    """model.int8.onnx holds int8 LSTMs (their weights are folded to constants first, without
    which ONNX Runtime leaves them fp32), and both files give the attention a free time axis."""
    import onnx

    int8 = onnx.load(folder / "model.int8.onnx").graph
    ops = [node.op_type for node in int8.node]
    assert ops.count("DynamicQuantizeLSTM") == 2 and "LSTM" not in ops
    lstm_weights = {node.input[1] for node in int8.node if node.op_type == "DynamicQuantizeLSTM"}
    dtypes = {t.name: t.data_type for t in int8.initializer}
    assert {dtypes[name] for name in lstm_weights} == {onnx.TensorProto.INT8}
    for name in ("model.onnx", "model.int8.onnx"):
        output = onnx.load(folder / name).graph.output[1]
        assert output.name == "attention"
        assert [d.dim_param for d in output.type.tensor_type.shape.dim] == ["batch", "time"]


def test_each_torch_backend_runs_the_form_measured_faster(recognizers):
    """fp32 runs plain, int8 with its streams side by side (benchmarks/RESULTS.md)."""
    from hnsd_sb.cpu import is_accelerated

    assert not is_accelerated(recognizers["torch"].mods.model)
    assert is_accelerated(recognizers["torch-int8"].mods.model)


def test_a_graph_of_plain_pooled_vectors_is_refused_for_a_z_scoring_model(folder):
    """A graph without the vectors' moments as inputs cannot serve a model trained with
    ``vector_normalization``: attaching its statistics names the file."""
    from hnsd_sb.backends import OnnxNetwork
    from hnsd_sb.normalization import PooledSpeakerNormalization

    network = OnnxNetwork(folder / "model.onnx")
    assert not network.vector_inputs
    with pytest.raises(ValueError, match="model.onnx: this graph classifies plain pooled vectors"):
        PooledSpeakerNormalization().attach(network)


def test_an_onnx_graph_that_is_not_the_model_is_refused(folder, tmp_path):
    import onnx
    from onnx import numpy_helper

    tampered = Path(shutil.copytree(folder, tmp_path / "tampered"))
    graph = onnx.load(tampered / "model.onnx")
    weights = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))  # an LSTM's, surely
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.5, weights.name))
    onnx.save(graph, tampered / "model.onnx")
    with pytest.raises(ValueError, match="model.onnx: not the network of model.ckpt"):
        EmotionRecognizer.from_folder(tampered, {"device": "cpu"}, backend="onnx")
    (tampered / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ValueError, match="model.onnx: not an ONNX graph ONNX Runtime can run"):
        EmotionRecognizer.from_folder(tampered, {"device": "cpu"}, backend="onnx")


def test_predict_with_each_backend(folder, tmp_path, capsys, monkeypatch):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(2).normal(0, 0.1, 40000), 16000)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # restored after the test
    labels = {}
    for backend in ("torch", "torch-int8", "onnx", "onnx-int8"):
        assert main(["predict", "--model", str(folder), "--backend", backend, str(wav)]) == 0
        labels[backend] = json.loads(capsys.readouterr().out)["probabilities"]
        # the ONNX Runtime backends ask torch's OpenMP threads not to spin (passive_openmp)
        assert os.environ.get("OMP_WAIT_POLICY") == ("PASSIVE" if "onnx" in backend else None)
    assert labels["onnx"] == pytest.approx(labels["torch"], abs=1e-4)
    bare = Path(shutil.copytree(folder, tmp_path / "bare"))
    os.remove(bare / "model.onnx")
    assert main(["predict", "--model", str(bare), "--backend", "onnx", str(wav)]) == 2
    assert "no such ONNX file; write it with hnsd export --format onnx" in capsys.readouterr().err


def test_quantize_needs_the_onnx_format(tmp_path, capsys):
    assert main(["export", str(tmp_path), str(tmp_path / "m"), "--quantize", "int8"]) == 1
    assert "--quantize int8 needs --format onnx" in capsys.readouterr().err


def test_export_checks_the_int8_file_and_writes_nothing_when_it_fails(tmp_path, monkeypatch):
    """The int8 file is run against the model before the folder moves into place (a check for
    gross errors, ``INT8_TOLERANCE``); made impossible here, the export fails and leaves
    nothing behind."""
    from hnsd_sb import backends

    monkeypatch.setattr(backends, "INT8_TOLERANCE", 1e-9)
    state = HNSD(hidden_size=8, fc_size=4, n_classes=4).state_dict()
    spec = {"model": ("hnsd_sb.HNSD", {"hidden_size": 8, "fc_size": 4, "n_classes": 4})}
    out = tmp_path / "model"
    with pytest.raises(ValueError, match="model.int8.onnx: the ONNX network differs from PyTorch"):
        write_model_folder(out, LABELS, state, modules=spec, onnx=True, int8=True)
    assert not out.exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "part", [{"pooling": "attention_stats"}, {"expert": True}, {"stack_frames": 3}]
)
def test_a_model_with_another_part_exports_and_runs_in_onnx(tmp_path, part):
    """A swapped-in pooling, a functionals expert beside the head, or encoders that read three
    frames a step travel through the model folder and the ONNX graph alike."""
    torch.manual_seed(0)
    sizes = {"hidden_size": 8, "fc_size": 4, "n_classes": 4, **part}
    state = HNSD(**sizes).state_dict()
    folder = write_model_folder(
        tmp_path / "model", LABELS, state, modules={"model": ("hnsd_sb.HNSD", sizes)}, onnx=True
    )
    wavs, lens = padded([torch.randn(16000) * 0.1, torch.randn(9000) * 0.1])
    got = {
        backend: log_probs(EmotionRecognizer.from_folder(folder, backend=backend), wavs, lens)
        for backend in ("torch", "onnx")
    }
    assert float((got["torch"] - got["onnx"]).abs().max()) <= 1e-4
