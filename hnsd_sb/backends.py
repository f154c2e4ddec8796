"""Other ways to run the network: ONNX Runtime, and int8 weights for PyTorch and ONNX Runtime.

The network (normalised features to log-probabilities and attention) is what changes between
backends; the features and the speaker normalisation stay in PyTorch, so every backend sees the
same inputs and the parity between them is the network's alone. ``EmotionRecognizer.from_folder``
takes ``backend=``:

- ``"torch"``: the model as trained (fp32).
- ``"torch-int8"``: ``torch.ao.quantization.quantize_dynamic`` of the LSTMs and the classifier's
  linear layers, done at load time (it takes milliseconds, and a quantised state dict would need
  pickled packed weights, which ``weights_only`` loading refuses). The GMU keeps fp32 weights: it
  reads them directly for its CPU fast path.
- ``"onnx"``: ``model.onnx``, written by ``hnsd export --format onnx``, run with ONNX Runtime
  (``pip install hnsd-sb[onnx]``); dynamic batch and time axes. The graph of a model that
  z-scores its pooled vectors per speaker (``vector_normalization``) takes each utterance's
  mean and standard deviation of the vectors as two more inputs and returns the pooled vectors
  as a third output: the statistics stay in PyTorch with the features' (``OnnxNetwork`` asks
  the attached ``PooledSpeakerNormalization`` for them, and gives it the vectors to gather
  when enrolling).
- ``"onnx-int8"``: ``model.int8.onnx``, ONNX Runtime's dynamic quantisation of it (``--quantize
  int8``): int8 weights of the LSTMs (ONNX Runtime's ``DynamicQuantizeLSTM``, so the file runs
  in ONNX Runtime only) and of the matrix products, activations quantised on the fly.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from hnsd_sb import cpu

BACKENDS = ("torch", "torch-int8", "onnx", "onnx-int8")
ONNX_FILE, ONNX_INT8_FILE = "model.onnx", "model.int8.onnx"
# Largest |log-probability| difference an ONNX export may show against PyTorch when it is written.
ONNX_TOLERANCE = 1e-4
# The same for the int8 file: a check for gross errors (the six 4-class RAVDESS models of the
# recommended setting show 0.02-0.07 on the check's random batches, 0.13 on real speech).
INT8_TOLERANCE = 0.5
_INPUTS = ("static", "dynamic", "lengths")
_OUTPUTS = ("log_probs", "attention")
# A model that z-scores its pooled vectors per speaker: its graph's extra inputs and output.
_VECTOR_INPUTS, _VECTOR_OUTPUTS = ("vector_mean", "vector_std"), ("pooled",)


class _Network(torch.nn.Module):
    """HNSD with the attention always returned: the exported function."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, static, dynamic, lengths):
        """Log-probabilities and attention, as HNSD gives them with ``return_attention``."""
        return self.model(static, dynamic, lengths, return_attention=True)


class _VectorNetwork(_Network):
    """HNSD whose classifier reads the pooled vectors z-scored with the moments given (one row
    per utterance), returning them too (unscored): the exported function of a model trained
    with ``vector_normalization``."""

    def forward(self, static, dynamic, lengths, vector_mean, vector_std):
        """Log-probabilities, attention and the pooled vectors."""
        u, weights = self.model.pooling(self.model.frames(static, dynamic, lengths), lengths, True)
        return self.model.head((u - vector_mean) / vector_std, static, dynamic, lengths), weights, u


