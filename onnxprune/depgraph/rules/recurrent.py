"""LSTM, GRU and RNN: input features are absorbed by the input weights W
(axis 2); the hidden size is not pruned, so everything else blocks."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..core import Edges, GraphView, Role, Slot
from .base import Rule, register


@register("LSTM", "GRU", "RNN")
class Recurrent(Rule):
    """X[..., input_size] goes with W[num_directions, gates·hidden, input_size] axis 2."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, w = node.inputs[0].name, node.inputs[1].name
        features = Slot(x, 2)
        if slot == features:
            edges.same(slot, Slot(w, 2), Role.IN)
        elif slot != Slot(w, 2):
            edges.block(slot, f"{node.op} {node.name}: hidden size and sequence axes are "
                              "not pruned")
