"""Shared test helpers: tiny graph builders and the mask-equivalence oracle."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import model as model_io
from onnxprune.depgraph import build, view_of
from onnxprune.rewrite import apply, mask_sinks, removed_slots
from onnxprune.shapes import sample_shapes
from onnxprune.verify import check_written, relative_error, sample_feeds


class GraphBuilder:
    """Append nodes and random constants; finish into a checked ModelProto."""

    def __init__(self, opset: int = 17, seed: int = 0):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def input(self, name: str, shape, dtype=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def const(self, values, name: str | None = None) -> str:
        name = name or self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    def weight(self, *shape, positive: bool = False) -> str:
        values = self.rng.standard_normal(shape).astype(np.float32)
        return self.const(np.abs(values) + 0.5 if positive else values)

    def op(self, op_type: str, inputs, n_out: int = 1, **attrs):
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=self._name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, group: int = 1, bias=True,
             dims: int = 2) -> str:
        w = self.weight(c_out, c_in // group, *([k] * dims))
        inputs = [x, w] + ([self.weight(c_out)] if bias else [])
        return self.op("Conv", inputs, pads=[k // 2] * (2 * dims), group=group)

    def bn(self, x: str, c: int) -> str:
        return self.op("BatchNormalization", [x, self.weight(c), self.weight(c),
                                              self.weight(c), self.weight(c, positive=True)])

    def build(self, outputs) -> onnx.ModelProto:
        outputs = [outputs] if isinstance(outputs, str) else outputs
        graph = helper.make_graph(self.nodes, "test", self.inputs,
                                  [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                   for o in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model, full_check=True)
        return model

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"


def analyze(model):
    graph = model_io.normalize(model)
    return build(view_of(graph, model))


def prune_units(model, removed_units: dict[int, np.ndarray]):
    """Pruned and masked-reference models for an explicit choice of units."""
    dep = analyze(model)
    pruned = model_io.export(apply(dep.view.graph, dep.view, removed_slots(dep, removed_units)),
                             model)
    masked = model_io.export(mask_sinks(dep, removed_units), model)
    return dep, pruned, masked


def assert_mask_equivalent(model, removed_units, tol: float = 1e-5, input_shapes=None):
    """Pruned outputs equal the masked original's; returns (dep, pruned)."""
    dep, pruned, masked = prune_units(model, removed_units)
    feeds = sample_feeds(model, sample_shapes(model, input_shapes), seed=1)
    got = check_written(pruned, feeds, source=model)
    want = check_written(masked, feeds, source=model)
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        assert relative_error(ref, got[name]) <= tol, (name, relative_error(ref, got[name]))
    return dep, pruned


def prunable(dep):
    return [g for g in dep.groups if g.prunable]


def some_units(group, fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """A random, non-empty, non-total subset of a group's units."""
    rng = np.random.default_rng(seed)
    count = min(group.units - 1, max(1, int(group.units * fraction)))
    return np.sort(rng.choice(group.units, count, replace=False))


def prune_all(model, fraction: float = 0.5, seed: int = 0, **kwargs):
    """Remove a random subset from every prunable group and check equivalence."""
    dep = analyze(model)
    removed = {g.id: some_units(g, fraction, seed + g.id) for g in prunable(dep) if g.units > 1}
    assert removed, "nothing prunable"
    return assert_mask_equivalent(model, removed, **kwargs)


def weight_shapes(model) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.dims) for t in model.graph.initializer}


def build_typed(builder: GraphBuilder, outputs, elem_type=TensorProto.FLOAT,
                ir_version: int = 8, output_shape=None) -> onnx.ModelProto:
    """Like `GraphBuilder.build`, with the outputs' element type, shape and the IR version
    chosen (float16 graphs, opsets that need a newer IR, ops shape inference skips)."""
    outputs = [outputs] if isinstance(outputs, str) else outputs
    graph = helper.make_graph(builder.nodes, "test", builder.inputs,
                              [helper.make_tensor_value_info(o, elem_type, output_shape)
                               for o in outputs], builder.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", builder.opset)])
    model.ir_version = ir_version
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def groups_on(dep, tensor: str, axis: int = 1) -> list:
    """Groups that own at least one index of the slot (tensor, axis)."""
    from onnxprune.depgraph import Slot

    slot = Slot(tensor, axis)
    return [g for g in dep.groups if slot in g.members and (g.members[slot] >= 0).any()]


def node_attr(model, op_type: str, name: str, index: int = 0):
    """An attribute of the index-th node of a type, as a Python value (None if absent)."""
    nodes = [n for n in model.graph.node if n.op_type == op_type]
    for attr in nodes[index].attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return None


def const_values(model, name_or_node_input) -> np.ndarray:
    """Values of an initializer (or Constant node output) by name."""
    for init in model.graph.initializer:
        if init.name == name_or_node_input:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name_or_node_input:
            return numpy_helper.to_array(node.attribute[0].t)
    raise KeyError(name_or_node_input)


def node_input_values(model, op_type: str, input_index: int, index: int = 0) -> np.ndarray:
    """Constant values feeding input `input_index` of the index-th node of a type."""
    nodes = [n for n in model.graph.node if n.op_type == op_type]
    return const_values(model, nodes[index].input[input_index])
