"""Concat, Split and Slice: on their axis, indices move by offsets (Concat),
fall into ranges (Split) or are selected by a contiguous window (Slice); on
every other axis the operands are coupled index for index."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import register
from .rule import Change, Rule, const_input, set_const_input
from .values import static_value


def _offsets(names: list[str], axis: int, view: GraphView) -> list[int] | None:
    """Start of each part along the axis, or None when a size is unknown."""
    starts, total = [], 0
    for name in names:
        dim = view.static_dim(Slot(name, axis))
        if dim is None:
            return None
        starts.append(total)
        total += dim
    return starts


def _couple_parts(slot: Slot, whole: str, parts: list[str], axis: int, view: GraphView,
                  edges: Edges, what: str) -> None:
    """Link a slot on the whole tensor or on one part to the others."""
    if slot.axis != axis:
        for name in [whole] + parts:
            if name and name != slot.tensor:
                role = Role.PARAM if view.is_const(name) else Role.ACT
                edges.same(slot, Slot(name, slot.axis), role)
        return
    starts = _offsets(parts, axis, view)
    if starts is None:
        edges.block(slot, f"{what}: part sizes along axis {axis} unknown")
        return
    for name, start in zip(parts, starts, strict=True):
        if slot.tensor not in (whole, name):
            continue
        size = view.static_dim(Slot(name, axis))
        local = np.arange(size)
        role = Role.PARAM if view.is_const(name) else Role.ACT
        if slot.tensor == whole:
            edges.map(slot, Slot(name, axis), start + local, local, role)
        else:
            edges.map(slot, Slot(whole, axis), local, start + local, Role.ACT)


class Concat(Rule):
    """Part j's index i is the output's index offset_j + i."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        out = node.outputs[0].name
        rank = view.rank(out)
        if rank is None:
            edges.block(slot, f"Concat {node.name}: rank unknown")
            return
        axis = int(node.attrs["axis"]) % rank
        parts = [t.name for t in node.inputs]
        _couple_parts(slot, out, parts, axis, view, edges, f"Concat {node.name}")


class Split(Rule):
    """Output j holds the input's range offset_j … offset_j + size_j − 1."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        whole = node.inputs[0].name
        if slot.tensor != whole and slot.tensor not in [t.name for t in node.outputs]:
            edges.block(slot, f"Split {node.name}: split sizes are not channels")
            return
        rank = view.rank(whole)
        if rank is None:
            edges.block(slot, f"Split {node.name}: rank unknown")
            return
        axis = int(node.attrs.get("axis", 0)) % rank
        parts = [t.name for t in node.outputs]
        _couple_parts(slot, whole, parts, axis, view, edges, f"Split {node.name}")

    def rewrite(self, node: gs.Node, change: Change) -> None:
        whole = node.inputs[0].name
        axis = int(node.attrs.get("axis", 0)) % change.view.rank(whole)
        if not len(change.removed(whole, axis)):
            return
        sizes = np.array([change.kept(t.name, axis) for t in node.outputs], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if "split" in node.attrs:
            node.attrs["split"] = [int(s) for s in sizes]
        elif len(node.inputs) > 1 and node.inputs[1].name:
            set_const_input(node, 1, sizes)
        else:
            node.inputs.append(gs.Constant(f"{node.name}__split", sizes))


class Slice(Rule):
    """A unit-step window on the axis: the kept indices inside it are selected."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        if slot.tensor not in (x, y):
            edges.block(slot, f"Slice {node.name}: slice bounds are not channels")
            return
        other = y if slot.tensor == x else x
        window = slice_window(node, slot.axis, view)
        if window is None:
            edges.same(slot, Slot(other, slot.axis), Role.ACT)
            return
        if window is False:
            edges.block(slot, f"Slice {node.name}: bounds unknown or step is not 1 on axis "
                              f"{slot.axis}")
            return
        start, stop = window
        inside = np.arange(start, stop)
        local = np.arange(stop - start)
        if slot.tensor == x:
            edges.map(slot, Slot(y, slot.axis), inside, local, Role.ACT)
        else:
            edges.map(slot, Slot(x, slot.axis), local, inside, Role.ACT)

    def rewrite(self, node: gs.Node, change: Change) -> None:
        x = node.inputs[0].name
        params = _params(node, change.view)
        if params is None:
            return
        starts, ends, axes, steps = params
        rank = change.view.rank(x)
        new_starts, new_ends = starts.copy(), ends.copy()
        for k, axis in enumerate(axes):
            removed = change.removed(x, int(axis) % rank)
            window = slice_window(node, int(axis) % rank, change.view)
            if not len(removed) or not window:
                continue
            start, stop = window
            new_start = start - int(np.sum(removed < start))
            new_starts[k] = new_start
            new_ends[k] = new_start + (stop - start) - int(np.sum((removed >= start)
                                                                  & (removed < stop)))
        if "starts" in node.attrs:
            node.attrs["starts"], node.attrs["ends"] = list(map(int, new_starts)), list(
                map(int, new_ends))
        else:
            set_const_input(node, 1, new_starts)
            set_const_input(node, 2, new_ends)


