"""Ops that read only a tensor's shape: they follow whatever size it has at run
time and neither couple nor block channels."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..core import Edges, GraphView, Slot
from .base import Rule, register


@register("Shape")
class ShapeOnly(Rule):
    """Nothing to couple: the result is computed from the pruned shape at run time."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        return


@register("Size")
class Size(Rule):
    """The element count is a value that pruning any axis changes: block."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        edges.block(slot, f"Size {node.name}: its value counts the indices of this axis")
