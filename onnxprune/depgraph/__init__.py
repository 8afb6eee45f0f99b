"""The channel dependency graph: groups of (tensor, axis) slots pruned together."""

from __future__ import annotations

import onnx_graphsurgeon as gs
from onnx import ModelProto

from .. import model as model_io
from ..cache import cache_pairs, pair_slots
from ..shapes import Prober, batch_periods, infer_shape_table
from .core import GraphView, Role, Slot
from .graph import DepGraph, Group, build

__all__ = ["DepGraph", "Group", "GraphView", "Role", "Slot", "analyze", "build", "view_of"]


def view_of(graph: gs.Graph, original: ModelProto,
            input_shapes: dict[str, tuple[int, ...]] | None = None) -> GraphView:
    """Infer shapes of a normalized graph and wrap it for the rules."""
    structure = model_io.structure_proto(graph, original)

    def runnable() -> ModelProto:
        return model_io.export(graph, original)

    prober = Prober(structure, runnable)
    table = infer_shape_table(structure, input_shapes, prober)
    view = GraphView(graph, table, lambda: batch_periods(structure, input_shapes, prober))
    view.prober = prober
    view.caches = pair_slots(cache_pairs(original))
    return view


def analyze(model: ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None
            ) -> DepGraph:
    """Normalize a model and build its channel groups."""
    graph = model_io.normalize(model)
    return build(view_of(graph, model, input_shapes))
