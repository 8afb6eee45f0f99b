"""Entries of the shape input of Reshape and Expand: a constant vector, or a Concat
(possibly behind Cast) of pieces, some computed at run time from Shape."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import GraphView
from .rule import Change, const_input, set_const_input

# Casts and nested Concats between a Reshape or Expand and the pieces of its target.
TARGET_NESTING = 3
# Nodes of shape arithmetic (Gather, Unsqueeze, Mul...) between a Shape and a target piece.
SHAPE_ARITHMETIC_DEPTH = 8

# Where one entry of a shape input lives: (node, input index, value or None, offset).
Piece = tuple[gs.Node, int, int | None, int]


def target_piece(node: gs.Node, entry: int, view: GraphView, free_needed: bool = True
                 ) -> Piece | None:
    """(node, input index, value, offset) of what holds entry `entry` of the node's
    shape input (input 1): a constant (value known) or a one-element piece computed at
    run time (value None; usable when `free_needed` is off or no entry is -1)."""
    target = node.inputs[1]
    if isinstance(target, gs.Constant):
        return node, 1, int(np.asarray(target.values).reshape(-1)[entry]), entry
    return _concat_piece(target, entry, view, free_needed, depth=TARGET_NESTING)


def _concat_piece(target: gs.Tensor, entry: int, view: GraphView, free_needed: bool,
                  depth: int) -> Piece | None:
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
    while tensor.inputs and tensor.inputs[0].op in ("Cast", "Concat") and \
            len(chain) < TARGET_NESTING:
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


def set_target_entry(piece: Piece, value: int) -> None:
    """Write one entry of a shape input found by `target_piece`."""
    owner, index, known, offset = piece
    if known is None:
        owner.inputs[index] = gs.Constant(f"{owner.name}__in{index}", np.array([value], np.int64))
        return
    values = np.asarray(owner.inputs[index].values).copy()
    values.reshape(-1)[offset] = value
    set_const_input(owner, index, values)


def reads_pruned_size(value: gs.Tensor, change: Change, depth: int) -> bool:
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
    return any(reads_pruned_size(t, change, depth - 1) for t in producer.inputs
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