def export_onnx(model, path, check=True, vector_inputs=False):
    """Writes the network (normalised features to log-probabilities and attention) as ONNX.

    Arguments
    ---------
    model : hnsd_sb.HNSD
        The trained model (without a ``PooledSpeakerNormalization`` attached).
    path : str or path-like
        The ``.onnx`` file to write.
    check : bool
        Run the file with ONNX Runtime on a padded batch and compare with PyTorch (at most
        ``ONNX_TOLERANCE`` on the log-probabilities).
    vector_inputs : bool
        The model's classifier reads the pooled vectors z-scored per speaker: the graph takes
        their moments (``vector_mean``, ``vector_std``, ``[batch, utterance_size]``) and also
        returns the vectors (``pooled``).

    Returns
    -------
    float
        The largest log-probability difference found by the check (0.0 without it).

    Raises
    ------
    ValueError
        The export differs from PyTorch by more than ``ONNX_TOLERANCE``.

    Example
    -------
    >>> from hnsd_sb import HNSD
    >>> tmp = getfixture("tmpdir")
    >>> model = HNSD(hidden_size=8, fc_size=4, n_classes=2).eval()
    >>> export_onnx(model, tmp.join("m.onnx")) < 1e-4  # about 20 s: the exporter traces it
    True
    >>> quantize_onnx(tmp.join("m.onnx"), tmp.join("m.int8.onnx"))
    >>> static, dynamic = torch.randn(3, 50, 26), torch.randn(3, 50, 52)
    >>> lengths = torch.tensor([1.0, 0.6, 0.3])
    >>> fp32, int8 = OnnxNetwork(tmp.join("m.onnx")), OnnxNetwork(tmp.join("m.int8.onnx"))
    >>> bool(torch.allclose(fp32(static, dynamic, lengths), model(static, dynamic, lengths),
    ...                     atol=1e-4))
    True
    >>> int8(static, dynamic, lengths).shape
    torch.Size([3, 2])
    """
    model = model.eval()
    # In a fresh process: after one export, torch's exporter keeps state that fixes the time
    # axis of every later export in the same process to the first one's length (torch 2.14;
    # torch.compiler.reset() does not clear it). The check below would catch it; this avoids it.
    # The model goes to the child through a private temporary folder: our own object, written
    # and read back by us alone (a process pool would re-run the caller's unguarded script).
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "model.pt")
        with cpu.plain_pytorch(model):  # the accelerated form holds a bound method
            torch.save(model.cpu(), saved)
        code = (
            "import sys, torch; from hnsd_sb.backends import _export_here; "
            "_export_here(torch.load(sys.argv[1], weights_only=False), sys.argv[2], "
            "sys.argv[3] == 'vectors')"
        )
        kind = "vectors" if vector_inputs else "plain"
        proc = subprocess.run(
            [sys.executable, "-c", code, saved, os.fspath(path), kind],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{path}: the ONNX export failed:\n{proc.stderr[-3000:]}")
    return check_onnx(model, path) if check else 0.0


def _export_here(model, path, vector_inputs=False):
    """``export_onnx``'s work, in the calling process."""
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time", min=2)
    example = _example_inputs(model, 2, 40, vector_inputs=vector_inputs)
    network = (_VectorNetwork if vector_inputs else _Network)(model).eval()
    extra = len(_VECTOR_INPUTS) if vector_inputs else 0
    with cpu.plain_pytorch(model), torch.no_grad():
        program = torch.onnx.export(
            network,
            example,
            input_names=list(_INPUTS + _VECTOR_INPUTS[:extra]),
            output_names=list(_OUTPUTS + (_VECTOR_OUTPUTS if vector_inputs else ())),
            dynamic_shapes=({0: batch, 1: time}, {0: batch, 1: time}, {0: batch})
            + ({0: batch},) * extra,
            dynamo=True,
            verbose=False,
        )
    program.save(path)
    # The exporter annotates the LSTMs' outputs and all that follows them, the attention output
    # too, with the example's frame count, though the graph computes it from the input (ONNX
    # Runtime warns at every other length, and its optimiser would take it for a fact): drop
    # the intermediate annotations, which are optional, and name the attention's axis "time".
    import onnx

    graph = onnx.load(path)
    del graph.graph.value_info[:]
    attention = graph.graph.output[_OUTPUTS.index("attention")].type.tensor_type.shape.dim[1]
    attention.dim_param = "time"
    onnx.save(graph, path)


def _example_inputs(model, batch, frames, seed=0, vector_inputs=False):
    """A padded batch of random normalised features (the first utterance full length), and
    with ``vector_inputs`` random moments of the pooled vectors."""
    gen = torch.Generator().manual_seed(seed)
    static = torch.randn(batch, frames, model.n_static, generator=gen)
    dynamic = torch.randn(batch, frames, model.n_dynamic, generator=gen)
    lengths = torch.linspace(1.0, 0.4, batch)
    if not vector_inputs:
        return static, dynamic, lengths
    mean = 0.1 * torch.randn(batch, model.utterance_size, generator=gen)
    std = 0.05 + 0.1 * torch.rand(batch, model.utterance_size, generator=gen)
    return static, dynamic, lengths, mean, std


def check_onnx(model, path, tolerance=ONNX_TOLERANCE):
    """The largest log-probability difference between an ONNX file and the PyTorch model on
    padded batches of two shapes; raises ValueError beyond ``tolerance``.

    Arguments
    ---------
    model : hnsd_sb.HNSD
        The model it was exported from.
    path : str or path-like
        The ``.onnx`` file.
    tolerance : float
        ``ONNX_TOLERANCE`` for an fp32 file, ``INT8_TOLERANCE`` for an int8 one.

    Returns
    -------
    float
        The difference.
    """
    session = OnnxNetwork(path)
    model = model.eval()  # dropout off, as exported
    vectors = session.vector_inputs
    network = (_VectorNetwork if vectors else _Network)(model)
    worst = 0.0
    with cpu.plain_pytorch(model), torch.no_grad():
        for batch, frames in ((3, 57), (1, 301)):
            inputs = _example_inputs(model, batch, frames, seed=batch, vector_inputs=vectors)
            expected = network(*inputs)[0]
            got = session.run_graph(*inputs)[0]
            worst = max(worst, float((expected - got).abs().max()))
    if not worst <= tolerance:
        raise ValueError(
            f"{path}: the ONNX network differs from PyTorch by {worst:.3g} in log-probability "
            f"(at most {tolerance:g} allowed)"
        )
    return worst


def quantize_onnx(source, target):
    """Writes ONNX Runtime's dynamic int8 quantisation of an ONNX network: int8 weights of its
    LSTMs (``DynamicQuantizeLSTM``, an ONNX Runtime operator) and matrix products.

    Arguments
    ---------
    source : str or path-like
        The fp32 ``.onnx`` file.
    target : str or path-like
        The int8 file to write.

    Example
    -------
    >>> quantize_onnx("missing.onnx", "q.onnx")  # see export_onnx for a real one
    Traceback (most recent call last):
    ...
    FileNotFoundError: missing.onnx: no such ONNX file; write it with hnsd export --format onnx
    """
    if not Path(source).is_file():
        raise FileNotFoundError(
            f"{source}: no such ONNX file; write it with hnsd export --format onnx"
        )
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        # The exported LSTMs take their weights through Slice/Concat nodes (PyTorch's gate order
        # is not ONNX's), and ONNX Runtime quantises an LSTM only when its weights are constants:
        # its pre-processing folds them (basic optimisations, which leave a graph for any CPU).
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(os.fspath(source), prepared)
        quantize_dynamic(prepared, os.fspath(target), weight_type=QuantType.QInt8)


def quantize_torch(model):
    """The model with int8 LSTMs and classifier layers (dynamic quantisation, CPU only).

    Arguments
    ---------
    model : hnsd_sb.HNSD
        An fp32 model; it is not changed.

    Returns
    -------
    torch.nn.Module
        The quantised copy, in eval mode.

    Example
    -------
    >>> from hnsd_sb import HNSD
    >>> q = quantize_torch(HNSD(hidden_size=8, fc_size=4, n_classes=2))
    >>> q(torch.randn(1, 9, 26), torch.randn(1, 9, 52)).shape
    torch.Size([1, 2])
    """
    names = {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.LSTM)
        or (isinstance(module, torch.nn.Linear) and name.startswith("classifier."))
    }
    return torch.ao.quantization.quantize_dynamic(model.eval(), names, dtype=torch.qint8)


