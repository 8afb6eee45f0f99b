"""The weights sparse kernels read, found on the ONNX graph as stored.

A *layer* is a Conv, MatMul or Gemm operand that is a constant weight, possibly
seen through Transpose, Cast, DequantizeLinear or Identity. Its *effective*
weight is the tensor the layer reads; its grouped axis is the one TensorRT
checks: Conv `W[K, C/g, R, S]` along C, MatMul `B[K, N]` along K (a constant
left operand `A[M, K]` along K), Gemm B along axis 0, or 1 when `transB=1`.
The *matrix view* moves the grouped axis last and keeps the output axis first:
one row per output, the reduction in columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, helper, numpy_helper

LAYER_OPS = ("Conv", "MatMul", "Gemm")
VIEW_OPS = ("Transpose", "Cast", "DequantizeLinear", "Identity")
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
QUANT_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
               onnx.TensorProto.UINT16)


@dataclass
class Layer:
    """One weight operand of a Conv, MatMul or Gemm node, eligible or not."""

    node: str
    op: str
    input_index: int | None
    activation: str | None
    weight: str | None = None
    chain: list[NodeProto] = field(default_factory=list)
    axis: int | None = None
    shape: tuple[int, ...] = ()
    outputs: int = 0
    reduction: int = 0
    reason: str | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def eligible(self) -> bool:
        return self.reason is None


class WeightStore:
    """Read and replace stored constants: initializers and Constant node values."""

    def __init__(self, model: ModelProto):
        self.model = model
        self.tensors: dict[str, onnx.TensorProto] = {t.name: t for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.attribute and \
                    node.attribute[0].name == "value":
                self.tensors[node.output[0]] = node.attribute[0].t

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.tensors[name])

    def set(self, name: str, values: np.ndarray) -> None:
        tensor = self.tensors[name]
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values), tensor.name))


def find_layers(model: ModelProto) -> list[Layer]:
    """Every Conv, MatMul and Gemm weight operand of the main graph, traced to storage."""
    store = WeightStore(model)
    graph = Graph(model, store)
    layers = []
    for node in model.graph.node:
        if node.op_type in LAYER_OPS:
            layers += _layers_of(node, graph, store)
    return layers


@dataclass
class Graph:
    """Producers, consumers and constant-ness of the tensors of a graph."""

    producers: dict[str, NodeProto]
    consumers: dict[str, list[NodeProto]]
    constant: set[str]
    outputs: set[str]

    def __init__(self, model: ModelProto, store: WeightStore):
        self.producers, self.consumers = {}, {}
        self.constant = set(store.tensors)
        self.outputs = {o.name for o in model.graph.output}
        for node in model.graph.node:
            for name in node.output:
                self.producers[name] = node
            for name in dict.fromkeys(node.input):
                self.consumers.setdefault(name, []).append(node)
            if node.op_type != "Constant" and all(not n or n in self.constant
                                                  for n in node.input):
                self.constant.update(node.output)


def _operands(node: NodeProto) -> list[tuple[int, int]]:
    """(input index, grouped axis of a 2-D operand) for the operands a weight may be."""
    if node.op_type == "Conv":
        return [(1, 1)]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gemm":
        return [(1, 1 if attrs.get("transB", 0) else 0), (0, 0 if attrs.get("transA", 0) else 1)]
    return [(1, 0), (0, 1)]


def _layers_of(node: NodeProto, graph: Graph, store: WeightStore) -> list[Layer]:
    found = []
    for index, axis in _operands(node):
        if index >= len(node.input) or node.input[index] not in graph.constant:
            continue
        other = node.input[1 - index] if node.op_type != "Conv" else node.input[0]
        layer = Layer(node.name, node.op_type, index, other, axis=axis,
                      attrs={a.name: helper.get_attribute_value(a) for a in node.attribute})
        _trace(layer, node.input[index], graph, store)
        if layer.reason is None:
            _describe(layer, node, store)
        found.append(layer)
    if not found:
        found.append(Layer(node.name, node.op_type, None, None,
                           reason="no constant weight: every operand is computed at run time"))
    return found


def _trace(layer: Layer, name: str, graph: Graph, store: WeightStore) -> None:
    """Follow view ops back to the stored constant; every step must be private."""
    chain: list[NodeProto] = []
    while name not in store:
        producer = graph.producers.get(name)
        if producer is None or producer.op_type not in VIEW_OPS:
            op = producer.op_type if producer is not None else "a graph input"
            layer.reason = (f"weight computed through {op} (followed: "
                            f"{', '.join(VIEW_OPS)})")
            return
        chain.append(producer)
        if not _private(name, graph, 1):
            layer.reason = f"weight view {name!r} is also read elsewhere"
            return
        name = producer.input[0]
    layer.weight, layer.chain = name, chain[::-1]
    readers = graph.consumers.get(name, [])
    if not _private(name, graph, 1):
        others = sorted({n.name or n.op_type for n in readers} - {layer.node})
        layer.reason = f"weight shared with {', '.join(others) or 'a graph output'}"


def _private(name: str, graph: Graph, readers: int) -> bool:
    return len(graph.consumers.get(name, [])) == readers and name not in graph.outputs


def _describe(layer: Layer, node: NodeProto, store: WeightStore) -> None:
    """Effective shape, outputs × reduction, and dtype or view problems."""
    problem = _chain_problem(layer.chain, store)
    tensor = store.tensors[layer.weight]
    dtype = _effective_type(tensor.data_type, layer.chain)
    if problem or dtype not in FLOAT_TYPES:
        layer.reason = problem or (f"weight type {helper.tensor_dtype_to_string(dtype)} "
                                   "(float32, float16, float64 supported)")
        return
    shape = tuple(effective(layer, store).shape)
    layer.shape = shape
    if 0 in shape:
        layer.reason = f"empty weight of shape {list(shape)}: nothing to sparsify"
    elif node.op_type != "Conv" and len(shape) != 2:
        layer.reason = f"weight of rank {len(shape)} (2-D weights supported)"
    elif node.op_type == "Conv" and len(shape) < 3:
        layer.reason = f"Conv weight of rank {len(shape)}"
    else:
        layer.outputs = shape[0] if node.op_type == "Conv" else shape[1 - layer.axis]
        layer.reduction = int(np.prod(shape)) // layer.outputs


def _effective_type(stored: int, chain: list[NodeProto]) -> int:
    for step in chain:
        if step.op_type == "Cast":
            stored = helper.get_attribute_value(step.attribute[0])
        elif step.op_type == "DequantizeLinear":
            stored = onnx.TensorProto.FLOAT
    return stored


def _chain_problem(chain: list[NodeProto], store: WeightStore) -> str | None:
    for step in chain:
        if step.op_type != "DequantizeLinear":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in step.attribute}
        if attrs.get("block_size", 0):
            return "block-quantized weight (DequantizeLinear block_size)"
        if any(name and name not in store for name in step.input):
            return "quantized weight, scale or zero point computed at run time"
        if store.tensors[step.input[0]].data_type not in QUANT_TYPES:
            return "quantized weight type not supported (8 and 16-bit integers are)"
    return None


def effective(layer: Layer, store: WeightStore) -> np.ndarray:
    """The weight as the layer reads it (views applied to the stored values)."""
    values = store.get(layer.weight)
    for step in layer.chain:
        values = _apply(step, values, store)
    return values


def _apply(step: NodeProto, values: np.ndarray, store: WeightStore) -> np.ndarray:
    attrs = {a.name: helper.get_attribute_value(a) for a in step.attribute}
    if step.op_type == "Transpose":
        return np.transpose(values, attrs.get("perm"))
    if step.op_type == "Cast":
        return values.astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if step.op_type == "DequantizeLinear":
        scale, zero = _quant_params(step, values, store, attrs)
        return ((values.astype(np.float32) - zero) * scale).astype(scale.dtype)
    return values


def _quant_params(step: NodeProto, values: np.ndarray, store: WeightStore, attrs: dict):
    """Scale and zero point broadcast against the quantized values."""
    scale = store.get(step.input[1])
    zero = store.get(step.input[2]) if len(step.input) > 2 and step.input[2] \
        else np.zeros_like(scale, dtype=values.dtype)
    if scale.ndim == 1 and values.ndim > 1:
        shape = [1] * values.ndim
        shape[attrs.get("axis", 1) % values.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return scale, zero.astype(np.float32)


def store_effective(layer: Layer, store: WeightStore, values: np.ndarray) -> None:
    """Write new effective values back through the inverse of each view."""
    for step in reversed(layer.chain):
        values = _invert(step, values, store)
    stored = store.tensors[layer.weight].data_type
    store.set(layer.weight, values.astype(helper.tensor_dtype_to_np_dtype(stored)))


def _invert(step: NodeProto, values: np.ndarray, store: WeightStore) -> np.ndarray:
    attrs = {a.name: helper.get_attribute_value(a) for a in step.attribute}
    if step.op_type == "Transpose":
        perm = attrs.get("perm") or list(range(values.ndim))[::-1]
        return np.transpose(values, np.argsort(perm))
    if step.op_type == "DequantizeLinear":
        stored = store.get(step.input[0])
        scale, zero = _quant_params(step, stored, store, attrs)
        info = np.iinfo(stored.dtype)
        return np.clip(np.round(values / scale) + zero, info.min, info.max)
    return values


def to_matrix(values: np.ndarray, axis: int) -> np.ndarray:
    """Rows = outputs, columns = the reduction with the grouped axis fastest."""
    moved = np.moveaxis(values, axis, -1)
    return moved.reshape(moved.shape[0], -1)


def from_matrix(matrix: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    moved = np.moveaxis(np.empty(shape, dtype=np.uint8), axis, -1).shape
    return np.moveaxis(matrix.reshape(moved), -1, axis)


def matches(pattern: str, layer: Layer) -> bool:
    """An --ignore pattern: the node name, the op type, or a regular expression."""
    return pattern in (layer.node, layer.op) or re.fullmatch(pattern, layer.node) is not None
