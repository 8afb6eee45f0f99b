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
from .base import Change, Rule, const_input, register, set_const_input
from .regroup import link_regrouped


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
            piece = _target_piece(node, axis, change.view, free_needed=pruned)
            if piece is None:
                continue
            if pruned and (piece[2] is None or piece[2] > 0):
                _set_target_entry(piece, -1 if piece[2] is None else change.kept(y, axis))
            elif not pruned and piece[2] is None and static is not None and \
                    _reads_pruned_size(piece[0].inputs[piece[1]], change, depth=8):
                _set_target_entry(piece, static)


def _check_targets(node: gs.Node, slot: Slot, edges: Edges, view: GraphView) -> None:
    """Block `slot` when a linked output axis has no rewritable target entry."""
    y = node.outputs[0].name
    for link in edges.links:
        for end in (link.a, link.b):
            if end.tensor == y and _target_piece(node, end.axis, view) is None:
                edges.block(slot, f"Reshape {node.name}: target shape entry for axis "
                                  f"{end.axis} is computed at run time")


def _target_piece(node: gs.Node, entry: int, view: GraphView, free_needed: bool = True):
    """(node, input index, value, offset) of what holds entry `entry` of the node's
    shape input (input 1): a constant (value known) or a one-element piece computed at
    run time (value None; usable when `free_needed` is off or no entry is -1)."""
    target = node.inputs[1]
    if isinstance(target, gs.Constant):
        return node, 1, int(np.asarray(target.values).reshape(-1)[entry]), entry
    return _concat_piece(target, entry, view, free_needed, depth=3)


def _concat_piece(target: gs.Tensor, entry: int, view: GraphView, free_needed: bool,
                  depth: int):
    """The piece of a (possibly nested) shape-building Concat that holds an entry."""
    producer = target.inputs[0] if target.inputs else None
    if producer is not None and producer.op == "Cast" and depth > 0:
        return _concat_piece(producer.inputs[0], entry, view, free_needed, depth - 1)
    if producer is None or producer.op != "Concat" or depth == 0:
        return None
    pieces = _concat_pieces(producer, view)
    if pieces is None:
        return None
    for index, (start, size, piece) in enumerate(pieces):
        if not start <= entry < start + size:
            continue
        if isinstance(piece, gs.Constant):
            return producer, index, int(np.asarray(piece.values).reshape(-1)[entry - start]), \
                entry - start
        if size > 1:
            return _concat_piece(piece, entry - start, view, free_needed, depth - 1)
        free = not any(isinstance(p, gs.Constant) and -1 in np.asarray(p.values)
                       for _, _, p in pieces)
        return (producer, index, None, 0) if free or not free_needed else None
    return None


def own_target(node: gs.Node, change: Change) -> None:
    """Give a node its own copy of a shape computation (Concat, seen through Cast) that
    other nodes share, so that rewriting an entry for it leaves theirs alone."""
    chain, tensor = [], node.inputs[1]
    while tensor.inputs and tensor.inputs[0].op in ("Cast", "Concat") and len(chain) < 3:
        chain.append(tensor.inputs[0])
        if chain[-1].op == "Concat":
            break
        tensor = chain[-1].inputs[0]
    tensors = [node.inputs[1]] + [n.inputs[0] for n in chain if n.op == "Cast"]
    if not chain or chain[-1].op != "Concat" or all(len(t.outputs) == 1 for t in tensors):
        return
    source = None
    for producer in reversed(chain):
        old = producer.outputs[0]
        inputs = list(producer.inputs) if source is None else [source]
        source = gs.Variable(f"{old.name}__{node.name}", dtype=old.dtype)
        change.add_node(gs.Node(producer.op, f"{producer.name}__{node.name}",
                                dict(producer.attrs), inputs, [source]))
    node.inputs[1] = source


def _set_target_entry(piece, value: int) -> None:
    """Write one entry of a shape input found by `_target_piece`."""
    owner, index, known, offset = piece
    if known is None:
        owner.inputs[index] = gs.Constant(f"{owner.name}__in{index}", np.array([value], np.int64))
        return
    values = np.asarray(owner.inputs[index].values).copy()
    values.reshape(-1)[offset] = value
    set_const_input(owner, index, values)


def _reads_pruned_size(value: gs.Tensor, change: Change, depth: int) -> bool:
    """Whether a shape value is computed from the size of an axis that loses indices
    (such a piece of an unpruned axis is replaced by its static size)."""
    producer = value.inputs[0] if value.inputs else None
    if producer is None or depth == 0:
        return False
    if producer.op == "Shape":
        return _pruned_entries(producer, range(change.view.rank(producer.inputs[0].name) or 0),
                               change)
    if producer.op == "Gather" and producer.inputs[0].inputs and \
            producer.inputs[0].inputs[0].op == "Shape":
        indices = const_input(producer, 1, change.view)
        entries = range(0) if indices is None else np.asarray(indices).reshape(-1)
        return indices is None or _pruned_entries(producer.inputs[0].inputs[0], entries, change)
    return any(_reads_pruned_size(t, change, depth - 1) for t in producer.inputs
               if not isinstance(t, gs.Constant))


def _pruned_entries(shape_node: gs.Node, entries, change: Change) -> bool:
    tensor = shape_node.inputs[0].name
    rank = change.view.rank(tensor) or 0
    start = int(shape_node.attrs.get("start", 0)) % (rank + 1) if rank else 0
    return any(len(change.removed(tensor, (start + int(e)) % max(rank, 1))) for e in entries)


def _concat_pieces(concat: gs.Node, view: GraphView):
    """(start, size, tensor) of each 1-D piece of a shape-building Concat."""
    pieces, start = [], 0
    for piece in concat.inputs:
        if isinstance(piece, gs.Constant):  # possibly one a rewrite just made
            size = int(np.asarray(piece.values).size) if np.ndim(piece.values) == 1 else None
        else:
            shape = view.shape(piece.name)
            size = shape[0] if shape is not None and len(shape) == 1 and isinstance(
                shape[0], int) else None
        if size is None:
            return None
        pieces.append((start, size, piece))
        start += size
    return pieces


@register("Transpose")
class Transpose(Rule):
    """Output axis k is input axis perm[k]."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        rank = view.rank(x)
        if rank is None:
            edges.block(slot, f"Transpose {node.name}: rank unknown")
            return
        perm = list(node.attrs.get("perm", range(rank - 1, -1, -1)))
        if slot.tensor == x:
            edges.same(slot, Slot(y, perm.index(slot.axis)), Role.ACT)
        else:
            edges.same(slot, Slot(x, perm[slot.axis]), Role.ACT)


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
            _target_piece(node, entry, view, free_needed=False) is not None

    def rewrite(self, node: gs.Node, change: Change) -> None:
        if node.op != "Expand":
            return
        y = node.outputs[0].name
        entries = [_expand_entry(node, axis, change.view) for axis in range(change.view.rank(y))]
        own_target(node, change)
        for axis, entry in enumerate(entries):
            piece = None if entry is None or not len(change.removed(y, axis)) else \
                _target_piece(node, entry, change.view, False)
            if piece is not None:  # otherwise the target follows run-time shapes
                _set_target_entry(piece, 1)


def _expand_entry(node: gs.Node, y_axis: int, view: GraphView) -> int | None:
    """Index of Expand's target entry for an output axis (None: the target is shorter)."""
    length = view.dim(Slot(node.inputs[1].name, 0))
    if length is None:
        return y_axis
    entry = y_axis - (view.rank(node.outputs[0].name) - length)
    return entry if entry >= 0 else None