def _params(node: gs.Node, view: GraphView):
    """(starts, ends, axes, steps) as int64 arrays, or None when not constant."""
    if "starts" in node.attrs:
        starts = np.array(node.attrs["starts"], np.int64)
        ends = np.array(node.attrs["ends"], np.int64)
        axes = np.array(node.attrs.get("axes", range(len(starts))), np.int64)
        return starts, ends, axes, np.ones_like(starts)
    starts, ends = _bound(node, 1, view), _bound(node, 2, view)
    if starts is None or ends is None:
        return None
    axes = _bound(node, 3, view)
    steps = _bound(node, 4, view)
    axes = np.arange(len(starts)) if axes is None else axes
    steps = np.ones_like(starts) if steps is None else steps
    return (starts.astype(np.int64), ends.astype(np.int64), axes.astype(np.int64),
            steps.astype(np.int64))


def _bound(node: gs.Node, index: int, view: GraphView) -> np.ndarray | None:
    """A Slice input: a constant, or computed from static sizes (torch.chunk's bounds
    from the Shape of the sliced tensor); a rewrite stores it as a constant."""
    if index >= len(node.inputs) or not node.inputs[index].name:
        return None
    value = const_input(node, index, view)
    return static_value(node.inputs[index].name, view) if value is None else value


def _sliced_axes(node: gs.Node, rank: int, view: GraphView) -> set[int]:
    """Axes a Slice with run-time bounds may touch (all of them if unknown)."""
    if "axes" in node.attrs:
        return {int(a) % rank for a in node.attrs["axes"]}
    axes = const_input(node, 3, view)
    if axes is not None:
        return {int(a) % rank for a in np.asarray(axes).reshape(-1)}
    count = view.dim(Slot(node.inputs[1].name, 0)) if len(node.inputs) > 1 else None
    return set(range(count if count is not None and "starts" not in node.attrs else rank))


def slice_window(node: gs.Node, axis: int, view: GraphView
                 ) -> tuple[int, int] | Literal[False] | None:
    """(start, stop) on the axis; None if the axis is not sliced; False if unusable."""
    x = node.inputs[0].name
    params = _params(node, view)
    rank, dim = view.rank(x), view.static_dim(Slot(x, axis))
    if rank is None:
        return False
    if params is None:
        return None if axis not in _sliced_axes(node, rank, view) else False
    starts, ends, axes, steps = params
    hits = [k for k, a in enumerate(axes) if int(a) % rank == axis]
    if not hits:
        return None
    k = hits[0]
    if dim is None or steps[k] != 1:
        return False
    start, stop, _ = slice(int(starts[k]), int(ends[k]), 1).indices(dim)
    if start == 0 and stop == dim:
        return None
    return start, max(start, stop)


register("Concat", rule=Concat())
register("Split", rule=Split())
register("Slice", rule=Slice())
