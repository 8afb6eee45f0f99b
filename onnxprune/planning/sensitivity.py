"""The sensitivity planner: each channel group gets its own ratio from the measured
change of the outputs when it alone loses its lowest-ranked units (`curves.py`), under
a MACs budget — `--target-macs`, or what the uniform plan at `--ratio` keeps."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..depgraph import Group
from ..errors import InputError
from .curves import first_samples, measure_curves
from .cuts import Scores, fixed_cut, removals_at, uniform_cut
from .options import CHANNEL_KINDS, PlanOptions
from .problem import Planned, Problem, Removed
from .rounding import levels, lowest


def sensitivity(problem: Problem) -> Planned:
    """Per-group ratios from measured sensitivity, under the MACs budget of the target or
    of the uniform plan at the ratio."""
    options, price, round_to = problem.options, problem.price, problem.round_to
    fixed = fixed_cut(problem)
    channels = problem.of_kind(*CHANNEL_KINDS)
    if options.target_macs is not None:
        budget = options.target_macs * price(None).macs
    else:
        uniform = uniform_cut(channels, problem.scores, options.ratio or 0.0, options, round_to)
        budget = price(fixed | uniform).macs
    analysis = problem.analysis
    curves = measure_curves(analysis.dep, analysis.proto, channels,
                            removals_at(problem.scores, options, round_to),
                            first_samples(analysis.stream, problem.samples),
                            executor=problem.executor)
    cut = allocate(channels, {c.group: c.error_at for c in curves}, problem.scores, options,
                   round_to, lambda cut: price(fixed | cut).macs, budget)
    return Planned(problem.plan(fixed | cut), curves=curves)


def allocate(groups: list[Group], curves: dict[int, Callable[[int], float]], scores: Scores,
             options: PlanOptions, round_to: int, macs: Callable[[Removed], int],
             budget: float) -> Removed:
    """Different ratios for different groups under a MACs budget: starting from the
    dense model, repeatedly take the cut (to any rounded level of any group) that adds
    the least squared output error per MAC saved, until the budget is met."""
    steps = {g.id: levels(g, options, round_to) for g in groups}
    dense = macs({})
    saved = {g.id: [dense - macs({g.id: lowest(scores[g.id], n)}) for n in steps[g.id]]
             for g in groups}
    cost = {g.id: [curves[g.id](n) ** 2 for n in steps[g.id]] for g in groups}
    at = {g.id: 0 for g in groups}
    removed: Removed = {}
    while macs(removed) > budget:
        move = _cheapest_move(at, saved, cost)
        if move is None:
            raise InputError("the MACs target cannot be reached: even pruning every group to "
                             f"its cap (ratio {options.max_ratio:.2f}) keeps more")
        gid = move[0]
        at[gid] += 1  # one step toward the cheapest level, so the budget is not overshot
        removed[gid] = lowest(scores[gid], steps[gid][at[gid]])
    return removed


def _cheapest_move(at: dict[int, int], saved: dict[int, list], cost: dict[int, list]
                   ) -> tuple[int, int] | None:
    """(group, level) whose step from its current level costs least per MAC saved."""
    best, move = math.inf, None
    for gid, level in at.items():
        for target in range(level + 1, len(saved[gid])):
            gain = saved[gid][target] - saved[gid][level]
            if gain <= 0:
                continue
            slope = max(cost[gid][target] - cost[gid][level], 0.0) / gain
            if slope < best:
                best, move = slope, (gid, target)
    return move
