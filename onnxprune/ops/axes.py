"""Following one axis of a tensor forward through the ops that only move axes
(Transpose, Squeeze, Unsqueeze, element-wise unary ops): which axis of a factor
run carries units when a Reshape splits or merges axes."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import GraphView, Slot
from .concat_split import slice_window
from .rule import const_input
from .squeeze import kept_pairs

# Ops between a Reshape and the op that uses one of its axes, followed up to this many:
# exporters put one or two Transposes, Squeezes or activations there.
AXIS_MOVES = 4
# Unary ops that leave every axis where it is (the elementwise family registers them).
PASS_THROUGH = ("Relu", "Sigmoid", "Tanh", "Identity", "Cast", "Clip", "LeakyRelu", "HardSwish",
                "HardSigmoid", "Gelu", "Erf", "Neg", "Abs", "Dropout")


def moved_axis(node: gs.Node, axis: int, view: GraphView) -> int | None:
    """Where a Transpose, Squeeze, Unsqueeze or unary op puts an input axis (None: other
    ops, or the axis is dropped)."""
    if node.op == "Transpose":
        rank = view.rank(node.inputs[0].name) or 0
        return list(node.attrs.get("perm", range(rank - 1, -1, -1))).index(axis)
    if node.op in ("Squeeze", "Unsqueeze"):
        pairs = kept_pairs(node, view) or []
        return next((b for a, b in pairs if a == axis), None)
    if node.op in PASS_THROUGH:
        return axis
    return None


def is_selector(tensor: str, axis: int, view: GraphView, depth: int = AXIS_MOVES) -> bool:
    """Whether every use picks single indices of the axis (Gather of a scalar, Split
    into size-1 parts, a Slice one index wide), as with the q/k/v axis of a fused projection."""
    consumers = view.tensors[tensor].outputs if tensor in view.tensors else []
    if not consumers or depth == 0:
        return False
    for node in consumers:
        moved = moved_axis(node, axis, view) if node.op not in PASS_THROUGH else None
        if moved is not None:
            if not is_selector(node.outputs[0].name, moved, view, depth - 1):
                return False
        elif not _picks_single(node, tensor, axis, view):
            return False
    return True


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


def remerged_inner(tensor: str, axis: int, view: GraphView, depth: int = AXIS_MOVES) -> bool:
    """Whether the axis, followed through ops that only move axes, is merged (on some
    path) by a Reshape or Flatten as an inner factor under another factor of size > 1,
    as the group axis of a channel shuffle is after its Transpose."""
    consumers = view.tensors[tensor].outputs if tensor in view.tensors and depth else []
    for node in consumers:
        if node.op in ("Reshape", "Flatten") and node.inputs[0].name == tensor:
            if _outer_factor_above(node, axis, view):
                return True
            continue
        moved = moved_axis(node, axis, view)
        if moved is not None and remerged_inner(node.outputs[0].name, moved, view, depth - 1):
            return True
    return False


def _outer_factor_above(node: gs.Node, axis: int, view: GraphView) -> bool:
    shape, out = view.shape(node.inputs[0].name), view.shape(node.outputs[0].name)
    if shape is None or out is None or not all(isinstance(d, int) for d in shape[axis:]):
        return False
    lo = int(np.prod(shape[axis + 1:], dtype=np.int64))
    hi = lo * int(shape[axis])
    outer = 1
    for size in out[::-1]:
        if not isinstance(size, int):
            return False
        if outer <= lo and hi <= outer * size and lo % outer == 0 and (outer * size) % hi == 0:
            return hi < outer * size and int(shape[axis]) > 1
        outer *= size
    return False
