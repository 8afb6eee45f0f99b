"""Cuts from unit scores, one rule each: the same fraction of every group (uniform),
the globally lowest units under a per-group cap (global: scores are mean-normalized
per member, so they compare), or only the units that score zero."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..depgraph import Group
from .options import PlanOptions
from .problem import Problem, Removed
from .rounding import lowest, rounded_keep, step_units

Scores = dict[int, np.ndarray]


def uniform_cut(groups: list[Group], scores: Scores, ratio: float, options: PlanOptions,
                round_to: int) -> Removed:
    """Remove `ratio` of the units of every group."""
    removed = {}
    for group in groups:
        kept = rounded_keep(group, group.units * (1.0 - ratio), options, round_to)
        if kept < group.units:
            removed[group.id] = lowest(scores[group.id], group.units - kept)
    return removed


def global_cut(groups: list[Group], scores: Scores, ratio: float, options: PlanOptions,
               round_to: int) -> Removed:
    """Remove the globally lowest-scoring `ratio` of all channels, capped per group."""
    by_id = {g.id: g for g in groups}
    removed = {}
    for gid, count in _global_counts(groups, scores, ratio, options).items():
        group = by_id[gid]
        kept = rounded_keep(group, group.units - count, options, round_to)
        if kept < group.units:
            removed[gid] = lowest(scores[gid], group.units - kept)
    return removed


def _global_counts(groups: list[Group], scores: Scores, ratio: float,
                   options: PlanOptions) -> dict[int, int]:
    """Units to remove per group, lowest scores first across groups, until `ratio` of
    all channels are gone; a group loses at most `max_ratio` of its units."""
    entries = [(score, group.id, unit) for group in groups
               for unit, score in enumerate(scores[group.id])]
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    by_id = {g.id: g for g in groups}
    budget = ratio * sum(g.units * g.channels_per_unit for g in groups)
    cut: dict[int, int] = {}
    spent = 0.0
    for _, gid, _ in entries:
        if spent >= budget:
            break
        group = by_id[gid]
        if cut.get(gid, 0) + 1 > options.max_ratio * group.units:
            continue
        cut[gid] = cut.get(gid, 0) + 1
        spent += group.channels_per_unit
    return cut


def zero_cut(groups: list[Group], scores: Scores, options: PlanOptions,
             round_to: int) -> Removed:
    """Remove only zero-scored units, rounding the removal down so kept counts stay
    multiples of the step."""
    removed = {}
    for group in groups:
        dead = np.flatnonzero(scores[group.id] == 0)
        step = step_units(group, round_to)
        kept = group.units - len(dead)
        kept = min(group.units, math.ceil(kept / step) * step if kept else step)
        count = group.units - max(kept, options.min_channels)
        if count > 0:
            removed[group.id] = np.sort(dead[:count])
    return removed


def fixed_cut(problem: Problem) -> Removed:
    """Heads and hidden groups at their own ratios, whatever plans the channels."""
    options, scores = problem.options, problem.scores
    fixed = uniform_cut(problem.of_kind("head"), scores, options.head_ratio or 0.0, options, 1)
    fixed |= uniform_cut(problem.of_kind("hidden"), scores, options.hidden_ratio or 0.0,
                         options, problem.round_to)
    return fixed


def removals_at(scores: Scores, options: PlanOptions, round_to: int
                ) -> Callable[[Group, float], np.ndarray]:
    """A function: (group, ratio) → the units a uniform cut at that ratio removes from
    that group alone (heads one at a time, other groups by the rounding)."""

    def removals(group: Group, ratio: float) -> np.ndarray:
        step = 1 if group.kind == "head" else round_to
        return uniform_cut([group], scores, ratio, options, step).get(
            group.id, np.zeros(0, np.int64))

    return removals
