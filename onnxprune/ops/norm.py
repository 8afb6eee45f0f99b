"""Normalization ops. BatchNorm and InstanceNorm act per channel (their
statistics are sliced with the channels); InstanceNorm's statistics also mix the
indices of every axis after the channels. LayerNorm and RMSNorm over an axis mix its
indices through their statistics: the axis stays coupled with the scale and bias,
and the group is marked approximate (hidden-size pruning). GroupNorm and LRN mix
channels within windows and block."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import register
from .rule import Rule

if TYPE_CHECKING:
    from .registry import Carrier


class PerChannelNorm(Rule):
    """Axis 1 carries the channels of X, Y and every 1-D parameter."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        if len(node.outputs) > 1 and any(t.outputs for t in node.outputs[1:]):
            edges.block(slot, f"{node.op} {node.name}: training-mode outputs are used")
            return
        params = [Slot(t.name, 0) for t in node.inputs[1:] if t.name]
        if slot.tensor in (x, y) and slot.axis != 1:
            edges.same(slot, Slot(y if slot.tensor == x else x, slot.axis), Role.ACT)
            if node.op == "InstanceNormalization" and slot.axis >= 2:
                edges.mix(slot, f"{node.op} {node.name} normalizes over this axis")
            return
        members = [Slot(x, 1), Slot(y, 1)] + params
        if slot not in members:
            return
        for other in members:
            if other != slot:
                edges.same(slot, other, Role.PARAM if other in params else Role.ACT)


class LayerNorm(Rule):
    """Normalized axes couple X, Y and the scale/bias axes, approximately."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        rank = view.rank(x)
        if rank is None:
            edges.block(slot, f"{node.op} {node.name}: rank unknown")
            return
        start = int(node.attrs.get("axis", -1)) % rank
        if slot.tensor in (x, y):
            axis = slot.axis
        else:
            axis = slot.axis + start + (rank - start - (view.rank(slot.tensor) or 0))
        link_normalized(node, slot, axis, start, [x, y], view, edges)


def link_normalized(node: gs.Node, slot: Slot, axis: int, start: int, data: list[str],
                    view: GraphView, edges: Edges) -> None:
    """Couple `axis` of the data tensors with the matching axis of each parameter
    (right-aligned); mark the group approximate when the axis is normalized."""
    params = [t.name for t in node.inputs if t.name and t.name not in data]
    for name in data:
        if name and name != slot.tensor and view.rank(name) is not None:
            edges.same(slot, Slot(name, axis), Role.ACT)
    if axis < start:
        return
    edges.mix(slot, f"{node.op} {node.name} normalizes over this axis")
    rank = view.rank(data[0])
    for name in params:
        param_axis = axis - (rank - (view.rank(name) or 0))
        if name != slot.tensor and param_axis >= 0 and view.dim(Slot(name, param_axis)) == \
                view.dim(Slot(data[0], axis)):
            edges.same(slot, Slot(name, param_axis), Role.PARAM)


class MixingNorm(Rule):
    """Axes that are normalized together cannot lose indices; others pass through."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        rank = view.rank(x)
        if slot.tensor not in (x, y) or rank is None or slot.axis in _mixed_axes(node, rank):
            edges.block(slot, f"{node.op} {node.name} normalizes across this axis "
                              "(channel-mixing)")
            return
        edges.same(slot, Slot(y if slot.tensor == x else x, slot.axis), Role.ACT)


def _mixed_axes(node: gs.Node, rank: int) -> set[int]:
    if node.op == "LayerNormalization":
        axis = int(node.attrs.get("axis", -1)) % rank
        return set(range(axis, rank))
    if node.op == "LpNormalization":
        return {int(node.attrs.get("axis", -1)) % rank}
    if node.op == "MeanVarianceNormalization":
        return {int(a) % rank for a in node.attrs.get("axes", [0, 2, 3])}
    return set(range(1, rank))


def batchnorm_shift(node: gs.Node) -> Carrier | None:
    """A BatchNormalization's shift (B) as the carrier of a per-channel shift of its input,
    with the factor it scales the input by, when its parameters are constants and B is
    its own; None otherwise."""
    if node.op != "BatchNormalization" or not all(
            isinstance(t, gs.Constant) for t in node.inputs[1:5]) or \
            len(node.inputs[2].outputs) != 1:
        return None
    scale, var = (np.asarray(node.inputs[i].values, np.float64) for i in (1, 4))
    return node.inputs[2], scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))


register("BatchNormalization", "InstanceNormalization", rule=PerChannelNorm())
register("LayerNormalization", "RMSNormalization", "com.microsoft::SimplifiedLayerNormalization",
         "SimplifiedLayerNormalization", rule=LayerNorm())
register("GroupNormalization", "LRN", "LpNormalization", "MeanVarianceNormalization",
         rule=MixingNorm())
