"""Other CPU inference engines behind the serving path: ONNX Runtime and OpenVINO.

Both run the same ONNX graph of the BN-folded network (:func:`onnx_graph`: PyTorch's exporter
through :func:`senet.export`, batch dimension dynamic), so that the two engines and the native
path answer for the same function. Each is an optional extra (``pip install 'senet[onnxruntime]'``,
``'senet[openvino]'``); asking for one that is not installed is the caller's mistake, named with
the extra that provides it (:func:`require_engine`).

An engine is wrapped as a function from an fp32 ``(N, C, H, W)`` tensor to logits (:func:`engine_runner`);
:func:`senet.deploy.fast.prepare_for_inference` decides which inputs reach it. OpenVINO is asked for
fp32 inference explicitly (``INFERENCE_PRECISION_HINT``): on CPUs with bf16 units its default is bf16,
which would change the predictions beyond the stated tolerance.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import MissingExtraError
from .export import export
from .optional import require

__all__ = ["ENGINES", "EXTRAS", "require_engine", "engine_installed", "onnx_graph", "engine_runner"]

ENGINES = ("onnxruntime", "openvino")
# The pyproject extra that installs each engine (and the module it provides).
EXTRAS = {"onnxruntime": "onnxruntime", "openvino": "openvino"}

Runner = Callable[[torch.Tensor], torch.Tensor]


def require_engine(name: str) -> ModuleType:
    """The engine's Python module, or a :class:`MissingExtraError` naming the extra to install."""
    return require(name, f"backend={name!r}", EXTRAS[name])


def engine_installed(name: str) -> bool:
    """Whether ``name`` imports here (without raising)."""
    try:
        require_engine(name)
    except MissingExtraError:
        return False
    return True


def onnx_graph(net: nn.Module, input_size: tuple[int, int, int]) -> bytes:
    """The ONNX graph of ``net`` (fp32, CPU, eval mode) at ``input_size`` with a dynamic batch
    dimension, as bytes. Written by :func:`senet.export` into a temporary folder and not checked
    there: the caller compares the engine with eager PyTorch on its own example."""
    with tempfile.TemporaryDirectory(prefix="senet-engine-") as tmp:
        result = export(net, Path(tmp) / "model.onnx", input_size=input_size, dynamic_batch=True, check=False)
        return result.path.read_bytes()


def engine_runner(name: str, graph: bytes, batch_size: int, input_size: tuple[int, int, int],
                  threads: int) -> Runner:
    """``graph`` (from :func:`onnx_graph`) loaded into engine ``name`` with ``threads`` threads.

    ONNX Runtime serves any batch of ``input_size``. OpenVINO's model is reshaped to exactly
    ``(batch_size, *input_size)`` before compiling (a static shape lets its CPU plugin pick its
    kernels once), so only that shape may be given to it."""
    module = require_engine(name)
    if name == "onnxruntime":
        return _onnxruntime(module, graph, threads)
    return _openvino(module, graph, batch_size, input_size, threads)


def _onnxruntime(ort: ModuleType, graph: bytes, threads: int) -> Runner:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: np.ascontiguousarray(x.numpy())})[0])
    return run


def _openvino(ov: ModuleType, graph: bytes, batch_size: int, input_size: tuple[int, int, int],
              threads: int) -> Runner:
    core = ov.Core()
    model = core.read_model(graph)
    model.reshape([batch_size, *input_size])
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        request.infer({0: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())
    return run
