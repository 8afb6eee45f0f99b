"""Reductions and softmax. Reducing or normalizing over an axis mixes its
indices, so a group on that axis is blocked; other axes pass through (renumbered
when the reduced axes are dropped)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import register
from .rule import Change, Rule, const_input, set_const_input

REDUCE = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1",
          "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
# Statistics that a decomposed normalization takes over the axis it normalizes.
STATISTICS = {"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2"}


class Reduce(Rule):
    """Reduced axes block; kept axes map to their (renumbered) output axes."""

    def _reduced(self, node: gs.Node, rank: int, view: GraphView) -> set[int] | None:
        if node.op in ("ArgMax", "ArgMin"):
            return {int(node.attrs.get("axis", 0)) % rank}
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1].name:
            axes = const_input(node, 1, view)
            if axes is None:
                return None
        if axes is None or len(axes) == 0:
            return set() if node.attrs.get("noop_with_empty_axes", 0) else set(range(rank))
        return {int(a) % rank for a in axes}

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        rank = view.rank(x)
        reduced = self._reduced(node, rank, view) if rank is not None else None
        if slot.tensor not in (x, y) or reduced is None:
            edges.block(slot, f"{node.op} {node.name}: reduced axes unknown")
            return
        keep = int(node.attrs.get("keepdims", 1))
        kept = [k for k in range(rank) if keep or k not in reduced]
        for out_axis, in_axis in enumerate(kept):
            if in_axis in reduced:
                continue
            if slot == Slot(x, in_axis):
                edges.same(slot, Slot(y, out_axis), Role.ACT)
                return
            if slot == Slot(y, out_axis):
                edges.same(slot, Slot(x, in_axis), Role.ACT)
                return
        if node.op in STATISTICS and slot.tensor == x:
            edges.mix(slot, f"{node.op} {node.name} takes a statistic over this axis")
            return
        edges.block(slot, f"{node.op} {node.name} reduces over this axis (channel-mixing)")

    def rewrite(self, node: gs.Node, change: Change) -> None:
        """A sum turned into a mean by a constant (×1/n or ÷n, as exporters fold a
        decomposed LayerNorm) counts the kept indices."""
        x = node.inputs[0].name
        rank = change.view.rank(x)
        reduced = self._reduced(node, rank, change.view) if rank is not None else None
        if node.op not in ("ReduceSum", "ReduceSumSquare") or not reduced:
            return
        sizes = [change.view.dim(Slot(x, k)) for k in reduced]
        if None in sizes or not any(len(change.removed(x, k)) for k in reduced):
            return
        before = int(np.prod(sizes))
        after = int(np.prod([change.kept(x, k) for k in reduced]))
        for consumer in node.outputs[0].outputs:
            _recount(consumer, node.outputs[0].name, before, after, change.view)


def _recount(node: gs.Node, total: str, before: int, after: int, view: GraphView) -> None:
    """Replace a scalar constant 1/before (Mul) or before (Div) by the kept count."""
    if node.op not in ("Mul", "Div") or len(node.inputs) != 2:
        return
    index = 1 if node.inputs[0].name == total else 0
    value = const_input(node, index, view)
    if value is None or value.size != 1 or (node.op == "Div" and index == 0):
        return
    want = 1.0 / before if node.op == "Mul" else float(before)
    if np.isclose(float(value.reshape(-1)[0]), want, rtol=1e-6):
        new = 1.0 / after if node.op == "Mul" else float(after)
        set_const_input(node, index, np.full(value.shape, new, value.dtype))


class Softmax(Rule):
    """The softmax axis (and, before opset 13, every axis after it) is mixed."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        rank = view.rank(x)
        if rank is None or slot.tensor not in (x, y):
            edges.block(slot, f"{node.op} {node.name}: rank unknown")
            return
        default = -1 if view.graph.opset >= 13 else 1
        axis = int(node.attrs.get("axis", default)) % rank
        mixed = {axis} if view.graph.opset >= 13 else set(range(axis, rank))
        if slot.axis in mixed:
            edges.block(slot, f"{node.op} {node.name} normalizes over this axis "
                              "(channel-mixing)")
            return
        edges.same(slot, Slot(y if slot.tensor == x else x, slot.axis), Role.ACT)


register(*REDUCE, "ArgMax", "ArgMin", rule=Reduce())
register("Softmax", "LogSoftmax", "Hardmax", rule=Softmax())
