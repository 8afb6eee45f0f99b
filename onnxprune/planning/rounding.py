"""Rounding: kept counts are multiples of `round_to` channels, never below
`min_channels`; low scores go first."""

from __future__ import annotations

import math

import numpy as np

from ..depgraph import Group, Role
from .options import PlanOptions


def step_units(group: Group, round_to: int) -> int:
    """Units per rounding step, so kept channels are multiples of round_to. A group
    smaller than one step that holds only part of its producers' output channels (a
    channel shuffle splits a layer's channels by path) cannot make the layer's count a
    multiple anyway: it steps by the largest power-of-two fraction of the step that
    fits in it twice, so it can still lose channels."""
    step = max(1, round_to // math.gcd(round_to, group.channels_per_unit))
    if group.units < step and _fragment(group):
        while step > 1 and 2 * step > group.units:
            step //= 2
    return step


def _fragment(group: Group) -> bool:
    """Whether some producer weight axis of the group has indices of other groups."""
    return any(bool((group.members[slot] < 0).any()) for slot in group.slots(Role.OUT))


def rounded_keep(group: Group, keep: float, options: PlanOptions, round_to: int) -> int:
    """Kept unit count: rounded to a step, within [min_channels, units]. Asking to
    keep everything keeps everything, whatever the rounding."""
    step = step_units(group, round_to)
    if keep >= group.units:
        return group.units
    kept = math.floor(keep / step + 0.5) * step
    floor = max(step, math.ceil(options.min_channels / group.channels_per_unit))
    return int(min(group.units, max(kept, floor)))


def levels(group: Group, options: PlanOptions, round_to: int) -> list[int]:
    """Removable unit counts of a group, from 0 to its cap, one rounding step apart."""
    counts = {0}
    for keep in range(group.units, -1, -step_units(group, round_to)):
        kept = rounded_keep(group, keep, options, round_to)
        if group.units - kept <= options.max_ratio * group.units:
            counts.add(group.units - kept)
    return sorted(counts)


def lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` lowest scores, ties broken by index, sorted."""
    order = np.lexsort((np.arange(len(scores)), scores))
    return np.sort(order[:count])
