"""Ops that move axes around: Reshape and Flatten (axes merge and split),
Transpose (a permutation), Squeeze/Unsqueeze (renumbering), Expand and Tile.

A merge of axes [C, H, W] into one axis maps channel c to the block
c·H·W … (c+1)·H·W − 1. A split of one axis into [H, D] maps index i to i // D on
the outer axis, so indices go in blocks of D (attention heads). An axis that
becomes an inner factor (channel shuffle) is blocked.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from ..core import Edges, GraphView, Role, Slot
from .base import Change, Rule, const_input, register, set_const_input
from .concat_split import slice_window

Groups = list[tuple[list[int], list[int]]]


def align(a, b) -> Groups:
    """Pair runs of axes with equal products, from the front and then the back."""
    front = _align_prefix(a, b)
    used_a = {k for group, _ in front for k in group}
    back = _align_prefix(a[::-1], b[::-1])
    flip_a, flip_b = len(a) - 1, len(b) - 1
    for group_a, group_b in back:
        mirrored = ([flip_a - k for k in group_a][::-1], [flip_b - k for k in group_b][::-1])
        if not used_a.intersection(mirrored[0]):
            front.append(mirrored)
    return front


def _align_prefix(a, b) -> Groups:
    """Runs from the front. Two run-time sizes are paired as equal only when the rest
    aligns too: a failure after such a pair (N against N·H) drops it and what follows."""
    groups: Groups = []
    first_guess = None
    i = j = 0
    while i < len(a) and j < len(b):
        if not isinstance(a[i], int) or not isinstance(b[j], int):
            if isinstance(a[i], int) or isinstance(b[j], int):
                break
            first_guess = len(groups) if first_guess is None else first_guess
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        run = _equal_product_run(a, b, i, j)
        if run is None:
            break
        groups.append(run)
        i, j = i + len(run[0]), j + len(run[1])
    if (i < len(a) or j < len(b)) and first_guess is not None:
        return groups[:first_guess]
    tail_a, tail_b = list(range(i, len(a))), list(range(j, len(b)))
    if groups and all(a[k] == 1 for k in tail_a) and all(b[k] == 1 for k in tail_b):
        groups[-1][0].extend(tail_a)
        groups[-1][1].extend(tail_b)
    return groups


def _equal_product_run(a, b, i, j):
    group_a, group_b, prod_a, prod_b = [i], [j], a[i], b[j]
    i, j = i + 1, j + 1
    while prod_a != prod_b:
        if prod_a < prod_b:
            if i >= len(a) or not isinstance(a[i], int):
                return None
            group_a.append(i)
            prod_a, i = prod_a * a[i], i + 1
        else:
            if j >= len(b) or not isinstance(b[j], int):
                return None
            group_b.append(j)
            prod_b, j = prod_b * b[j], j + 1
    return group_a, group_b


def link_regrouped(node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
    """Couple a slot across an op whose input and output hold the same elements."""
    x, y = node.inputs[0].name, node.outputs[0].name
    if slot.tensor not in (x, y):
        edges.block(slot, f"{node.op} {node.name}: shape input is not data")
        return
    here, there = (x, y) if slot.tensor == x else (y, x)
    here_shape, there_shape = view.shape(here), view.shape(there)
    if here_shape is None or there_shape is None:
        edges.block(slot, f"{node.op} {node.name}: shapes unknown")
        return
    match = _aligned(slot.axis, here_shape, there_shape)
    if not match:  # heads folded into the batch (N·H): align at batch 1
        here_shape, there_shape = view.batch_one_shape(here), view.batch_one_shape(there)
        match = _aligned(slot.axis, here_shape, there_shape)
    if not match:
        edges.block(slot, f"{node.op} {node.name}: cannot follow axis {slot.axis} through "
                          f"{list(here_shape)} -> {list(there_shape)}")
        return
    _link_group(node, slot, match[0], (here, here_shape), (there, there_shape),
                slot.tensor == x, view, edges)


def _aligned(axis: int, here_shape, there_shape) -> list:
    return [(gh, gt) for gh, gt in align(here_shape, there_shape) if axis in gh]


def _link_group(node, slot, group, here, there, forward, view, edges) -> None:
    """Link across one aligned run of axes: a single axis on one side, several on the
    other. On the multi-axis side only the primary axis (the outermost that is not a
    selector such as the q/k/v axis of a fused projection) carries the units."""
    (here_name, here_shape), (there_name, there_shape) = here, there
    mine = [k for k in group[0] if here_shape[k] != 1]
    theirs = [k for k in group[1] if there_shape[k] != 1]
    if len(mine) == 1 and len(theirs) == 1:
        edges.same(slot, Slot(there_name, theirs[0]), Role.ACT)
        return
    if len(mine) == 1 and theirs:  # my single axis is split on the other side
        primary = _primary(there_name, theirs, view)
        if primary is not None:
            dims = [there_shape[k] for k in theirs]
            flat = np.arange(math.prod(dims))
            coordinate = np.unravel_index(flat, dims)[theirs.index(primary)]
            edges.map(slot, Slot(there_name, primary), flat, coordinate, Role.ACT)
            if forward:
                edges.tag(Slot(there_name, primary), "split")
            return
    elif mine and len(theirs) == 1 and slot.axis == _primary(here_name, mine, view):
        dims = [here_shape[k] for k in mine]
        rows = np.moveaxis(np.arange(math.prod(dims)).reshape(dims), mine.index(slot.axis), 0)
        rows = rows.reshape(here_shape[slot.axis], -1)
        edges.map(slot, Slot(there_name, theirs[0]),
                  np.repeat(np.arange(rows.shape[0]), rows.shape[1]), rows.ravel(), Role.ACT)
        if not forward:
            edges.tag(slot, "split")
        return
    edges.block(slot, f"{node.op} {node.name}: axis {slot.axis} becomes an inner factor "
                      "of a regrouped axis (e.g. channel shuffle)")


def _primary(tensor: str, axes: list[int], view: GraphView) -> int | None:
    """The axis that carries units among axes split from (or merged into) one axis."""
    for axis in axes:
        if not _is_selector(tensor, axis, view, depth=4):
            return axis
    return None


def _is_selector(tensor: str, axis: int, view: GraphView, depth: int) -> bool:
    """Whether every use picks single indices of the axis (Gather of a scalar, Split
    into size-1 parts, a Slice one index wide), as with the q/k/v axis of a fused projection."""
    consumers = view.tensors[tensor].outputs if tensor in view.tensors else []
    if not consumers or depth == 0:
        return False
    for node in consumers:
        moved = _moved_axis(node, axis, view)
        if moved is not None:
            if not _is_selector(node.outputs[0].name, moved, view, depth - 1):
                return False
        elif not _picks_single(node, tensor, axis, view):
            return False
    return True


def _moved_axis(node: gs.Node, axis: int, view: GraphView) -> int | None:
    """Where a Transpose, Squeeze or Unsqueeze puts an input axis (None: other ops)."""
    if node.op == "Transpose":
        rank = view.rank(node.inputs[0].name) or 0
        return list(node.attrs.get("perm", range(rank - 1, -1, -1))).index(axis)
    if node.op in ("Squeeze", "Unsqueeze"):
        pairs = RENUMBERING[node.op]._kept_pairs(node, view) or []
        return next((b for a, b in pairs if a == axis), None)
    return None


def _picks_single(node: gs.Node, tensor: str, axis: int, view: GraphView) -> bool:
    rank = view.rank(tensor) or 0
    if node.op == "Gather" and node.inputs[0].name == tensor:
        indices = const_input(node, 1, view)
        return int(node.attrs.get("axis", 0)) % rank == axis and indices is not None \
            and indices.ndim == 0
    if node.op == "Split" and node.inputs[0].name == tensor:
        return int(node.attrs.get("axis", 0)) % rank == axis and all(
            view.dim(Slot(t.name, axis)) == 1 for t in node.outputs)
    if node.op == "Slice" and node.inputs[0].name == tensor:
        window = slice_window(node, axis, view)
        return bool(window) and window[1] - window[0] == 1
    return False


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
        y = node.outputs[0].name
        for link in edges.links:
            for end in (link.a, link.b):
                if end.tensor == y and _target_piece(node, end.axis, view) is None:
                    edges.block(slot, f"Reshape {node.name}: target shape entry for axis "
                                      f"{end.axis} is computed at run time")

    def rewrite(self, node: gs.Node, change: Change) -> None:
        y = node.outputs[0].name
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


class _AxesRenumbering(Rule):
    """Squeeze and Unsqueeze: data axes keep their order, size-1 axes come and go."""

    def _axes(self, node: gs.Node, view: GraphView) -> list[int] | None:
        if "axes" in node.attrs:
            return list(node.attrs["axes"])
        axes = const_input(node, 1, view)
        return None if axes is None else [int(a) for a in axes]

    def _kept_pairs(self, node: gs.Node, view: GraphView) -> list[tuple[int, int]] | None:
        raise NotImplementedError

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        pairs = self._kept_pairs(node, view) if slot.tensor in (x, y) else None
        if pairs is None:
            edges.block(slot, f"{node.op} {node.name}: axes unknown")
            return
        for a, b in pairs:
            if slot.tensor == x and a == slot.axis:
                edges.same(slot, Slot(y, b), Role.ACT)
            elif slot.tensor == y and b == slot.axis:
                edges.same(slot, Slot(x, a), Role.ACT)


@register("Squeeze")
class Squeeze(_AxesRenumbering):
    """Input axes not squeezed map in order to the output axes."""

    def _kept_pairs(self, node, view):
        shape = view.shape(node.inputs[0].name)
        if shape is None:
            return None
        axes = self._axes(node, view)
        rank = len(shape)
        gone = {k for k, d in enumerate(shape) if d == 1} if axes is None else {
            a % rank for a in axes}
        kept = [k for k in range(rank) if k not in gone]
        return list(zip(kept, range(len(kept)), strict=True))


@register("Unsqueeze")
class Unsqueeze(_AxesRenumbering):
    """Input axes map in order to the output axes that were not inserted."""

    def _kept_pairs(self, node, view):
        rank_out = view.rank(node.outputs[0].name)
        axes = self._axes(node, view)
        if rank_out is None or axes is None:
            return None
        new = {a % rank_out for a in axes}
        kept = [k for k in range(rank_out) if k not in new]
        return list(zip(range(len(kept)), kept, strict=True))


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
        for axis in range(change.view.rank(y)):
            entry = _expand_entry(node, axis, change.view)
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


RENUMBERING = {"Squeeze": Squeeze(), "Unsqueeze": Unsqueeze()}
