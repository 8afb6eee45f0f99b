"""Expand and Tile: axes that are not expanded or repeated pass through."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import register
from .rule import Change, Rule, const_input
from .target import own_target, set_target_entry, target_piece


class Broadcast(Rule):
    """Axes that are not expanded or repeated pass through. Expand's target entry for
    a pruned axis becomes 1 (broadcasting keeps the input's size) when the target is a
    constant or a Concat of pieces; a target computed otherwise at run time is left to
    follow the pruned shapes."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        rank_x, rank_y = view.rank(x), view.rank(y)
        if slot.tensor not in (x, y) or rank_x is None or rank_y is None:
            edges.block(slot, f"{node.op} {node.name}: ranks unknown")
            return
        shift = rank_y - rank_x
        x_axis = slot.axis if slot.tensor == x else slot.axis - shift
        y_axis = x_axis + shift
        if x_axis < 0 or view.dim(Slot(x, x_axis)) != view.dim(Slot(y, y_axis)) or \
                not self._rewritable(node, y_axis, view):
            edges.block(slot, f"{node.op} {node.name} expands or repeats axis {y_axis}")
            return
        other = Slot(y, y_axis) if slot.tensor == x else Slot(x, x_axis)
        edges.same(slot, other, Role.ACT)

    def _rewritable(self, node: gs.Node, y_axis: int, view: GraphView) -> bool:
        if node.op == "Tile":
            values = const_input(node, 1, view)
            return values is not None and int(values[y_axis]) == 1
        entry = _expand_entry(node, y_axis, view)
        return entry is None or not view.is_const(node.inputs[1].name) or \
            target_piece(node, entry, view, free_needed=False) is not None

    def rewrite(self, node: gs.Node, change: Change) -> None:
        if node.op != "Expand":
            return
        y = node.outputs[0].name
        entries = [_expand_entry(node, axis, change.view) for axis in range(change.view.rank(y))]
        own_target(node, change)
        for axis, entry in enumerate(entries):
            piece = None if entry is None or not len(change.removed(y, axis)) else \
                target_piece(node, entry, change.view, False)
            if piece is not None:  # otherwise the target follows run-time shapes
                set_target_entry(piece, 1)


def _expand_entry(node: gs.Node, y_axis: int, view: GraphView) -> int | None:
    """Index of Expand's target entry for an output axis (None: the target is shorter)."""
    length = view.dim(Slot(node.inputs[1].name, 0))
    if length is None:
        return y_axis
    entry = y_axis - (view.rank(node.outputs[0].name) - length)
    return entry if entry >= 0 else None


register("Expand", "Tile", rule=Broadcast())
