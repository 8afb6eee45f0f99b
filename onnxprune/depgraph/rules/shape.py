"""Ops that move axes around: Reshape and Flatten (axes merge and split, see
`regroup`), Transpose (a permutation), Squeeze/Unsqueeze (renumbering), Expand and
Tile. A channel shuffle (Reshape, Transpose, Reshape) is a permutation of channels
that these rules compose: a unit is one index of the factor that stays outermost
when the factors are merged again, and the Reshape targets get the kept sizes.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..core import Edges, GraphView, Role, Slot
from .axes import kept_pairs
from .base import Change, Rule, const_input, register
from .regroup import link_regrouped, permutes_within
from .target import own_target, reads_pruned_size, set_target_entry, target_piece


@register("Flatten")
class Flatten(Rule):
    """[d0 … dk−1, dk … dn] → [∏ d0…dk−1, ∏ dk…dn]: the leading axis of each part maps
    to blocks."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        link_regrouped(node, slot, view, edges)


@register("Reshape")
class Reshape(Rule):
    """Axes are followed by aligning the input and output shapes. The target entry
    of a pruned axis is rewritten: a constant gets the kept size; a one-element piece
    computed at run time (a Concat of Shape/Gather pieces) becomes -1 when no other
    entry is -1."""

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
                    reads_pruned_size(piece[0].inputs[piece[1]], change, depth=8):
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


@register("Transpose")
class Transpose(Rule):
    """Output axis k is input axis perm[k]. Axes taken as one (the factors of a
    channel shuffle) are moved among themselves: their flat index maps through the
    permutation, and once indices are removed the Transpose becomes a Gather of the
    kept indices (the Reshape before it puts them all on the last of those axes)."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        rank = view.rank(x)
        if rank is None:
            edges.block(slot, f"Transpose {node.name}: rank unknown")
            return
        perm = list(node.attrs.get("perm", range(rank - 1, -1, -1)))
        if slot.span > 1:
            _link_permuted(node, slot, view, edges)
        elif slot.tensor == x:
            edges.same(slot, Slot(y, perm.index(slot.axis)), Role.ACT)
        else:
            edges.same(slot, Slot(x, perm[slot.axis]), Role.ACT)

    def rewrite(self, node: gs.Node, change: Change) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        for slot, removed in change.spans(x):
            order = _flat_order(node, slot, change.view)
            out_removed = change.removed_slot(Slot(y, slot.axis, slot.span))
            kept_in = np.setdiff1d(np.arange(order.size), removed)
            kept_out = np.setdiff1d(np.arange(order.size), out_removed)
            node.op = "Gather"
            node.attrs.clear()
            node.attrs["axis"] = slot.axis + slot.span - 1
            node.inputs.append(gs.Constant(f"{node.name}__kept", np.searchsorted(
                kept_in, order[kept_out]).astype(np.int64)))


def _link_permuted(node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
    x, y = node.inputs[0].name, node.outputs[0].name
    source = Slot(x, slot.axis, slot.span)
    order = _flat_order(node, source, view) if permutes_within(node, source, view) else None
    if order is None:
        edges.block(slot, f"Transpose {node.name}: axes {slot} are not moved among themselves")
        return
    target = Slot(y, slot.axis, slot.span)
    if slot.tensor == x:
        edges.map(source, target, order, np.arange(order.size), Role.ACT)
    else:
        edges.map(target, source, np.arange(order.size), order, Role.ACT)


def _flat_order(node: gs.Node, slot: Slot, view: GraphView) -> np.ndarray | None:
    """For each flat position of the output's axes, the input's flat index there."""
    shape = view.shape(slot.tensor)
    dims = None if shape is None else shape[slot.axis:slot.axis + slot.span]
    if dims is None or not all(isinstance(d, int) for d in dims):
        return None
    perm = list(node.attrs.get("perm", range(len(shape) - 1, -1, -1)))
    order = [perm[k] - slot.axis for k in range(slot.axis, slot.axis + slot.span)]
    return np.arange(int(np.prod(dims))).reshape(dims).transpose(order).reshape(-1)


@register("Squeeze", "Unsqueeze")
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


@register("Expand", "Tile")
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
