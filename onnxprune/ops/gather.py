"""Gather: axes of the data other than the gathered one pass through (an
embedding table's feature axis, the head axis after picking q, k or v out of a
fused projection); the gathered axis itself cannot lose indices."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import register
from .rule import Rule


class Gather(Rule):
    """Y = data indexed by `indices` along `axis`: data axis b ≠ axis keeps its
    indices at output axis b (before `axis`) or b + rank(indices) − 1 (after)."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        data, indices, y = (t.name for t in (node.inputs[0], node.inputs[1], node.outputs[0]))
        rank, index_rank = view.rank(data), view.rank(indices)
        if slot.tensor not in (data, y) or rank is None or index_rank is None:
            edges.block(slot, f"Gather {node.name}: indices are not channels")
            return
        axis = int(node.attrs.get("axis", 0)) % rank
        shift = index_rank - 1
        if slot.tensor == data or slot.axis < axis:
            data_axis = slot.axis
        elif slot.axis >= axis + index_rank:
            data_axis = slot.axis - shift
        else:
            data_axis = axis
        if data_axis == axis:
            edges.block(slot, f"Gather {node.name} selects indices along this axis")
            return
        out_axis = data_axis if data_axis < axis else data_axis + shift
        role = Role.PARAM if view.is_const(data) else Role.ACT
        other = Slot(y, out_axis) if slot.tensor == data else Slot(data, data_axis)
        edges.same(slot, other, Role.ACT if other.tensor == y else role)


register("Gather", rule=Gather())
