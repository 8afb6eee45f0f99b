"""Pruning criteria: a score per unit (channel, neuron, head) of a group; low scores go
first. Each criterion is registered once in `CRITERIA`, saying whether it needs
calibration data, and how it gathers its evidence: activation statistics by default,
or gradients through the JAX translation (`gradient.py`, imported only when used: the
`train` extra). (Which single weights `sparsify` zeroes: `sparsity/weight_criteria.py`.)"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..depgraph import GraphView, Group
from ..errors import InputError
from .activation import activation, apoz, variance, wanda
from .magnitude import bn_scale, l1, l2, random_scores, zero

Score = Callable[..., np.ndarray]  # (group, view, rng, evidence) -> score per unit
# (groups, source of activation statistics, rng) -> evidence for every group at once
Measure = Callable[[list[Group], object, np.random.Generator], object]


@dataclass(frozen=True)
class Criterion:
    """A named score per unit; `needs_data`: it reads calibration data, through
    `measure` when given (else activation statistics); `extra`: the optional
    dependency it needs."""

    name: str
    score: Score
    needs_data: bool = False
    measure: Measure | None = None
    extra: str | None = None


def _gradients(name: str) -> Measure:
    """The gradient pass of criterion `name` (`gradient.py`, imported when used)."""

    def measure(groups: list[Group], source, rng: np.random.Generator) -> dict:
        from .gradient import evidence
        return evidence(name, groups, source.analysis, int(rng.integers(2 ** 31)))
    return measure


def _measured(group: Group, view: GraphView, rng, evidence: dict) -> np.ndarray:
    return evidence[group.id]


def _gradient(name: str) -> Criterion:
    return Criterion(name, _measured, needs_data=True, measure=_gradients(name), extra="train")


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
    _gradient("taylor"),
    _gradient("fisher"),
    _gradient("snip"),
)}


def get(name: str) -> Criterion:
    """The criterion called `name`, or a clear error listing the known ones."""
    if name not in CRITERIA:
        raise InputError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[name]


def check_available(criterion: Criterion) -> None:
    """Refuse, naming the extra, a criterion whose optional dependency is missing."""
    if criterion.extra == "train" and importlib.util.find_spec("jax") is None:
        raise InputError(f"criterion {criterion.name!r} needs JAX: "
                         "pip install 'onnxprune[train]'")


def scores(criterion: Criterion, groups: list[Group], view: GraphView,
           rng: np.random.Generator, stats_of: Callable[[list[Group]], object]
           ) -> dict[int, np.ndarray]:
    """Each group's unit scores, in order (`stats_of(groups)` is asked for activation
    statistics only when the criterion needs them; a criterion with its own `measure`
    gathers its evidence from `stats_of`'s analysis)."""
    if criterion.measure is not None:
        stats = criterion.measure(groups, stats_of, rng) if groups else {}
    else:
        stats = stats_of(groups) if criterion.needs_data else None
    return {g.id: criterion.score(g, view, rng, stats) for g in groups}


__all__ = ["CRITERIA", "Criterion", "check_available", "get", "scores"]
