"""LSTM, GRU and RNN: input features are absorbed by the input weights W
(axis 2); the hidden size is not pruned, so everything else blocks.

Cost: every step of every sequence multiplies the input and the previous hidden state
by the gates' weights W and R."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import register
from .rule import Rule


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


def _macs(node: gs.Node, shape_of) -> int:
    x, w, r = (shape_of(t.name) for t in node.inputs[:3])
    if not x or not w or not r:
        return 0
    steps_and_batch = x[0] * x[1]
    directions, gates_hidden, inputs = w
    return steps_and_batch * directions * gates_hidden * (inputs + r[2])


register("LSTM", "GRU", "RNN", rule=Recurrent(), compute=True, macs=_macs)
