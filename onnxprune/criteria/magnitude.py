"""Criteria computed from the weights alone.

- `l1`, `l2`: norm of every weight slice a unit owns (producer filters and consumer
  input slices), each member normalized by its mean, then averaged over members
  (group-level magnitude, as in Torch-Pruning's GroupMagnitudeImportance; Li et al.
  2017 "Pruning Filters for Efficient ConvNets").
- `bn_scale`: |γ| of the BatchNorm(s) in the group (Liu et al. 2017, "Learning
  Efficient Convolutional Networks through Network Slimming").
- `random`: a seeded baseline.
- `zero`: lossless; a unit scores 0 only when its removal cannot change any output
  (its consumers' input slices are all zero, or its producers' filters, biases and
  norm shifts are all zero and every op on its path maps 0 to 0); others score 1.
"""

from __future__ import annotations

import numpy as np

from ..depgraph import GraphView, Group, Role, Slot

NONZERO_AT_ZERO = {"Sigmoid", "HardSigmoid", "Exp", "Cos", "Cosh", "Softplus", "Not",
                   "Reciprocal", "Log", "Pow", "Equal", "LessOrEqual", "GreaterOrEqual",
                   "InstanceNormalization", "LRN", "Where", "Sub"}


def _per_unit(group: Group, slot: Slot, per_atom: np.ndarray) -> np.ndarray:
    units = group.members[slot]
    valid = units >= 0
    return np.bincount(units[valid], weights=per_atom[valid], minlength=group.units)


def _atom_reduce(values: np.ndarray, axis: int, power: int) -> np.ndarray:
    """Sum of |w|**power over every axis but `axis` (accumulated in float64)."""
    others = tuple(a for a in range(values.ndim) if a != axis)
    data = np.abs(values) if power == 1 else np.square(values, dtype=np.float32)
    return data.sum(axis=others, dtype=np.float64)


def _weight_slots(group: Group, view: GraphView) -> list[Slot]:
    return [s for s in group.members if group.roles.get(s) in (Role.OUT, Role.IN)
            and view.is_const(s.tensor)]


def _mean_normalized(rows: list[np.ndarray]) -> np.ndarray | None:
    rows = [r / r.mean() for r in rows if r.size and r.mean() > 0]
    return np.mean(rows, axis=0) if rows else None


def _norm(group: Group, view: GraphView, power: int) -> np.ndarray:
    rows = []
    for slot in _weight_slots(group, view):
        per_unit = _per_unit(group, slot, _atom_reduce(view.const(slot.tensor), slot.axis, power))
        rows.append(per_unit ** (1.0 / power))
    scores = _mean_normalized(rows)
    return np.zeros(group.units) if scores is None else scores


def l1(group: Group, view: GraphView, rng: np.random.Generator,
       stats: object = None) -> np.ndarray:
    """Mean-normalized L1 norm of each unit's weight slices, averaged over members."""
    return _norm(group, view, 1)


def l2(group: Group, view: GraphView, rng: np.random.Generator,
       stats: object = None) -> np.ndarray:
    """Mean-normalized L2 norm of each unit's weight slices, averaged over members."""
    return _norm(group, view, 2)


def _norm_inputs(view: GraphView, tensor: str, op: str, index: int) -> bool:
    return any(n.op == op and len(n.inputs) > index and n.inputs[index].name == tensor
               for n in view.nodes_of(tensor))


def bn_scale(group: Group, view: GraphView, rng: np.random.Generator,
             stats: object = None) -> np.ndarray:
    """|γ| of the group's BatchNorm scales; groups without one fall back to `l1`."""
    rows = [_per_unit(group, s, np.abs(view.const(s.tensor)).astype(np.float64))
            for s in group.slots(Role.PARAM)
            if _norm_inputs(view, s.tensor, "BatchNormalization", 1) and view.rank(s.tensor) == 1]
    scores = _mean_normalized(rows)
    return l1(group, view, rng) if scores is None else scores


def random_scores(group: Group, view: GraphView, rng: np.random.Generator,
                  stats: object = None) -> np.ndarray:
    """Uniform random scores from the seeded generator."""
    return rng.random(group.units)


def _all_zero(group: Group, view: GraphView, slots: list[Slot]) -> np.ndarray:
    """Per unit: True when every listed constant slice is exactly zero."""
    zero = np.ones(group.units, bool)
    for slot in slots:
        values = view.const(slot.tensor)
        if values is None:
            continue
        nonzero = _per_unit(group, slot, _atom_reduce(values, slot.axis, 1)) > 0
        zero &= ~nonzero
    return zero


def _shift_params(group: Group, view: GraphView) -> list[Slot]:
    """Parameters that would make a zero input nonzero (all but norm statistics)."""
    return [s for s in group.slots(Role.PARAM)
            if not (_norm_inputs(view, s.tensor, "BatchNormalization", 3)
                    or _norm_inputs(view, s.tensor, "BatchNormalization", 4)
                    or _norm_inputs(view, s.tensor, "Mul", 0)
                    or _norm_inputs(view, s.tensor, "Mul", 1))]


def zero(group: Group, view: GraphView, rng: np.random.Generator,
         stats: object = None) -> np.ndarray:
    """0 for units whose removal is exactly lossless, 1 for the others."""
    sinks = group.slots(Role.IN)
    dead_in = _all_zero(group, view, sinks) if sinks else np.zeros(group.units, bool)
    ops = {n.op for name in {s.tensor for s in group.members} for n in view.nodes_of(name)}
    dead_out = np.zeros(group.units, bool)
    if group.slots(Role.OUT) and not ops & NONZERO_AT_ZERO:
        dead_out = _all_zero(group, view, group.slots(Role.OUT) + _shift_params(group, view))
    return np.where(dead_in | dead_out, 0.0, 1.0)
