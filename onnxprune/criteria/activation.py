"""Criteria from activations measured on calibration data (onnxruntime).

Each reads the activations that enter the group's consumers (the inputs of the
layers whose weights absorb the group), per unit:

- `activation`: mean |a| (Molchanov et al. 2017 use activation magnitude as a
  first-order saliency; Hu et al. 2016 "Network Trimming" for the zero statistic).
- `apoz`: 1 − average percentage of zeros (Hu et al. 2016): mostly-zero channels go first.
- `variance`: variance of the activation ("fluctuation", An et al. 2024, FLAP):
  a near-constant channel can be folded into a bias.
- `wanda`: structured Wanda (Sun et al. 2023): ‖consumer weight slice‖₂ × ‖activation‖₂,
  the expected size of what the unit contributes downstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..depgraph import GraphView, Group, Role, Slot
from ..ops.registry import VIEW_DEPTH, is_axis_view
from .magnitude import _atom_reduce, _mean_normalized, _per_unit, l2

if TYPE_CHECKING:
    from ..moments import Moments

    Stats = dict[tuple[str, int], Moments]  # activation statistics by (tensor, axis)


def sink_activations(group: Group, view: GraphView) -> list[Slot]:
    """The group's activation slots that feed the layers absorbing it."""
    names: set[str] = set()
    for slot in group.slots(Role.IN):
        for node in _consumers(view, slot.tensor):
            names.update(t.name for t in node.inputs)
    return [s for s in group.members if group.roles.get(s) == Role.ACT and s.tensor in names]


def _consumers(view: GraphView, name: str, depth: int = VIEW_DEPTH):
    for node in view.tensors[name].outputs if name in view.tensors else []:
        if is_axis_view(node.op) and depth:
            yield from _consumers(view, node.outputs[0].name, depth - 1)
        else:
            yield node


def _unit_mean(group: Group, slot: Slot, per_atom: np.ndarray) -> np.ndarray:
    counts = _per_unit(group, slot, np.ones(len(per_atom)))
    return _per_unit(group, slot, per_atom) / np.maximum(counts, 1)


def _from_stats(group: Group, view: GraphView, stats, measure) -> np.ndarray | None:
    rows = [_unit_mean(group, s, measure(stats[(s.tensor, s.axis)]))
            for s in sink_activations(group, view) if (s.tensor, s.axis) in (stats or {})]
    return _mean_normalized(rows)


def _or_l2(scores, group, view, rng):
    return l2(group, view, rng) if scores is None else scores


def activation(group: Group, view: GraphView, rng: np.random.Generator,
               stats: Stats | None = None) -> np.ndarray:
    """Mean |a| of the unit's channels at the group's consumers."""
    return _or_l2(_from_stats(group, view, stats, lambda s: s.mean_abs), group, view, rng)


def apoz(group: Group, view: GraphView, rng: np.random.Generator,
         stats: Stats | None = None) -> np.ndarray:
    """1 − fraction of zero activations."""
    return _or_l2(_from_stats(group, view, stats, lambda s: 1.0 - s.apoz + 1e-12), group,
                  view, rng)


def variance(group: Group, view: GraphView, rng: np.random.Generator,
             stats: Stats | None = None) -> np.ndarray:
    """Variance of the unit's activations."""
    return _or_l2(_from_stats(group, view, stats, lambda s: s.variance + 1e-12), group,
                  view, rng)


def wanda(group: Group, view: GraphView, rng: np.random.Generator,
          stats: Stats | None = None) -> np.ndarray:
    """‖consumer weight slice‖₂ × root-mean-square activation, per unit."""
    norms = _from_stats(group, view, stats, lambda s: np.sqrt(s.mean_sq))
    if norms is None:
        return l2(group, view, rng)
    weights = [np.sqrt(_per_unit(group, s, _atom_reduce(view.const(s.tensor), s.axis, 2)))
               for s in group.slots(Role.IN) if view.is_const(s.tensor)]
    weight = _mean_normalized(weights)
    return norms if weight is None else norms * weight
