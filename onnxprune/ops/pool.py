"""Ops that keep channels apart and only change other axes: pooling, Pad,
Resize/Upsample. Channels pass straight through; an axis whose size changes
cannot carry a group."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import register
from .rule import Change, Rule, const_input, set_const_input

POOLS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
         "GlobalLpPool", "MaxRoundingPool")


class _SizePreserving(Rule):
    """Pass the axes whose size does not change from X to Y."""

    def kept_axes(self, node: gs.Node, view: GraphView) -> set[int] | None:
        raise NotImplementedError

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        if slot.tensor not in (x, y):
            edges.block(slot, f"{node.op} {node.name}: not a data input")
            return
        kept = self.kept_axes(node, view)
        if kept is None or slot.axis not in kept:
            edges.block(slot, f"{node.op} {node.name} changes or mixes axis {slot.axis}")
            return
        edges.same(slot, Slot(y if slot.tensor == x else x, slot.axis), Role.ACT)


class Pool(_SizePreserving):
    """Batch and channel axes are kept; MaxPool's index output encodes channels."""

    def kept_axes(self, node: gs.Node, view: GraphView) -> set[int] | None:
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            return {0}
        return {0, 1}


class Pad(_SizePreserving):
    """Axes with zero padding on both sides pass through."""

    def kept_axes(self, node: gs.Node, view: GraphView) -> set[int] | None:
        rank = view.rank(node.inputs[0].name)
        pads = node.attrs.get("pads") if "pads" in node.attrs else const_input(node, 1, view)
        if rank is None or pads is None:
            return None
        pads = np.asarray(pads).reshape(2, -1)
        axes = const_input(node, 3, view)
        axes = range(rank) if axes is None else [int(a) % rank for a in axes]
        padded = {a for a, lo, hi in zip(axes, pads[0], pads[1], strict=True) if lo or hi}
        return set(range(rank)) - padded


class Resize(_SizePreserving):
    """Axes with scale 1 pass through; an explicit `sizes` entry is rewritten."""

    def kept_axes(self, node: gs.Node, view: GraphView) -> set[int] | None:
        x, y = node.inputs[0].name, node.outputs[0].name
        rank = view.rank(x)
        if rank is None or "axes" in node.attrs:
            return None
        x_shape, y_shape = view.shape(x), view.shape(y)
        if x_shape is not None and y_shape is not None:
            same = {a for a in range(rank) if isinstance(x_shape[a], int)
                    and x_shape[a] == y_shape[a]}
            if same:
                return same
        scales = self._scales(node, view)
        if scales is None:
            return None
        return {a for a in range(rank) if float(scales[a]) == 1.0}

    @staticmethod
    def _scales(node: gs.Node, view: GraphView):
        if node.op == "Upsample":
            return node.attrs.get("scales", const_input(node, 1, view))
        index = 2 if len(node.inputs) > 2 else 1
        scales = const_input(node, index, view)
        return scales if scales is not None and scales.size else None

    def rewrite(self, node: gs.Node, change: Change) -> None:
        if node.op != "Resize" or len(node.inputs) < 4:
            return
        sizes = const_input(node, 3, change.view)
        if sizes is None or not sizes.size:
            return
        y = node.outputs[0].name
        new = np.array([change.kept(y, a) or s for a, s in enumerate(sizes)], dtype=sizes.dtype)
        if not np.array_equal(new, sizes):
            set_const_input(node, 3, new)


register(*POOLS, rule=Pool())
register("Pad", rule=Pad())
register("Resize", "Upsample", rule=Resize())
