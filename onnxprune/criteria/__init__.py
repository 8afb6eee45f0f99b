"""Pruning criteria: a score per unit (channel, neuron, head) of a group; low scores go
first. Each criterion is registered once in `CRITERIA`, saying whether it needs
activation statistics from calibration data. (Which single weights `sparsify` zeroes:
`sparsity/weight_criteria.py`.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..depgraph import GraphView, Group
from ..errors import InputError
from .activation import activation, apoz, variance, wanda
from .magnitude import bn_scale, l1, l2, random_scores, zero

Score = Callable[..., np.ndarray]  # (group, view, rng, stats) -> score per unit


@dataclass(frozen=True)
class Criterion:
    """A named score per unit; `needs_data`: it reads activation statistics."""

    name: str
    score: Score
    needs_data: bool = False


CRITERIA: dict[str, Criterion] = {c.name: c for c in (
    Criterion("l1", l1),
    Criterion("l2", l2),
    Criterion("bn_scale", bn_scale),
    Criterion("random", random_scores),
    Criterion("zero", zero),
    Criterion("activation", activation, needs_data=True),
    Criterion("apoz", apoz, needs_data=True),
    Criterion("variance", variance, needs_data=True),
    Criterion("wanda", wanda, needs_data=True),
)}


def get(name: str) -> Criterion:
    """The criterion called `name`, or a clear error listing the known ones."""
    if name not in CRITERIA:
        raise InputError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[name]


def scores(criterion: Criterion, groups: list[Group], view: GraphView,
           rng: np.random.Generator, stats_of: Callable[[list[Group]], object]
           ) -> dict[int, np.ndarray]:
    """Each group's unit scores, in order (`stats_of(groups)` is asked for activation
    statistics only when the criterion needs them)."""
    stats = stats_of(groups) if criterion.needs_data else None
    return {g.id: criterion.score(g, view, rng, stats) for g in groups}


__all__ = ["CRITERIA", "Criterion", "get", "scores"]