class OnnxNetwork(torch.nn.Module):
    """An ONNX network run by ONNX Runtime, called like ``HNSD``.

    Arguments
    ---------
    path : str or path-like
        The ``.onnx`` file.
    threads : int or None
        ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).

    Example
    -------
    >>> OnnxNetwork("missing.onnx")  # see export_onnx for a real one
    Traceback (most recent call last):
    ...
    FileNotFoundError: missing.onnx: no such ONNX file; write it with hnsd export --format onnx
    """

    def __init__(self, path, threads=None):
        super().__init__()
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"{path}: no such ONNX file; write it with hnsd export --format onnx"
            )
        try:
            import onnxruntime
        except ImportError as err:
            raise ImportError(
                "the onnx backends need onnxruntime: pip install hnsd-sb[onnx]"
            ) from err
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # its shape-inference notes are not the user's concern
        self.path = Path(path)
        try:
            self.session = onnxruntime.InferenceSession(
                os.fspath(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # ONNX Runtime's own exception types
            raise ValueError(f"{path}: not an ONNX graph ONNX Runtime can run ({err})") from None
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        if names not in (list(_INPUTS), list(_INPUTS + _VECTOR_INPUTS)):
            raise ValueError(f"{path}: inputs {names}, not those of HNSD's network {list(_INPUTS)}")
        # True: the graph z-scores the pooled vectors with the moments it is given
        self.vector_inputs = len(names) > len(_INPUTS)
        self.vector_size = inputs[-1].shape[1] if self.vector_inputs else None
        self.vector_normalization = None

    def attach_vector_normalization(self, norm):
        """Called by ``PooledSpeakerNormalization.attach`` (and ``detach``, with None): the
        statistics whose moments the graph z-scores the pooled vectors with.

        Arguments
        ---------
        norm : hnsd_sb.normalization.PooledSpeakerNormalization or None
            The statistics.
        """
        if norm is not None and not self.vector_inputs:
            raise ValueError(
                f"{self.path}: this graph classifies plain pooled vectors, but the model "
                "z-scores them per speaker; export the run again with --format onnx"
            )
        self.vector_normalization = norm

    def run_graph(self, *inputs):
        """The graph's outputs (tensors) for its inputs (tensors, in the graph's order)."""
        names = _INPUTS + (_VECTOR_INPUTS if self.vector_inputs else ())
        feeds = {
            name: x.detach().cpu().float().contiguous().numpy() for name, x in zip(names, inputs)
        }
        return [torch.from_numpy(x) for x in self.session.run(None, feeds)]

    def forward(self, static, dynamic, lengths=None, return_attention=False):
        """Classifies a batch: see ``hnsd_sb.HNSD.forward``."""
        if lengths is None:
            lengths = torch.ones(static.shape[0])
        inputs, norm = [static, dynamic, lengths], self.vector_normalization
        if self.vector_inputs:
            if norm is None:
                raise RuntimeError(
                    f"{self.path}: the graph z-scores the pooled vectors per speaker; attach "
                    "the model's PooledSpeakerNormalization first"
                )
            moments = norm.moments()
            if moments is None:  # gathering the vectors: they pass unchanged
                shape = (static.shape[0], self.vector_size)
                moments = (torch.zeros(shape), torch.ones(shape))
            inputs += moments
        outputs = self.run_graph(*inputs)
        if self.vector_inputs:
            norm.gather(outputs[2])
        log_probs, attention = outputs[:2]
        return (log_probs, attention) if return_attention else log_probs
