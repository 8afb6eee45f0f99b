"""Loading, normalizing and saving ONNX models.

Normalization turns every weight into a graph-level constant (initializers, `Constant` nodes,
`ConstantOfShape`, `Identity` of a constant, and any other node whose inputs are all constants
are folded), names unnamed nodes, and infers shapes, so later passes see one uniform form.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import ModelProto

from . import datafiles, external
from .errors import InputError, ModelError, first_line

if TYPE_CHECKING:
    from .files import Transaction

EXTERNAL_DATA_THRESHOLD = 1_800_000_000
FOLD_LIMIT_ELEMENTS = 64_000_000
NO_FOLD_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
               "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "If", "Loop", "Scan", "SequenceEmpty"}

CAST_FOLD_LIMIT = 1024
WEIGHT_SOURCES = {"Constant", "ConstantOfShape", "Identity"}

def load(model: ModelProto | str | os.PathLike, structure_only: bool = False) -> ModelProto:
    """Read a model from a path (external data included) or pass a ModelProto through.
    A structure-only file is refused, or given placeholder weights when
    `structure_only` allows it (enough to inspect its groups)."""
    from .structure import fill, is_structure_only

    proto = model if isinstance(model, ModelProto) else _read(model)
    if is_structure_only(proto):
        if structure_only:
            return fill(proto)
        raise InputError("a structure-only file without weights; fill it first "
                         "(onnxprune.structure.fill)")
    return proto


def _read(model: str | os.PathLike) -> ModelProto:
    path = Path(model)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an ONNX file")
    try:
        proto = external.read(path)
    except InputError:
        raise
    except Exception as exc:  # protobuf raises several unrelated types
        raise InputError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    if not proto.graph.node:
        raise InputError(f"{path}: not an ONNX model (no graph nodes)")
    return proto


def check(model: ModelProto, what: str = "model") -> None:
    """Run the ONNX checker on an input model; raise ModelError with its first line.
    (Shapes are inferred later; written models get the full check.)"""
    try:
        if external.has_external(model) or _weight_bytes(model) > EXTERNAL_DATA_THRESHOLD:
            datafiles.check(model)  # past 2 GB the checker needs a path
        else:
            onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{what} fails the ONNX checker: {first_line(exc)}") from None


def normalize(model: ModelProto) -> gs.Graph:
    """Import into onnx-graphsurgeon, fold constants and name every node."""
    graph = gs.import_onnx(model)
    external.map_lazy(graph)
    fold_constants(graph)
    name_nodes(graph)
    return graph


def name_nodes(graph: gs.Graph) -> None:
    """Give each unnamed node a unique, stable name derived from its op type."""
    taken = {n.name for n in graph.nodes if n.name}
    for index, node in enumerate(graph.nodes):
        if node.name:
            continue
        name = f"{node.op}_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)


def fold_constants(graph: gs.Graph) -> None:
    """Replace nodes whose inputs are all constants by constant tensors."""
    graph_outputs = {t.name for t in graph.outputs}
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if _foldable(node, graph_outputs) and _fold_node(node, graph.opset):
                changed = True
        if changed:
            graph.cleanup(remove_unused_graph_inputs=False)


def _foldable(node: gs.Node, graph_outputs: set[str]) -> bool:
    if node.op in NO_FOLD_OPS or (node.domain or "") not in ("", "ai.onnx"):
        return False
    if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return False
    if len(node.outputs) != 1 or node.outputs[0].name in graph_outputs:
        return False
    if not node.inputs:
        return node.op == "Constant"
    if node.op == "Cast" and isinstance(node.inputs[0], gs.Constant) and \
            np.asarray(node.inputs[0].values).size > CAST_FOLD_LIMIT:
        return False  # keep weights stored in their own precision
    return all(isinstance(t, gs.Constant) or t.name == "" for t in node.inputs)


def _fold_node(node: gs.Node, opset: int) -> bool:
    try:
        value = _evaluate(node, opset)
    except Exception:
        return False
    if value is None or (value.size > FOLD_LIMIT_ELEMENTS and node.op not in WEIGHT_SOURCES):
        return False
    out = node.outputs[0]
    const = gs.Constant(out.name, np.asarray(value))
    for consumer in list(out.outputs):
        for i, tensor in enumerate(consumer.inputs):
            if tensor is out:
                consumer.inputs[i] = const
    node.outputs.clear()
    return True


def _evaluate(node: gs.Node, opset: int) -> np.ndarray | None:
    if node.op == "Constant":
        return _constant_value(node)
    if node.op == "Identity":
        return node.inputs[0].values
    if node.op == "ConstantOfShape":
        fill = node.attrs.get("value")
        fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill.values).reshape(-1)
        return np.full(tuple(int(d) for d in node.inputs[0].values), fill[0], dtype=fill.dtype)
    from onnx.reference import ReferenceEvaluator

    inputs = list(node.inputs)
    proto_inputs = [onnx.helper.make_tensor_value_info(f"i{k}", 0, None)
                    for k in range(len(inputs))]
    names = [f"i{k}" if t.name else "" for k, t in enumerate(inputs)]
    proto_node = onnx.helper.make_node(node.op, names, ["y"],
                                       **{k: _attr_value(v) for k, v in node.attrs.items()})
    graph = onnx.helper.make_graph([proto_node], "fold", proto_inputs, [
        onnx.helper.make_tensor_value_info("y", 0, None)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    feeds = {f"i{k}": t.values for k, t in enumerate(inputs) if t.name}
    return np.asarray(ReferenceEvaluator(model).run(None, feeds)[0])


def _attr_value(value):
    if isinstance(value, gs.Constant):
        return onnx.numpy_helper.from_array(np.asarray(value.values))
    return value


def _constant_value(node: gs.Node) -> np.ndarray | None:
    attrs = node.attrs
    if "value" in attrs:
        return np.asarray(attrs["value"].values)
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(list(attrs[key]), dtype=dtype)
    return None


def export(graph: gs.Graph, original: ModelProto) -> ModelProto:
    """Export a graph and restore the original model-level fields."""
    io_names = {t.name for t in list(graph.inputs) + list(graph.outputs)}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.name not in io_names:
            tensor.shape = None
    external.settle(graph, to_scratch=external.has_external(original))
    proto = gs.export_onnx(graph, do_type_check=False)
    del proto.graph.value_info[:]
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(proto, field, getattr(original, field))
    # IR 4 is the first version whose initializers need not be graph inputs.
    proto.ir_version = max(original.ir_version, 4)
    del proto.opset_import[:]
    proto.opset_import.extend(original.opset_import)
    del proto.metadata_props[:]
    proto.metadata_props.extend(original.metadata_props)
    if original.functions and not proto.functions:
        proto.functions.extend(original.functions)
    _restore_io(proto, original)
    return proto


def structure_proto(graph: gs.Graph, original: ModelProto, limit: int = 256) -> ModelProto:
    """A copy for shape inference: large constants become typed inputs, not data."""
    copy = graph.copy()
    for tensor in list(copy.tensors().values()):
        if isinstance(tensor, gs.Constant) and tensor.values.size > limit:
            tensor.to_variable(dtype=tensor.dtype, shape=list(tensor.shape))
            tensor.type = "tensor_type"
            copy.inputs.append(tensor)
    return export(copy, original)


def weightless(model: ModelProto, limit: int = 256) -> ModelProto:
    """A copy for shape checks: initializers over `limit` elements become typed graph
    inputs, so nothing large is copied or serialized."""
    light = ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(light, field, getattr(model, field))
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    declared = {value.name for value in model.graph.input}
    for init in model.graph.initializer:
        if init.name in declared or not external.is_external(init) and \
                int(np.prod(init.dims, dtype=np.int64)) <= limit:
            graph.initializer.append(init)
        elif int(np.prod(init.dims, dtype=np.int64)) > limit:
            graph.input.append(onnx.helper.make_tensor_value_info(
                init.name, init.data_type, list(init.dims)))
        else:  # a small external tensor: its values (shape computations read them)
            graph.initializer.append(onnx.numpy_helper.from_array(
                np.array(external.array(init)), init.name))
    return light


def _restore_io(proto: ModelProto, original: ModelProto) -> None:
    """Keep graph inputs/outputs exactly as declared (names, dtypes, shapes)."""
    inits = {t.name for t in proto.graph.initializer}
    originals = {v.name: v for v in list(original.graph.input) + list(original.graph.output)}
    for field in (proto.graph.input, proto.graph.output):
        for value in field:
            if value.name in originals and value.name not in inits:
                value.CopyFrom(originals[value.name])


def save(model: ModelProto, path: str | os.PathLike) -> None:
    """Write atomically; weights go to `<name>.data` beside it when the model is large."""
    from .files import transaction

    with transaction() as outputs:
        stage(model, path, outputs)


def stage(model: ModelProto, path: str | os.PathLike, outputs: Transaction) -> None:
    """Write a model into a `files.Transaction`: it (and `<name>.data` beside it, when
    it is large or read from external data) appears at `path` when the transaction
    commits. An input model's external data file is never a target."""
    from .files import check_writable, unwritable

    path = Path(path)
    check_writable(path)
    split = external.has_external(model) or _weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data_name = path.name + ".data"
    for target in (path, path.parent / data_name) if split else (path,):
        external.refuse_input(target)
    temp = outputs.temp_path(path)
    try:
        if split:
            datafiles.write(model, temp, data_name)
        else:
            onnx.save_model(model, str(temp))
    except OSError as exc:
        raise unwritable(path, exc) from None
    if split:
        outputs.add(temp.parent / data_name, path.parent / data_name)


def _weight_bytes(model: ModelProto) -> int:
    total = 0
    for init in model.graph.initializer:
        if external.is_external(init):
            total += external.length(init)
        elif init.HasField("raw_data"):
            total += len(init.raw_data)
        else:
            total += int(np.prod(init.dims, dtype=np.int64)) * 4
    return total
