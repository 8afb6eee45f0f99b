"""QuantizeLinear and DequantizeLinear: every axis passes through; a per-axis scale
and zero point are sliced with the channels of their axis."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..core import Edges, GraphView, Role, Slot
from .base import Rule, register


@register("QuantizeLinear", "DequantizeLinear")
class Quantize(Rule):
    """x and y share every axis; scale and zero point follow `axis` when 1-D."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        rank = view.rank(x)
        params = [t.name for t in node.inputs[1:3] if t.name]
        if rank is None or node.attrs.get("block_size"):
            edges.block(slot, f"{node.op} {node.name}: blocked quantization")
            return
        axis = int(node.attrs.get("axis", 1)) % rank
        per_axis = [p for p in params if view.rank(p) == 1 and (view.dim(Slot(p, 0)) or 1) > 1]
        if slot.tensor in params:
            data_axis = axis
        elif slot.tensor in (x, y):
            data_axis = slot.axis
        else:
            return
        for name in (x, y):
            if Slot(name, data_axis) != slot:
                edges.same(slot, Slot(name, data_axis), Role.ACT)
        if data_axis == axis:
            for name in per_axis:
                if Slot(name, 0) != slot:
                    edges.same(slot, Slot(name, 0), Role.PARAM)
