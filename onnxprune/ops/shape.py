"""Ops that read only a tensor's shape. Shape passes when the size of the pruned
axis is never used as a value: every consumer gathers or slices other entries, or
the entry only rebuilds Reshape/Expand targets, whose entries for pruned axes are
rewritten. Size always counts the pruned indices and blocks."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Slot
from .registry import register
from .rule import Rule, const_input

# Nodes a shape value passes (Gather, Unsqueeze, Concat, Cast, arithmetic) before it
# becomes a Reshape or Expand target or a Slice bound.
SHAPE_VALUE_DEPTH = 12


class ShapeOnly(Rule):
    """Pass when no consumer of the shape reads the pruned axis's entry."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        rank = view.rank(slot.tensor)
        if rank is None:
            edges.block(slot, f"Shape {node.name}: rank unknown")
            return
        start = int(node.attrs.get("start", 0)) % (rank + 1) if "start" in node.attrs else 0
        end = int(node.attrs.get("end", rank))
        end = end % (rank + 1) if end < 0 else min(end, rank)
        if not start <= slot.axis < end:
            return
        entry = slot.axis - start
        for consumer in node.outputs[0].outputs:
            if _reads_entry(consumer, entry, end - start, view, slot.tensor):
                edges.block(slot, f"Shape {node.name}: the size of axis {slot.axis} is used "
                                  f"as a value by {consumer.op} {consumer.name}")
                return


def _reads_entry(consumer: gs.Node, entry: int, length: int, view: GraphView,
                 source: str) -> bool:
    """Whether a consumer of a shape vector can see the given entry as a value (an
    entry that only rebuilds Reshape or Expand targets, or bounds of Slices of the
    tensor it measures, is rewritten with them)."""
    if consumer.op == "Gather" and int(consumer.attrs.get("axis", 0)) == 0:
        indices = const_input(consumer, 1, view)
        if indices is None:
            return True
        picked = entry in (np.asarray(indices) % length).reshape(-1)
        return picked and not (np.size(indices) == 1 and _only_builds_targets(
            consumer.outputs[0], view, SHAPE_VALUE_DEPTH, source))
    if consumer.op == "Slice":
        starts, ends = const_input(consumer, 1, view), const_input(consumer, 2, view)
        steps = const_input(consumer, 4, view)
        if starts is None or ends is None or (steps is not None and int(steps[0]) != 1):
            return True
        first, stop, _ = slice(int(starts[0]), int(ends[0]), 1).indices(length)
        return first <= entry < stop
    return True


def _only_builds_targets(value: gs.Tensor, view: GraphView, depth: int, source: str) -> bool:
    """Whether a shape value flows only into the shape inputs of Reshape and Expand
    (whose entries for pruned axes are rewritten, or follow the run-time shapes; the
    pruned model is verified against the masked reference either way), or into the
    bounds of Slices of `source` (stored as constants when `source` is pruned)."""
    if depth == 0 or not value.outputs or value.name in view.output_names:
        return False
    for node in value.outputs:
        if node.op in ("Reshape", "Expand") and node.inputs[1].name == value.name:
            continue
        if node.op == "Slice" and node.inputs[0].name == source and value.name in (
                node.inputs[1].name, node.inputs[2].name):
            continue
        if not node.outputs or not all(
                _only_builds_targets(out, view, depth - 1, source) for out in node.outputs):
            return False
    return True


class Size(Rule):
    """The element count is a value that pruning any axis changes: block."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        edges.block(slot, f"Size {node.name}: its value counts the indices of this axis")


register("Shape", rule=ShapeOnly())
register("Size", rule=Size())
