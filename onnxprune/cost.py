"""Cost model: multiply-accumulates and parameters per node.

Shapes come from a function so the same code prices the model before pruning,
after pruning, and under a candidate plan (without rewriting anything).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .ops import family_for
from .ops.layer import elements as _prod
from .ops.registry import ShapeOf

__all__ = ["Cost", "ShapeOf", "concrete", "model_cost", "node_macs", "node_params", "shrunk"]

@dataclass
class Cost:
    """Totals for a model."""

    macs: int
    params: int
    per_node: dict[str, tuple[int, int]]
    activations: int = 0  # elements every node reads and writes that are not constants


def node_macs(node: gs.Node, shape_of: ShapeOf) -> int:
    """MACs of one node (0 for ops that do no multiply-accumulate work): its family's
    `macs` hook (see `ops/`)."""
    family = family_for(node)
    return family.macs(node, shape_of) if family is not None and family.macs else 0


def _float_size(tensor: gs.Tensor, shape_of: ShapeOf) -> int:
    if isinstance(tensor, gs.Constant) and np.issubdtype(tensor.dtype, np.floating):
        return _prod(shape_of(tensor.name) or tensor.shape)
    return 0


def node_params(node: gs.Node, shape_of: ShapeOf) -> int:
    """Float parameters a node reads (its constant inputs)."""
    return sum(_float_size(t, shape_of) for t in node.inputs)


def model_cost(graph: gs.Graph, shape_of: ShapeOf) -> Cost:
    """MACs and float parameters of a whole graph, and (MACs, params) per node."""
    per_node = {node.name: (node_macs(node, shape_of), node_params(node, shape_of))
                for node in graph.nodes}
    params = sum(_float_size(t, shape_of) for t in graph.tensors().values())
    moved = sum(_prod(shape_of(t.name)) for node in graph.nodes
                for t in list(node.inputs) + list(node.outputs)
                if isinstance(t, gs.Variable) and t.name)
    return Cost(sum(m for m, _ in per_node.values()), params, per_node, moved)


def concrete(shapes: dict[str, tuple | None]) -> ShapeOf:
    """A shape function that prices symbolic dims as 1 (a batch of one)."""

    def shape_of(name: str):
        shape = shapes.get(name)
        if shape is None:
            return None
        return tuple(d if isinstance(d, int) and d > 0 else 1 for d in shape)

    return shape_of


def shrunk(base: ShapeOf, slots: dict) -> ShapeOf:
    """Shapes after removing, from each (tensor, axis) slot, as many indices as given
    (`slots`: Slot → removed indices). Axes pruned as one keep their kept indices on
    the last of them (as the rewrite lays them out)."""
    cut: dict[str, dict[int, int]] = {}
    spans: dict[str, list[tuple[int, int, int]]] = {}
    for slot, idx in slots.items():
        if slot.span > 1:
            spans.setdefault(slot.tensor, []).append((slot.axis, slot.span, len(idx)))
        else:
            cut.setdefault(slot.tensor, {})[slot.axis] = len(idx)

    def shape_of(name: str):
        shape = base(name)
        if shape is None or (name not in cut and name not in spans):
            return shape
        dims = [d - cut.get(name, {}).get(a, 0) for a, d in enumerate(shape)]
        for axis, span, count in spans.get(name, ()):
            dims[axis:axis + span] = [1] * (span - 1) + [_prod(dims[axis:axis + span]) - count]
        return tuple(dims)

    return shape_of

