"""How sparsified weights are stored: dense with zeros (what TensorRT reads),
float16 behind a Cast, or ONNX `sparse_initializer`s.

Sparse storage keeps the non-zeros and their linearized indices. ONNX requires
INT64 indices (8 bytes per non-zero: smaller than dense float32 only above 2/3
sparsity); onnxruntime also reads INT16 indices, which address at most 32767
entries, so a larger weight is stored in chunks joined by Concat and Reshape.
Such files run in onnxruntime but fail `onnx.checker`. A weight is stored sparse
only where that is smaller than dense.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import ModelProto, helper, numpy_helper

from .layers import Layer, WeightStore, dequantized

INDEX_TYPES = {"int64": np.int64, "int16": np.int16}
CHUNK = int(np.iinfo(np.int16).max)
SPARSE_IR_VERSION = 6
FP16_MAX = float(np.finfo(np.float16).max)


def to_initializers(model: ModelProto, layers: list[Layer]) -> dict[str, str]:
    """Move weights held by Constant nodes into initializers (where TensorRT's tools,
    such as `polygraphy inspect sparsity`, look for them)."""
    weights = {layer.weight for layer in layers}
    notes = {}
    for node in list(model.graph.node):
        if node.op_type == "Constant" and node.output[0] in weights and node.attribute \
                and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
            model.graph.node.remove(node)
            notes[tensor.name] = "initializer (was a Constant node)"
    return notes


def to_fp16(model: ModelProto, layers: list[Layer]) -> dict[str, str]:
    """Store the float32 weights of `layers` as float16 behind a Cast to float32;
    returns a note per weight left as it was."""
    store = WeightStore(model)
    notes = {}
    initializers = {t.name for t in model.graph.initializer}
    for layer in layers:
        values = store.get(layer.weight)
        if values.dtype != np.float32 or layer.weight not in initializers:
            notes[layer.weight] = "float16: weight not stored as a float32 initializer"
        elif np.abs(values).max(initial=0) > FP16_MAX:
            notes[layer.weight] = "float16: values out of float16 range"
        else:
            store.set(layer.weight, values.astype(np.float16))
            _cast_back(model, layer)
    return notes


def _cast_back(model: ModelProto, layer: Layer) -> None:
    """Insert Cast(to=float) between the stored weight and its one reader."""
    name = _unique(model, f"{layer.weight}_float32")
    reader = layer.chain[0] if layer.chain else _node(model, layer.node)
    reader.input[:] = [name if n == layer.weight else n for n in reader.input]
    model.graph.node.insert(0, helper.make_node("Cast", [layer.weight], [name],
                                                 name=_unique(model, name + "_cast"),
                                                 to=onnx.TensorProto.FLOAT))


def _node(model: ModelProto, name: str) -> onnx.NodeProto:
    return next(node for node in model.graph.node if node.name == name)


def _unique(model: ModelProto, base: str) -> str:
    taken = {t.name for t in model.graph.initializer} | {n.name for n in model.graph.node}
    taken |= {o for n in model.graph.node for o in n.output}
    name, count = base, 0
    while name in taken:
        count += 1
        name = f"{base}_{count}"
    return name


def to_sparse(model: ModelProto, layers: list[Layer], indices: str = "int64"
              ) -> dict[str, str]:
    """Move the weights of `layers` into sparse initializers where that is smaller;
    returns each weight's storage."""
    store = WeightStore(model)
    initializers = {t.name: t for t in model.graph.initializer}
    done = {}
    for layer in layers:
        tensor = initializers.get(layer.weight)
        if tensor is None or dequantized(layer):
            done[layer.weight] = "dense (not a float initializer)"
            continue
        values = store.get(layer.weight)
        if _sparse_bytes(values, indices) >= values.nbytes:
            done[layer.weight] = "dense (sparse storage would not be smaller)"
            continue
        model.graph.initializer.remove(tensor)
        _store_sparse(model, layer.weight, values, indices)
        done[layer.weight] = f"sparse ({indices} indices)"
    if model.graph.sparse_initializer:
        model.ir_version = max(model.ir_version, SPARSE_IR_VERSION)
    return done


def _sparse_bytes(values: np.ndarray, indices: str) -> int:
    nonzero = int(np.count_nonzero(values))
    chunks = 1 if indices == "int64" else -(-values.size // CHUNK)
    overhead = 64 * chunks
    return nonzero * (values.itemsize + np.dtype(INDEX_TYPES[indices]).itemsize) + overhead


def _store_sparse(model: ModelProto, name: str, values: np.ndarray, indices: str) -> None:
    if indices == "int64" or values.size <= CHUNK:
        model.graph.sparse_initializer.append(
            _sparse_tensor(values.reshape(-1), name, values.shape, INDEX_TYPES[indices]))
        return
    flat = values.reshape(-1)
    parts = []
    for number, start in enumerate(range(0, flat.size, CHUNK)):
        part = _unique(model, f"{name}_sparse{number}")
        model.graph.sparse_initializer.append(
            _sparse_tensor(flat[start:start + CHUNK], part, None, np.int16))
        parts.append(part)
    joined, shape = _unique(model, f"{name}_flat"), _unique(model, f"{name}_shape")
    model.graph.initializer.append(numpy_helper.from_array(
        np.array(values.shape, np.int64), shape))
    model.graph.node.insert(0, helper.make_node("Reshape", [joined, shape], [name],
                                                 name=_unique(model, f"{name}_reshape")))
    model.graph.node.insert(0, helper.make_node("Concat", parts, [joined], axis=0,
                                                 name=_unique(model, f"{name}_concat")))


def _sparse_tensor(flat: np.ndarray, name: str, shape, index_type) -> onnx.SparseTensorProto:
    where = np.flatnonzero(flat)
    return helper.make_sparse_tensor(
        numpy_helper.from_array(flat[where], name),
        numpy_helper.from_array(where.astype(index_type), f"{name}_indices"),
        list(shape) if shape is not None else [flat.size])


def densify(model: ModelProto) -> ModelProto:
    """A copy with every sparse initializer dense again and chunked weights joined:
    the model onnxruntime runs, for the checker, shape inference and comparison."""
    dense = ModelProto()
    dense.CopyFrom(model)
    values = {sp.values.name: _dense_values(sp) for sp in dense.graph.sparse_initializer}
    del dense.graph.sparse_initializer[:]
    for node in list(dense.graph.node):
        if node.op_type == "Concat" and node.input and all(n in values for n in node.input):
            values[node.output[0]] = np.concatenate([values.pop(n) for n in node.input])
            dense.graph.node.remove(node)
    for node in list(dense.graph.node):
        if node.op_type == "Reshape" and node.input[0] in values:
            shape = next(t for t in dense.graph.initializer if t.name == node.input[1])
            values[node.output[0]] = values.pop(node.input[0]).reshape(
                numpy_helper.to_array(shape))
            dense.graph.initializer.remove(shape)
            dense.graph.node.remove(node)
    dense.graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in values.items())
    return dense


def _dense_values(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values)
    where = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dims = tuple(sparse.dims)
    flat = np.zeros(int(np.prod(dims)), values.dtype)
    flat[where if where.ndim == 1 else np.ravel_multi_index(where.T, dims)] = values
    return flat.reshape(dims)
