"""MatMul and Gemm. A constant B produces channels on its N axis and absorbs
them on its K axis; between two activations (attention) K couples both operands
and batch axes are coupled under broadcasting."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..core import Edges, GraphView, Role, Slot
from .base import Rule, register


def _role(view: GraphView, name: str, absorbs: bool) -> Role:
    if not view.is_weight(name):
        return Role.ACT
    return Role.IN if absorbs else Role.OUT


@register("MatMul")
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


@register("Gemm")
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
