"""Normalization ops. BatchNorm and InstanceNorm act per channel (their
statistics are sliced with the channels); ops that normalize across channels
(LayerNorm over the axis, GroupNorm, LRN, LpNormalization) mix them and block."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..core import Edges, GraphView, Role, Slot
from .base import Rule, register


@register("BatchNormalization", "InstanceNormalization")
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
            return
        members = [Slot(x, 1), Slot(y, 1)] + params
        if slot not in members:
            return
        for other in members:
            if other != slot:
                edges.same(slot, other, Role.PARAM if other in params else Role.ACT)


@register("LayerNormalization", "GroupNormalization", "LRN", "LpNormalization",
          "MeanVarianceNormalization")
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
