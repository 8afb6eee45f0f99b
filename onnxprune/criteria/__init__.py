"""Importance criteria: a score per unit of a group; low scores go first."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..depgraph import GraphView, Group
from ..errors import InputError
from .magnitude import bn_scale, l1, l2, random_scores, zero

Criterion = Callable[[Group, GraphView, np.random.Generator], np.ndarray]

CRITERIA: dict[str, Criterion] = {
    "l1": l1,
    "l2": l2,
    "bn_scale": bn_scale,
    "random": random_scores,
    "zero": zero,
}


def get(name: str) -> Criterion:
    """The criterion called `name`, or a clear error listing the known ones."""
    if name not in CRITERIA:
        raise InputError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[name]


__all__ = ["CRITERIA", "Criterion", "get"]
