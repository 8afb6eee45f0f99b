"""The weights sparse kernels read, found on the ONNX graph as stored.

A *layer* is an operand of a node whose op family has a `sparse` hook (`ops/`: Conv,
MatMul, Gemm, Einsum) that is a constant weight, possibly seen through weight views
the sparsifier can write through (Transpose, Cast, DequantizeLinear, Identity). Its
*effective* weight is the tensor the layer reads; its grouped axis is the one TensorRT
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

from .. import external
from ..ops import SparseLayer, WeightView, families, family_of

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


@dataclass
class Layer:
    """One weight operand of a layer node (Conv, MatMul, Gemm, Einsum), eligible or not."""

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
        """A weight's values (a copy of its own)."""
        return np.array(external.array(self.tensors[name]))

    def set(self, name: str, values: np.ndarray) -> None:
        """Replace a weight's values; an external weight stays external (spilled)."""
        tensor = self.tensors[name]
        values = np.ascontiguousarray(values)
        stored = external.spill(values, tensor.name) if external.is_external(tensor) \
            else None
        tensor.CopyFrom(stored or numpy_helper.from_array(values, tensor.name))


def find_layers(model: ModelProto) -> list[Layer]:
    """Every weight operand of the main graph's layer nodes, traced to storage."""
    store = WeightStore(model)
    graph = Graph(model, store)
    layers = []
    for node in model.graph.node:
        family = family_of(node.op_type, node.domain)
        if family is not None and family.sparse is not None:
            layers += _layers_of(node, family.sparse, graph, store)
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


def _attrs(node: NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _layers_of(node: NodeProto, sparse: SparseLayer, graph: Graph, store: WeightStore
               ) -> list[Layer]:
    found = []
    for index, axis in sparse.operands(_attrs(node)):
        if index >= len(node.input) or node.input[index] not in graph.constant:
            continue
        layer = Layer(node.name, node.op_type, index, node.input[1 - index], axis=axis,
                      attrs=_attrs(node))
        _trace(layer, node.input[index], graph, store)
        if layer.reason is None:
            _describe(layer, sparse, store)
        found.append(layer)
    if not found:
        found.append(Layer(node.name, node.op_type, None, None,
                           reason="no constant weight: every operand is computed at run time"))
    return found


def _view(step: NodeProto) -> WeightView | None:
    family = family_of(step.op_type, step.domain)
    return None if family is None else family.view


def _writable_views() -> list[str]:
    return sorted(op for op, family in families().items()
                  if family.view is not None and family.view.writable)


def _trace(layer: Layer, name: str, graph: Graph, store: WeightStore) -> None:
    """Follow view ops back to the stored constant; every step must be private."""
    chain: list[NodeProto] = []
    while name not in store:
        producer = graph.producers.get(name)
        view = None if producer is None else _view(producer)
        if view is None or not view.writable:
            op = producer.op_type if producer is not None else "a graph input"
            layer.reason = (f"weight computed through {op} (followed: "
                            f"{', '.join(_writable_views())})")
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


def _describe(layer: Layer, sparse: SparseLayer, store: WeightStore) -> None:
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
    elif sparse.shape_problem(shape):
        layer.reason = sparse.shape_problem(shape)
    else:
        layer.outputs = sparse.outputs(shape, layer.axis)
        layer.reduction = int(np.prod(shape)) // layer.outputs


def _effective_type(stored: int, chain: list[NodeProto]) -> int:
    for step in chain:
        stored = _view(step).dtype(stored, _attrs(step))
    return stored


def _chain_problem(chain: list[NodeProto], store: WeightStore) -> str | None:
    for step in chain:
        problem = _view(step).problem(_attrs(step), [store.tensors.get(name)
                                                     for name in step.input if name])
        if problem:
            return problem
    return None


def dequantized(layer: Layer) -> bool:
    """Whether the weight is stored quantized (a view dequantizes it)."""
    return any(_view(step).dequantizes for step in layer.chain)


def _params(step: NodeProto, store: WeightStore):
    """A view op's i-th input as stored (None when absent)."""

    def param(index: int) -> np.ndarray | None:
        present = index < len(step.input) and step.input[index]
        return store.get(step.input[index]) if present else None

    return param


def effective(layer: Layer, store: WeightStore) -> np.ndarray:
    """The weight as the layer reads it (views applied to the stored values)."""
    values = store.get(layer.weight)
    for step in layer.chain:
        values = _apply(step, values, store)
    return values


def _apply(step: NodeProto, values: np.ndarray, store: WeightStore) -> np.ndarray:
    return _view(step).apply(values, _attrs(step), _params(step, store))


def store_effective(layer: Layer, store: WeightStore, values: np.ndarray) -> None:
    """Write new effective values back through the inverse of each view."""
    for step in reversed(layer.chain):
        values = _invert(step, values, store)
    stored = store.tensors[layer.weight].data_type
    store.set(layer.weight, values.astype(helper.tensor_dtype_to_np_dtype(stored)))


def _invert(step: NodeProto, values: np.ndarray, store: WeightStore) -> np.ndarray:
    return _view(step).invert(values, _attrs(step), _params(step, store))


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
