"""Apply a plan: slice constants on their pruned axes and let each op rule fix its
attributes and shape constants."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import onnx_graphsurgeon as gs

from .depgraph import DepGraph, GraphView, Group, Role, Slot
from .external import fresh, peek
from .ops import family_of
from .ops.rule import Change, rule_for

Values = dict[str, np.ndarray]  # new constant values by tensor name


def cut_groups(dep: DepGraph, removed_units: dict[int, np.ndarray]
               ) -> Iterator[tuple[Group, np.ndarray]]:
    """Each group that loses units under a plan, with its removed units."""
    for group in dep.groups:
        units = removed_units.get(group.id)
        if units is not None and len(units):
            yield group, units


def removed_slots(dep: DepGraph, removed_units: dict[int, np.ndarray],
                  tensors: set[str] | None = None) -> dict[Slot, np.ndarray]:
    """Indices each slot (of `tensors` only, when given) loses under a plan (the union
    over the groups that hold it)."""
    by_slot: dict[Slot, np.ndarray] = {}
    for group, units in cut_groups(dep, removed_units):
        gone = np.zeros(int(max(group.units, np.max(units) + 1)) + 1, bool)
        gone[units] = True  # the last entry stays False: owner -1 (no unit) maps there
        for slot, owner in group.members.items():
            if tensors is not None and slot.tensor not in tensors:
                continue
            idx = np.flatnonzero(gone[owner])
            if idx.size:
                by_slot[slot] = np.union1d(by_slot.get(slot, idx), idx)
    return by_slot


def apply(graph: gs.Graph, view: GraphView, removed: dict[Slot, np.ndarray],
          values: Values | None = None) -> gs.Graph:
    """Rewrite a copy of the analyzed graph, with the constants of `values` (new values by
    name, as reconstruction returns them) replaced first; `view` still describes the
    original. A value held in a file is read through a map of its own, let go with the
    copy."""
    graph = graph.copy()
    if values:
        tensors = graph.tensors()
        for name, value in values.items():
            tensors[name].values = fresh(value)
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


def zeroed_sinks(dep: DepGraph, removed_units: dict[int, np.ndarray],
                 tensors: dict[str, gs.Tensor] | None = None,
                 applied: dict[Slot, np.ndarray] | None = None,
                 only: Callable[[str], bool] | None = None) -> Values:
    """New values of every consumer weight (role IN) of the groups, with the removed
    units' slices zero (a stored weight's own zero: a DequantizeLinear's zero point).
    `tensors`: where the weights are read (default: the analyzed graph); `applied`: the
    indices already removed from them, as `apply` removes them; `only`: which weights
    (by name) to make (default: all)."""
    tensors = dep.view.tensors if tensors is None else tensors
    applied = applied or {}
    new: Values = {}
    for group, units in cut_groups(dep, removed_units):
        for slot in group.slots(Role.IN):
            if only is not None and not only(slot.tensor):
                continue
            idx = np.flatnonzero(np.isin(group.members[slot], units))
            if slot in applied:  # where these indices moved when `applied` was removed
                idx = idx - np.searchsorted(applied[slot], idx)
            tensor = tensors.get(slot.tensor)
            if not isinstance(tensor, gs.Constant):
                continue  # a view of a weight (Cast, DequantizeLinear): its source is zeroed
            values = np.array(new.get(slot.tensor, peek(tensor)), copy=True)
            index = [slice(None)] * values.ndim
            index[slot.axis] = idx
            values[tuple(index)] = _zero_of(tensor, values.shape)[tuple(index)]
            new[slot.tensor] = values
    return new


def mask_sinks(dep: DepGraph, removed_units: dict[int, np.ndarray],
               applied: dict[Slot, np.ndarray] | None = None,
               values: Values | None = None) -> gs.Graph:
    """The reference for mask equivalence: a copy of the original graph (with the
    constants of `values` replaced and the indices of `applied` removed, as `apply`
    does) in which the removed units' slices of every consumer weight are zero."""
    graph = apply(dep.view.graph, dep.view, applied or {}, values) if applied or values \
        else dep.view.graph.copy()
    tensors = graph.tensors()
    for name, zeroed in zeroed_sinks(dep, removed_units, tensors, applied).items():
        tensors[name].values = zeroed
    return graph


def _zero_of(tensor: gs.Constant, shape: tuple[int, ...]) -> np.ndarray:
    """What stands for zero in a stored weight: as the weight view that alone reads it
    says (a DequantizeLinear's zero point), else 0."""
    readers = tensor.outputs
    zero = np.zeros(shape, np.asarray(tensor.values).dtype)
    family = family_of(readers[0].op) if len(readers) == 1 else None
    view = None if family is None else family.view
    return zero if view is None or view.zero is None else view.zero(readers[0], zero)
