"""Transpose: output axis k is input axis perm[k]. It is also a weight view (a weight
stored transposed), which only the sparsifier reads through: it moves axes, so the
dependency graph follows it as an op."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import WeightView, register
from .rule import Change, Rule


class Transpose(Rule):
    """Output axis k is input axis perm[k]. Axes taken as one (the factors of a
    channel shuffle) are moved among themselves: their flat index maps through the
    permutation, and once indices are removed the Transpose becomes a Gather of the
    kept indices (the Reshape before it puts them all on the last of those axes)."""

    spans = True

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


def permutes_within(node: gs.Node, slot: Slot, view: GraphView) -> bool:
    """Whether a Transpose moves the axes of `slot` only among themselves."""
    rank = view.rank(node.inputs[0].name)
    if rank is None:
        return False
    perm = list(node.attrs.get("perm", range(rank - 1, -1, -1)))
    inside = range(slot.axis, slot.axis + slot.span)
    return all(perm[k] == k for k in range(rank) if k not in inside) and \
        sorted(perm[k] for k in inside) == list(inside)


def _transposed(values: np.ndarray, attrs: dict, params) -> np.ndarray:
    return np.transpose(values, attrs.get("perm"))


def _untransposed(values: np.ndarray, attrs: dict, params) -> np.ndarray:
    perm = attrs.get("perm") or list(range(values.ndim))[::-1]
    return np.transpose(values, np.argsort(perm))


register("Transpose", rule=Transpose(), view=WeightView(False, _transposed, _untransposed))
