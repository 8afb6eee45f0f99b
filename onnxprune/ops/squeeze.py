"""Squeeze and Unsqueeze: data axes keep their order and are renumbered as size-1
axes come and go."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import register
from .rule import Rule, const_input


class AxesRenumbering(Rule):
    """Squeeze and Unsqueeze: data axes keep their order, size-1 axes come and go."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        pairs = kept_pairs(node, view) if slot.tensor in (x, y) else None
        if pairs is None:
            edges.block(slot, f"{node.op} {node.name}: axes unknown")
            return
        for a, b in pairs:
            if slot.tensor == x and a == slot.axis:
                edges.same(slot, Slot(y, b), Role.ACT)
            elif slot.tensor == y and b == slot.axis:
                edges.same(slot, Slot(x, a), Role.ACT)


def squeeze_axes(node: gs.Node, view: GraphView) -> list[int] | None:
    """The axes attribute or constant axes input of Squeeze/Unsqueeze."""
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    axes = const_input(node, 1, view)
    return None if axes is None else [int(a) for a in axes]


def kept_pairs(node: gs.Node, view: GraphView) -> list[tuple[int, int]] | None:
    """(input axis, output axis) of the data axes of a Squeeze or Unsqueeze."""
    axes = squeeze_axes(node, view)
    if node.op == "Squeeze":
        shape = view.shape(node.inputs[0].name)
        if shape is None:
            return None
        rank = len(shape)
        gone = {k for k, d in enumerate(shape) if d == 1} if axes is None else {
            a % rank for a in axes}
        kept = [k for k in range(rank) if k not in gone]
        return list(zip(kept, range(len(kept)), strict=True))
    rank_out = view.rank(node.outputs[0].name)
    if rank_out is None or axes is None:
        return None
    new = {a % rank_out for a in axes}
    kept = [k for k in range(rank_out) if k not in new]
    return list(zip(range(len(kept)), kept, strict=True))


register("Squeeze", "Unsqueeze", rule=AxesRenumbering())
