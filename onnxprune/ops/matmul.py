"""MatMul and Gemm. A constant B produces channels on its N axis and absorbs
them on its K axis; between two activations (attention) K couples both operands
and batch axes are coupled under broadcasting.

Cost: output elements × K. Bias carrier: Gemm's C, or a per-channel Add after a
MatMul. Refit: a 2-D weight B. Sparsity: the weight operand grouped along K; its input
rows are the other operand's rows.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .layer import (
    added_after,
    elements,
    matrix_contribution,
    own_bias,
    per_output,
    reads_at,
    weight_input,
)
from .registry import Sink, SparseLayer, register
from .rule import Rule


def _role(view: GraphView, name: str, absorbs: bool) -> Role:
    if not view.is_weight(name):
        return Role.ACT
    return Role.IN if absorbs else Role.OUT


class MatMul(Rule):
    """A[..., M, K] · B[..., K, N] = Y[..., M, N]."""

    def seeds(self, node: gs.Node, view: GraphView) -> list[Slot]:
        a, b = node.inputs[0].name, node.inputs[1].name
        seeds = []
        if view.is_weight(b) and (view.rank(b) or 0) >= 2:
            seeds.append(Slot(b, view.rank(b) - 1))
        if view.is_weight(a) and (view.rank(a) or 0) >= 2:
            seeds.append(Slot(a, view.rank(a) - 2))
        return seeds

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        a, b, y = node.inputs[0].name, node.inputs[1].name, node.outputs[0].name
        ranks = [view.rank(n) for n in (a, b, y)]
        if None in ranks or min(ranks[:2]) < 2:
            edges.block(slot, f"MatMul {node.name}: operand ranks unknown or 1-D")
            return
        ra, rb, ry = ranks
        classes = [
            [(a, ra - 1, True), (b, rb - 2, True)],  # K: contracted
            [(a, ra - 2, False), (y, ry - 2, False)],  # M
            [(b, rb - 1, False), (y, ry - 1, False)],  # N
        ]
        for k in range(1, ry - 1):  # batch axes, right-aligned
            classes.append([(n, r - ry + k, False) for n, r in ((a, ra), (b, rb), (y, ry))
                            if r - ry + k >= 0 and _unbroadcast(view, n, r - ry + k, y, k)])
        attention = not view.is_weight(a) and not view.is_weight(b)
        for index, members in enumerate(classes):
            if any(Slot(name, axis) == slot for name, axis, _ in members):
                for name, axis, absorbs in members:
                    if Slot(name, axis) != slot:
                        edges.same(slot, Slot(name, axis), _role(view, name, absorbs))
                if attention and index >= 3:
                    edges.tag(slot, "attention")
                if attention and index == 0:
                    edges.mix(slot, f"MatMul {node.name} contracts this axis between two "
                                    "activations (e.g. head_dim of Q·Kᵀ)")
                return
        edges.block(slot, f"MatMul {node.name}: axis {slot.axis} is broadcast")


def _unbroadcast(view: GraphView, name: str, axis: int, y: str, y_axis: int) -> bool:
    dim = view.dim(Slot(name, axis))
    return not (dim == 1 and view.dim(Slot(y, y_axis)) != 1)


class Gemm(Rule):
    """Y[M, N] = op(A)[M, K] · op(B)[K, N] + C, op transposing when transA/transB."""

    def _axes(self, node: gs.Node):
        trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
        a_k, a_m = (0, 1) if trans_a else (1, 0)
        b_n, b_k = (0, 1) if trans_b else (1, 0)
        return a_m, a_k, b_k, b_n

    def seeds(self, node: gs.Node, view: GraphView) -> list[Slot]:
        b = node.inputs[1].name
        return [Slot(b, self._axes(node)[3])] if view.is_weight(b) else []

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        a, b, y = node.inputs[0].name, node.inputs[1].name, node.outputs[0].name
        c = node.inputs[2].name if len(node.inputs) > 2 else ""
        a_m, a_k, b_k, b_n = self._axes(node)
        classes = [
            [(a, a_k, True), (b, b_k, True)],
            [(a, a_m, False), (y, 0, False)] + self._bias(view, c, y, 0),
            [(b, b_n, False), (y, 1, False)] + self._bias(view, c, y, 1),
        ]
        for members in classes:
            if any(Slot(n, ax) == slot for n, ax, _ in members):
                for name, axis, absorbs in members:
                    if Slot(name, axis) != slot:
                        role = Role.PARAM if name == c else _role(view, name, absorbs)
                        edges.same(slot, Slot(name, axis), role)
                return
        edges.block(slot, f"Gemm {node.name}: axis {slot.axis} of {slot.tensor} is broadcast")

    @staticmethod
    def _bias(view: GraphView, c: str, y: str, y_axis: int):
        rank = view.rank(c) if c else None
        if not rank:
            return []
        axis = y_axis - (2 - rank)
        if axis < 0 or view.dim(Slot(c, axis)) == 1:
            return []
        return [(c, axis, False)]


def _macs(node: gs.Node, shape_of) -> int:
    y = shape_of(node.outputs[0].name) if node.outputs else None
    a = shape_of(node.inputs[0].name)
    if not a or y is None:
        return 0
    k = a[0] if node.op == "Gemm" and node.attrs.get("transA", 0) else a[-1]
    return elements(y) * k


def _gemm_scale(node: gs.Node) -> float:
    return float(node.attrs.get("alpha", 1.0)) / float(node.attrs.get("beta", 1.0))


def _matmul_bias(node: gs.Node):
    shape = node.inputs[1].shape
    return added_after(node, shape[-1] if shape else None)


def _gemm_contribution(node: gs.Node, values, axis: int, means):
    delta = matrix_contribution(values, axis, means)
    if delta is not None:
        delta *= _gemm_scale(node)
    return delta


def _gemm_shift(node: gs.Node, weight, shift):
    return per_output(weight, shift) * float(node.attrs.get("alpha", 1.0)) / float(
        node.attrs.get("beta", 1.0))


def rank_problem(shape: tuple[int, ...]) -> str | None:
    """Why a matrix product's effective weight is not supported (not 2-D)."""
    return f"weight of rank {len(shape)} (2-D weights supported)" if len(shape) != 2 else None


