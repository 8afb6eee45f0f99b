"""onnxruntime sessions with the right execution providers and options.

    from onnxprune.targets import onnxruntime as target
    sess = target.session("sparse.onnx")                        # best available provider
    sess = target.session("sparse.onnx", ["TensorrtExecutionProvider"], input_shapes=...)

The TensorRT provider gets `tensorrt.provider_options()` (FP16 and sparse weights
on); CPU is always the fallback.
"""

from __future__ import annotations

import os

import onnxruntime as ort
from onnx import ModelProto

from ..errors import InputError
from . import tensorrt

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU = "CPUExecutionProvider"


def providers(wanted: list[str] | None = None,
              tensorrt_options: dict[str, str] | None = None) -> list:
    """Providers for a session: `wanted` (each must be available) or the preferred
    available ones, each with its options, then CPU."""
    available = ort.get_available_providers()
    if wanted:
        missing = [name for name in wanted if name not in available]
        if missing:
            raise InputError(f"execution provider {missing[0]} is not available here; "
                             f"available: {', '.join(available)}")
        chosen = list(wanted)
    else:
        chosen = [name for name in PREFERRED if name in available]
    if CPU not in chosen:
        chosen.append(CPU)
    options = {"TensorrtExecutionProvider": tensorrt_options or tensorrt.provider_options()}
    return [(name, options[name]) if name in options else name for name in chosen]


def session(model: ModelProto | str | os.PathLike, wanted: list[str] | None = None, *,
            threads: int = 0, tensorrt_options: dict[str, str] | None = None,
            optimization: str = "all") -> ort.InferenceSession:
    """An InferenceSession for a model file or ModelProto on the chosen providers."""
    levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise InputError(f"optimization must be one of {', '.join(levels)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, ModelProto) else str(model)
    return ort.InferenceSession(source, options,
                                providers=providers(wanted, tensorrt_options))
