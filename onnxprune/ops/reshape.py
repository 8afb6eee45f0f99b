"""Reshape and Flatten: axes merge and split without moving elements (see `regroup`
for how an axis is followed across them). A channel shuffle (Reshape, Transpose,
Reshape) is a permutation of channels that these rules and Transpose's compose: a unit
is one index of the factor that stays outermost when the factors are merged again, and
the Reshape targets get the kept sizes.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Slot
from .registry import register
from .regroup import link_regrouped
from .rule import Change, Rule
from .target import (
    SHAPE_ARITHMETIC_DEPTH,
    own_target,
    reads_pruned_size,
    set_target_entry,
    target_piece,
)


class Flatten(Rule):
    """[d0 … dk−1, dk … dn] → [∏ d0…dk−1, ∏ dk…dn]: the leading axis of each part maps
    to blocks."""

    spans = True

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        link_regrouped(node, slot, view, edges)


class Reshape(Rule):
    """Axes are followed by aligning the input and output shapes. The target entry
    of a pruned axis is rewritten: a constant gets the kept size; a one-element piece
    computed at run time (a Concat of Shape/Gather pieces) becomes -1 when no other
    entry is -1."""

    spans = True

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        link_regrouped(node, slot, view, edges)
        _check_targets(node, slot, edges, view)
        for choice in edges.choices:
            for option, option_edges in choice.options:
                _check_targets(node, option, option_edges, view)

    def rewrite(self, node: gs.Node, change: Change) -> None:
        y = node.outputs[0].name
        own_target(node, change)
        for axis in range(change.view.rank(y) or 0):
            pruned = len(change.removed(y, axis)) > 0
            static = change.view.static_dim(Slot(y, axis))
            piece = target_piece(node, axis, change.view, free_needed=pruned)
            if piece is None:
                continue
            if pruned and (piece[2] is None or piece[2] > 0):
                set_target_entry(piece, -1 if piece[2] is None else change.kept(y, axis))
            elif not pruned and piece[2] is None and static is not None and \
                    reads_pruned_size(piece[0].inputs[piece[1]], change,
                                      depth=SHAPE_ARITHMETIC_DEPTH):
                set_target_entry(piece, static)
        for slot, removed in change.spans(y):  # pruned as one axis: see Transpose
            kept = change.view.dim(slot) - len(removed)
            last = slot.axis + slot.span - 1
            for axis in range(slot.axis, last + 1):
                piece = target_piece(node, axis, change.view, free_needed=False)
                set_target_entry(piece, kept if axis == last else 1)


def _check_targets(node: gs.Node, slot: Slot, edges: Edges, view: GraphView) -> None:
    """Block `slot` when a linked output axis has no rewritable target entry."""
    y = node.outputs[0].name
    for link in edges.links:
        for end in (link.a, link.b):
            axes = range(end.axis, end.axis + end.span) if end.tensor == y else ()
            if any(target_piece(node, axis, view, free_needed=end.span == 1) is None
                   for axis in axes):
                edges.block(slot, f"Reshape {node.name}: target shape entry for axis "
                                  f"{end.axis} is computed at run time")


register("Flatten", rule=Flatten())
register("Reshape", rule=Reshape())