def rows_of(shape: tuple[int, ...], axis: int) -> int:
    """Outputs of a 2-D weight grouped (reduced) along `axis`."""
    return shape[1 - axis]


def _left_operand(layer, gram: bool) -> str | None:
    return "weight is the left operand" if layer.input_index != 1 else None


def _matmul_rows(layer, value, seed: int):
    return value.reshape(-1, value.shape[-1])


def _gemm_rows(layer, value, seed: int):
    return value.T if layer.attrs.get("transA", 0) else value


def _gemm_operands(attrs: dict) -> list[tuple[int, int]]:
    return [(1, 1 if attrs.get("transB", 0) else 0), (0, 0 if attrs.get("transA", 0) else 1)]


def _input_key(layer) -> tuple:
    return layer.activation, layer.op, layer.attrs.get("transA", 0)


def _matmul_refittable(node: gs.Node, weight: gs.Constant) -> bool:
    return reads_at(node, 1, weight) and len(weight.shape) == 2


def _matmul_contribution(node: gs.Node, values, axis: int, means):
    return matrix_contribution(values, axis, means)


def _matmul_shift(node: gs.Node, weight, shift):
    return per_output(weight, shift)


register("MatMul", rule=MatMul(), compute=True, macs=_macs, products=True,
         sink=Sink(_matmul_bias, _matmul_contribution, _matmul_refittable, _matmul_shift),
         timed=weight_input(1),
         sparse=SparseLayer(lambda attrs: [(1, 0), (0, 1)], rank_problem, rows_of,
                            _matmul_rows, _left_operand, _input_key))
register("Gemm", rule=Gemm(), compute=True, macs=_macs, products=True,
         sink=Sink(own_bias, _gemm_contribution, lambda node, weight: reads_at(node, 1, weight),
                   _gemm_shift),
         timed=weight_input(1),
         sparse=SparseLayer(_gemm_operands, rank_problem, rows_of, _gemm_rows, _left_operand,
                            _input_key))
