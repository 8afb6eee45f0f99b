"""Apply a plan: slice constants on their pruned axes and let each op rule fix its
attributes and shape constants."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .depgraph import DepGraph, GraphView, Role, Slot
from .ops import family_of
from .ops.rule import Change, rule_for


def removed_slots(dep: DepGraph, removed_units: dict[int, np.ndarray]) -> dict[Slot, np.ndarray]:
    """Indices each slot loses under a plan (the union over the groups that hold it)."""
    by_slot: dict[Slot, np.ndarray] = {}
    for group in dep.groups:
        units = removed_units.get(group.id)
        if units is None or not len(units):
            continue
        for slot, owner in group.members.items():
            idx = np.flatnonzero(np.isin(owner, units))
            if idx.size:
                by_slot[slot] = np.union1d(by_slot.get(slot, idx), idx)
    return by_slot


def apply(graph: gs.Graph, view: GraphView, removed: dict[Slot, np.ndarray]) -> gs.Graph:
    """Rewrite a copy of the analyzed graph; `view` still describes the original."""
    graph = graph.copy()
    change = Change(removed, view)
    for node in graph.nodes:
        rule = rule_for(node)
        if rule is not None and change.touches(node):
            rule.rewrite(node, change)
    if change.new_nodes:
        graph.nodes.extend(change.new_nodes)
        graph.toposort()
    tensors = graph.tensors()
    for slot, idx in sorted(removed.items()):
        tensor = tensors.get(slot.tensor)
        if isinstance(tensor, gs.Constant):
            tensor.values = np.delete(np.asarray(tensor.values), idx, axis=slot.axis)
    return graph


def mask_sinks(dep: DepGraph, removed_units: dict[int, np.ndarray],
               applied: dict[Slot, np.ndarray] | None = None) -> gs.Graph:
    """The reference for mask equivalence: a copy of the original graph (with the
    indices of `applied` already removed, as `apply` removes them) in which the removed
    units' slices of every consumer weight (role IN) are zero."""
    applied = applied or {}
    graph = apply(dep.view.graph, dep.view, applied) if applied else dep.view.graph.copy()
    tensors = graph.tensors()
    for group in dep.groups:
        units = removed_units.get(group.id)
        if units is None or not len(units):
            continue
        for slot in group.slots(Role.IN):
            idx = np.flatnonzero(np.isin(group.members[slot], units))
            if slot in applied:  # where these indices moved when `applied` was removed
                idx = idx - np.searchsorted(applied[slot], idx)
            tensor = tensors[slot.tensor]
            if not isinstance(tensor, gs.Constant):
                continue  # a view of a weight (Cast, DequantizeLinear): its source is zeroed
            values = np.array(tensor.values, copy=True)
            index = [slice(None)] * values.ndim
            index[slot.axis] = idx
            values[tuple(index)] = _zero_of(tensor, values.shape)[tuple(index)]
            tensor.values = values
    return graph


def _zero_of(tensor: gs.Constant, shape: tuple[int, ...]) -> np.ndarray:
    """What stands for zero in a stored weight: as the weight view that alone reads it
    says (a DequantizeLinear's zero point), else 0."""
    readers = tensor.outputs
    zero = np.zeros(shape, np.asarray(tensor.values).dtype)
    family = family_of(readers[0].op) if len(readers) == 1 else None
    view = None if family is None else family.view
    return zero if view is None or view.zero is None else view.zero(readers[0], zero)
