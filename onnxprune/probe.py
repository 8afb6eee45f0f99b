"""The onnxruntime session that probes sizes ONNX shape inference leaves open: the
model with the wanted tensors as outputs, and its large float weights generated as
zeros (sizes do not depend on them), so the session is quick to build."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import ModelProto

if TYPE_CHECKING:
    from .targets.onnxruntime import Session

# Float weights read only by these ops do not decide any size.
VALUE_ONLY_READERS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div",
                      "BatchNormalization", "LayerNormalization", "InstanceNormalization",
                      "PRelu", "Gather", "Cast", "DequantizeLinear", "QuantizeLinear"}


def probe_model(model: ModelProto, names: list[str]) -> ModelProto:
    """The model returning the named tensors, with the large float weights that only
    feed values made by ConstantOfShape."""
    probe = ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    _generate_weights(probe.graph)
    return probe


def probe_session(probe: ModelProto) -> Session:
    """An onnxruntime session for a probe model. Its generated weights fill its memory
    arena when it runs (the size of the model), so a caller lets it go after a run."""
    from .targets.onnxruntime import session

    return session(probe, optimization="none", explain=False)


def _generate_weights(graph: onnx.GraphProto, smallest: int = 4096) -> None:
    """Make large float initializers, read only by `VALUE_ONLY_READERS`, zeros from
    ConstantOfShape nodes."""
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    declared = {value.name for value in graph.input}
    kept, made = [], []
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and init.name not in declared and \
                int(np.prod(init.dims)) >= smallest and init.dims and \
                readers.get(init.name, {"?"}) <= VALUE_ONLY_READERS:
            dims = onnx.numpy_helper.from_array(np.array(list(init.dims), np.int64),
                                                f"{init.name}__probe_dims")
            kept.append(dims)
            made.append(onnx.helper.make_node("ConstantOfShape", [dims.name], [init.name]))
        else:
            kept.append(init)
    if made:
        nodes = made + list(graph.node)
        del graph.initializer[:], graph.node[:]
        graph.initializer.extend(kept)
        graph.node.extend(nodes)
