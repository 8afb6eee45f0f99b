"""Group lasso over the dependency graph's units (`finetune --group-lasso λ`).

Each unit u of every prunable channel group (channels, neurons, heads) owns the
slices of the trainable weights coupled to it: its producers' output rows, its
consumers' input columns and its per-channel parameters (biases, norm scales and
shifts; not BatchNormalization's running mean and variance). w_u is all of them
taken as one vector. After every optimizer step each unit is shrunk by the proximal
operator of lr·λ·‖w_u‖:

    w_u ← w_u · max(0, 1 − lr·λ / ‖w_u‖)

all factors computed from the norms before the step (a weight that is a producer
row of one unit and a consumer column of another takes both factors). A unit whose
norm falls under lr·λ becomes exactly zero, so `prune --criterion zero` removes it
without changing any output. Groups that mix their units (a LayerNorm over the
axis: `Group.approximate`) or are blocked are left alone: removing their units is
not lossless. The objective is the distillation loss + λ·Σ_u ‖w_u‖.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from onnx import ModelProto

from ..depgraph import GraphView, Group, Role, Slot
from .compile import jit

STATISTICS = {3, 4}  # BatchNormalization's running mean and variance inputs


@dataclass(frozen=True)
class Coupled:
    """Per weight slice: (weight, axis, span, unit of each entry along axes axis …
    axis + span − 1 taken as one, `units` where none); `units`: the units of every
    group laid out one after another; `groups`: how many groups take part."""

    slices: tuple[tuple[str, int, int, np.ndarray], ...]
    units: int
    groups: int


def _statistic(view: GraphView, tensor: str) -> bool:
    return any(n.op == "BatchNormalization" and
               any(i in STATISTICS and t.name == tensor for i, t in enumerate(n.inputs))
               for n in view.nodes_of(tensor))


def _member_slots(group: Group, view: GraphView, trainable: set[str]) -> list[Slot]:
    roles = (Role.OUT, Role.IN, Role.PARAM)
    return [s for s in group.members if group.roles.get(s) in roles
            and s.tensor in trainable and not _statistic(view, s.tensor)]


def coupled(model: ModelProto, trainable: set[str]) -> Coupled:
    """The weight slices coupled to every unit of the model's prunable groups."""
    from ..analysis import analyze

    dep = analyze(model).dep
    found, offset, groups = [], 0, 0
    for group in dep.groups:
        slots = _member_slots(group, dep.view, trainable) \
            if group.prunable and not group.approximate else []
        if not slots:
            continue
        found += [(s.tensor, s.axis, s.span, np.where(group.members[s] >= 0,
                                                       group.members[s] + offset, -1))
                  for s in slots]
        offset += group.units
        groups += 1
    slices = tuple((name, axis, span, np.where(index >= 0, index, offset))
                   for name, axis, span, index in found)
    return Coupled(slices, offset, groups)


def _split(value: jax.Array, axis: int, span: int) -> jax.Array:
    """`value` as [before, the merged axes, after]."""
    shape = value.shape
    axis %= value.ndim
    return value.reshape(int(np.prod(shape[:axis])), int(np.prod(shape[axis:axis + span])),
                         int(np.prod(shape[axis + span:])))


def _norms(coupled: Coupled, trainable: dict) -> jax.Array:
    """‖w_u‖ of every unit, and a last entry for the entries of no unit."""
    squares = jnp.zeros(coupled.units + 1, jnp.float32)
    for name, axis, span, index in coupled.slices:
        per_entry = jnp.sum(jnp.square(_split(trainable[name], axis, span)), axis=(0, 2))
        squares = squares.at[index].add(per_entry.astype(jnp.float32))
    return jnp.sqrt(squares)


def make_prox(coupled: Coupled) -> Callable[[dict, float], dict]:
    """`prox(trainable, threshold)`: every unit shrunk by max(0, 1 − threshold/‖w_u‖)."""

    def prox(trainable: dict, threshold: float) -> dict:
        norms = _norms(coupled, trainable)
        factor = jnp.maximum(0.0, 1.0 - threshold / jnp.maximum(norms, 1e-30))
        factor = factor.at[coupled.units].set(1.0)
        result = dict(trainable)
        for name, axis, span, index in coupled.slices:
            value = result[name]
            scaled = _split(value, axis, span) * factor[index][None, :, None]
            result[name] = scaled.reshape(value.shape).astype(value.dtype)
        return result

    return prox


def make_penalty(coupled: Coupled) -> Callable[[dict], float]:
    """`penalty(trainable)`: Σ_u ‖w_u‖ over every unit."""
    norms = jit(lambda trainable: _norms(coupled, trainable)[:-1].sum())
    return lambda trainable: float(norms(trainable))


def zero_units(coupled: Coupled, trainable: dict) -> int:
    """How many units have every coupled weight exactly zero."""
    norms = np.asarray(_norms(coupled, trainable))[:-1]
    return int(np.count_nonzero(norms == 0))
