"""Importance criteria: a score per unit of a group; low scores go first."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import InputError
from .activation import activation, apoz, variance, wanda
from .magnitude import bn_scale, l1, l2, random_scores, zero

Criterion = Callable[..., np.ndarray]  # (group, view, rng, stats) -> score per unit

CRITERIA: dict[str, Criterion] = {
    "l1": l1,
    "l2": l2,
    "bn_scale": bn_scale,
    "random": random_scores,
    "zero": zero,
    "activation": activation,
    "apoz": apoz,
    "variance": variance,
    "wanda": wanda,
    # Ranks units inside a group by wanda; the planner allocates ratios per group from
    # measured output sensitivity (criteria/sensitivity.py).
    "sensitivity": wanda,
}
DATA_AWARE = {"activation", "apoz", "variance", "wanda", "sensitivity"}


def get(name: str) -> Criterion:
    """The criterion called `name`, or a clear error listing the known ones."""
    if name not in CRITERIA:
        raise InputError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[name]


__all__ = ["CRITERIA", "DATA_AWARE", "Criterion", "get"]
