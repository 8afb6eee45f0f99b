"""Planners, looked up by name in `PLANNERS`: each turns a `Problem` into a `Planned`.

- `uniform`: the same fraction of every channel group (the ratio, or the one a
  budget calls for);
- `global`: units ranked across groups, at most `max_ratio` of any group (`--global`);
- `zero`: only the units that score zero (`--criterion zero`);
- `sensitivity`: each group its own ratio from measured output error (`--criterion
  sensitivity`; units ranked by wanda; `sensitivity.py`).

Heads and hidden groups are cut at their own ratios by every planner but `zero`. A
planner chosen by a `--criterion` spelling names the criterion that ranks its units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .. import criteria
from ..errors import InputError
from .budgets import meter_for, search_ratio
from .cuts import fixed_cut, global_cut, uniform_cut, zero_cut
from .options import CHANNEL_KINDS, TARGETS, PlanOptions
from .problem import Plan, Planned, Problem, eligible
from .sensitivity import sensitivity

if TYPE_CHECKING:
    from ..analysis import Analysis, Pricer
    from ..distributed import Executor


@dataclass(frozen=True)
class Planner:
    """A planning strategy. `criterion`: the `--criterion` spelling that chooses it
    (None: chosen by `--global` or its absence); `ranks_by`: the criterion that ranks
    units for it (None: its spelling); `targets`: the budgets it plans against."""

    name: str
    plan: Callable[[Problem], Planned]
    criterion: str | None = None
    ranks_by: str | None = None
    targets: tuple[str, ...] = TARGETS


def uniform(problem: Problem) -> Planned:
    """The same fraction of every channel group."""
    return _by_ratio(problem, uniform_cut)


def global_ranking(problem: Problem) -> Planned:
    """The lowest-scoring units across channel groups, capped per group."""
    return _by_ratio(problem, global_cut)


def zero(problem: Problem) -> Planned:
    """Only the units that score zero, in every eligible group."""
    return Planned(problem.plan(zero_cut(problem.groups, problem.scores, problem.options,
                                         problem.round_to)))


def _by_ratio(problem: Problem, cut: Callable[..., dict]) -> Planned:
    """Channel groups cut by `cut` at the ratio or, with a target, at the smallest ratio
    whose plan fits the budget (settled by its meter); heads and hidden groups at theirs."""
    options, meter, fixed = problem.options, problem.meter, fixed_cut(problem)
    channels = problem.of_kind(*CHANNEL_KINDS)

    def removed_at(ratio: float) -> dict[int, np.ndarray]:
        return fixed | cut(channels, problem.scores, ratio, options, problem.round_to)

    if meter is None:
        return Planned(problem.plan(removed_at(options.ratio or 0.0)))

    def plan_at(goal: float) -> Plan:
        ratio = search_ratio(lambda r: meter(removed_at(r)) <= goal, options.max_ratio,
                             meter.name)
        return problem.plan(removed_at(ratio))

    meter.prepare(removed_at, options.max_ratio)
    plan, outcome = meter.settle(plan_at, options.target()[1])
    return Planned(plan, target=outcome)


PLANNERS: dict[str, Planner] = {p.name: p for p in (
    Planner("uniform", uniform),
    Planner("global", global_ranking),
    Planner("zero", zero, criterion="zero"),
    Planner("sensitivity", sensitivity, criterion="sensitivity", ranks_by="wanda",
            targets=("macs",)),
)}


def criterion_names() -> list[str]:
    """Every `--criterion` spelling: the criteria, then the planners chosen by name."""
    spelled = [p.criterion for p in PLANNERS.values() if p.criterion]
    return list(criteria.CRITERIA) + [name for name in spelled if name not in criteria.CRITERIA]


def ranking(spelling: str) -> criteria.Criterion:
    """The criterion that ranks units for a `--criterion` spelling."""
    if spelling not in criterion_names():
        raise InputError(f"unknown criterion {spelling!r}; choose one of "
                         f"{', '.join(criterion_names())}")
    planner = _spelled(spelling)
    return criteria.get(planner.ranks_by if planner and planner.ranks_by else spelling)


def _spelled(spelling: str) -> Planner | None:
    """The planner a `--criterion` spelling chooses, if any."""
    return next((p for p in PLANNERS.values() if p.criterion == spelling), None)


def planner_for(options: PlanOptions) -> Planner:
    """The planner the options choose; refused when it cannot plan against their target."""
    ranking(options.criterion)
    chosen = _spelled(options.criterion) or PLANNERS["global" if options.global_ranking
                                                     else "uniform"]
    target = options.target()
    if target is not None and target[0] not in chosen.targets:
        allowed = " or ".join(["--ratio"] + [f"--target-{t}" for t in chosen.targets])
        raise InputError(f"--criterion {options.criterion} plans against {allowed}")
    return chosen


def plan(analysis: Analysis, options: PlanOptions, price: Pricer,
         stats_of: Callable[[list], object], samples: int, quiet: bool = True,
         forced: dict[int, np.ndarray] | None = None, executor: Executor | None = None
         ) -> Planned:
    """Score the eligible groups and plan them with the planner the options choose,
    under the budget of their target (whose meter may choose the rounding). `forced`:
    units that score below every other (removed first: an earlier round's cut);
    measuring planners run their measurements as tasks of `executor` (None: in-process)."""
    planner = planner_for(options)
    meter = meter_for(options, analysis, price, quiet)
    chosen = None
    if meter is not None and options.round_to is None:
        chosen = meter.rounding(lambda: _rounding_candidates(analysis, options, price))
    groups, skipped = eligible(analysis.dep, options)
    scores = criteria.scores(ranking(options.criterion), groups, analysis.dep.view,
                             np.random.default_rng(options.seed), stats_of)
    for gid, units in (forced or {}).items():
        if gid in scores:
            scores[gid] = np.array(scores[gid], np.float64)
            scores[gid][units] = -np.inf
    problem = Problem(groups, skipped, scores, options, options.rounded_to(chosen).rounding,
                      price, meter, analysis, samples, executor)
    return replace(planner.plan(problem), round_to=chosen)


def _rounding_candidates(analysis: Analysis, options: PlanOptions, price: Pricer
                         ) -> list[tuple[int, int, int]]:
    """(group id, units, MACs one unit costs) of the eligible channel groups of one
    channel per unit, for choosing the rounding from latency tables."""
    dense = price(None).macs
    return [(g.id, g.units, dense - price({g.id: np.arange(1)}).macs)
            for g in eligible(analysis.dep, options)[0]
            if g.kind in CHANNEL_KINDS and g.channels_per_unit == 1 and g.units > 1]
