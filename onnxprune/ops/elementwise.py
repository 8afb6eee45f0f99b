"""Element-wise ops: unary ops pass every axis through; n-ary ops couple the
aligned axes of their inputs under numpy broadcasting (a constant of size 1 on
the axis stays broadcast, a per-channel constant is sliced with the channels).

Cast and Identity are also weight views: a weight stored in another type, or behind
an Identity, is seen through them with its axes unchanged."""

from __future__ import annotations

import onnx_graphsurgeon as gs
from onnx import helper

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import WeightView, register
from .rule import Rule

UNARY = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Erf", "Gelu", "Mish", "ThresholdedRelu", "Abs", "Neg", "Exp", "Log",
    "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan",
    "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Sign", "Not", "IsNaN", "IsInf", "Identity",
    "Dropout", "Cast", "CastLike", "Clip", "Shrink", "Swish",
)

BROADCASTING = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal",
    "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Mod", "BitShift",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor",
)

# Inputs that are not data (bounds, a type donor) and never carry channels.
SIDE_INPUTS = {"Clip": {1, 2}, "CastLike": {1}, "Dropout": {1, 2}}


class Unary(Rule):
    """Output equals input shape: every axis maps to itself."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        data = [node.inputs[0].name] + [t.name for t in node.outputs[:1]]
        if node.op == "Dropout" and len(node.outputs) > 1:
            data.append(node.outputs[1].name)
        if slot.tensor not in data:
            return
        for name in data:
            if name and name != slot.tensor:
                edges.same(slot, Slot(name, slot.axis), Role.ACT)


class Broadcasting(Rule):
    """Couple the aligned axis of every operand that is not broadcast on it."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        out = node.outputs[0].name
        out_rank = view.rank(out)
        rank = view.rank(slot.tensor)
        if out_rank is None or rank is None:
            edges.block(slot, f"{node.op} {node.name}: operand ranks unknown")
            return
        out_axis = slot.axis + out_rank - rank
        out_dim = view.dim(Slot(out, out_axis))
        if out_dim is None:
            edges.block(slot, f"{node.op} {node.name}: size of axis {out_axis} unknown")
            return
        if slot.tensor != out:
            if view.dim(slot) == 1 and out_dim != 1:  # a [N, 1, H, W] gate: broadcast
                edges.block(slot, f"{node.op} {node.name} broadcasts axis {slot.axis} of "
                                  f"{slot.tensor}")
                return
            edges.same(slot, Slot(out, out_axis), Role.ACT)
        for tensor in node.inputs:
            if tensor.name and tensor.name != slot.tensor:
                self._couple_operand(node, slot, tensor.name, out_axis, out_rank, out_dim, view,
                                     edges)

    @staticmethod
    def _couple_operand(node, slot, name, out_axis, out_rank, out_dim, view, edges) -> None:
        rank = view.rank(name)
        if rank is None:
            edges.block(slot, f"{node.op} {node.name}: rank of {name} unknown")
            return
        axis = out_axis - (out_rank - rank)
        if axis < 0:
            return
        dim = view.dim(Slot(name, axis))
        if dim == 1 and out_dim != 1:
            return
        if dim != out_dim:
            edges.block(slot, f"{node.op} {node.name}: size of {name} axis {axis} unknown")
            return
        role = Role.PARAM if view.is_const(name) else Role.ACT
        edges.same(slot, Slot(name, axis), role)


def _same(values, attrs: dict, params):
    return values


def _cast(values, attrs: dict, params):
    return values.astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))


VIEWS = {
    "Cast": WeightView(True, _cast, _same, dtype=lambda stored, attrs: attrs["to"]),
    "Identity": WeightView(True, _same, _same),
}
register(*(op for op in UNARY if op not in VIEWS), rule=Unary())
register("Cast", rule=Unary(), view=VIEWS["Cast"])
register("Identity", rule=Unary(), view=VIEWS["Identity"])
register(*BROADCASTING, rule=Broadcasting())
