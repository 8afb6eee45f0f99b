"""Planning: which units of which groups to remove.

A plan is built from per-unit scores. Per-group mode removes the same fraction
from every group; global mode ranks units across groups (scores are mean-
normalized per member, so they compare) under a per-group cap. Kept counts are
rounded to multiples of `round_to` channels and never drop below `min_channels`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .depgraph import DepGraph, Group, Role
from .errors import InputError

# Kept channel counts are multiples of this by default: onnxruntime's CPU
# convolutions run in blocked NCHWc layouts of 8 (AVX2) or 16 (AVX-512) channels,
# and counts off those multiples run padded blocks or slower kernels (measured by
# tools/bench_prune.py; see README). 16 serves both instruction sets.
DEFAULT_ROUND_TO = 16
CHANNEL_KINDS = ("channel", "neuron")


@dataclass
class PlanOptions:
    """What the user asked for."""

    ratio: float | None = None
    target_macs: float | None = None
    head_ratio: float | None = None
    hidden_ratio: float | None = None
    criterion: str = "l1"
    global_ranking: bool = False
    max_ratio: float = 0.9
    round_to: int | None = None
    min_channels: int = 1
    ignore: tuple[str, ...] = ()
    seed: int = 0
    target_latency: float | None = None
    target_energy: float | None = None
    provider: str = "CPUExecutionProvider"
    threads: int = 0

    def target(self) -> tuple[str, float] | None:
        """The budget asked for, as (what, fraction of the dense model), if any."""
        for what, value in (("macs", self.target_macs), ("latency", self.target_latency),
                            ("energy", self.target_energy)):
            if value is not None:
                return what, value
        return None

    def validate(self) -> None:
        given = [v for v in (self.ratio, self.target_macs, self.target_latency,
                             self.target_energy) if v is not None]
        if len(given) > 1:
            raise InputError("give only one of --ratio, --target-macs, --target-latency and "
                             "--target-energy")
        if not given and self.head_ratio is None and self.hidden_ratio is None:
            raise InputError("give --ratio, --target-macs, --target-latency, --target-energy, "
                             "--head-ratio or --hidden-ratio")
        for flag, value in (("--target-latency", self.target_latency),
                            ("--target-energy", self.target_energy)):
            if value is not None and not 0.0 < value <= 1.0:
                raise InputError(f"{flag} must be in (0, 1], got {value}")
        for flag, value in (("--ratio", self.ratio), ("--head-ratio", self.head_ratio),
                            ("--hidden-ratio", self.hidden_ratio)):
            if value is not None and not 0.0 <= value < 1.0:
                raise InputError(f"{flag} must be in [0, 1), got {value}")
        if self.target_macs is not None and not 0.0 < self.target_macs <= 1.0:
            raise InputError(f"--target-macs must be in (0, 1], got {self.target_macs}")
        if not 0.0 < self.max_ratio <= 1.0:
            raise InputError(f"max ratio must be in (0, 1], got {self.max_ratio}")
        if self.round_to is not None and self.round_to < 1:
            raise InputError(f"--round-to must be at least 1, got {self.round_to}")
        if self.seed < 0:
            raise InputError(f"--seed must be at least 0, got {self.seed}")
        if self.min_channels < 1:
            raise InputError(f"--min-channels must be at least 1, got {self.min_channels}")
        for pattern in self.ignore:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InputError(f"--ignore {pattern!r} is not a valid pattern: {exc}") from None


@dataclass
class Plan:
    """Removed unit indices per group id, and why other groups were left alone."""

    removed: dict[int, np.ndarray] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)

    def kept(self, group: Group) -> int:
        return group.units - len(self.removed.get(group.id, ()))


def eligible(dep: DepGraph, options: PlanOptions) -> tuple[list[Group], dict[int, str]]:
    """Groups the plan may cut, and the reason for each one it may not."""
    groups, skipped = [], {}
    for group in dep.groups:
        reason = _skip_reason(group, options)
        if reason:
            skipped[group.id] = reason
        else:
            groups.append(group)
    return groups, skipped


def _skip_reason(group: Group, options: PlanOptions) -> str | None:
    if group.blocked:
        return group.blocked[0]
    if group.kind == "head" and options.head_ratio is None:
        return "head group: cut only by --head-ratio"
    if group.kind == "hidden" and options.hidden_ratio is None:
        return "hidden group (approximate: " + group.approximate[0] + "): cut only by " \
               "--hidden-ratio"
    if group.kind in CHANNEL_KINDS and options.ratio is None and options.target() is None:
        return f"{group.kind} group: no --ratio or --target-macs"
    for pattern in options.ignore:
        if any(_matches(pattern, name, op) for name, op in group.producers):
            return f"ignored by {pattern!r}"
    if group.units <= options.min_channels:
        return "no more channels than --min-channels"
    return None


def _matches(pattern: str, name: str, op: str) -> bool:
    return pattern in (name, op) or re.fullmatch(pattern, name) is not None


def step_units(group: Group, round_to: int) -> int:
    """Units per rounding step, so kept channels are multiples of round_to. A group
    smaller than one step that holds only part of its producers' output channels (a
    channel shuffle splits a layer's channels by path) cannot make the layer's count a
    multiple anyway: it steps by the largest power-of-two fraction of the step that
    fits in it twice, so it can still lose channels."""
    step = max(1, round_to // math.gcd(round_to, group.channels))
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
    floor = max(step, math.ceil(options.min_channels / group.channels))
    return int(min(group.units, max(kept, floor)))


def lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` lowest scores, ties broken by index, sorted."""
    order = np.lexsort((np.arange(len(scores)), scores))
    return np.sort(order[:count])


def plan_uniform(groups: list[Group], scores: dict[int, np.ndarray], ratio: float,
                 options: PlanOptions, round_to: int) -> dict[int, np.ndarray]:
    """Remove `ratio` of the units of every group."""
    removed = {}
    for group in groups:
        kept = rounded_keep(group, group.units * (1.0 - ratio), options, round_to)
        if kept < group.units:
            removed[group.id] = lowest(scores[group.id], group.units - kept)
    return removed


def plan_global(groups: list[Group], scores: dict[int, np.ndarray], ratio: float,
                options: PlanOptions, round_to: int) -> dict[int, np.ndarray]:
    """Remove the globally lowest-scoring `ratio` of all channels, capped per group."""
    entries = [(score, group.id, unit) for group in groups
               for unit, score in enumerate(scores[group.id])]
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    by_id = {g.id: g for g in groups}
    budget = ratio * sum(g.units * g.channels for g in groups)
    cut: dict[int, int] = {}
    spent = 0.0
    for _, gid, _ in entries:
        if spent >= budget:
            break
        group = by_id[gid]
        if cut.get(gid, 0) + 1 > options.max_ratio * group.units:
            continue
        cut[gid] = cut.get(gid, 0) + 1
        spent += group.channels
    removed = {}
    for gid, count in cut.items():
        group = by_id[gid]
        kept = rounded_keep(group, group.units - count, options, round_to)
        if kept < group.units:
            removed[gid] = lowest(scores[gid], group.units - kept)
    return removed


def plan_zero(groups: list[Group], scores: dict[int, np.ndarray], options: PlanOptions,
              round_to: int) -> dict[int, np.ndarray]:
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


def search_ratio(fits: Callable[[float], bool], high: float, what: str = "MACs") -> float:
    """Smallest ratio in [0, high] for which `fits` holds (bisection)."""
    if not fits(high):
        raise InputError(f"the {what} target cannot be reached: even pruning every group to "
                         f"its cap (ratio {high:.2f}) keeps more")
    low = 0.0
    for _ in range(30):
        mid = (low + high) / 2
        if fits(mid):
            high = mid
        else:
            low = mid
    return high


def plan_by_sensitivity(groups: list[Group], curves: dict[int, Callable[[int], float]],
                        scores: dict[int, np.ndarray], options: PlanOptions, round_to: int,
                        macs: Callable[[dict[int, np.ndarray]], int], budget: float
                        ) -> dict[int, np.ndarray]:
    """Different ratios for different groups under a MACs budget: starting from the
    dense model, repeatedly take the cut (to any rounded level of any group) that adds
    the least squared output error per MAC saved, until the budget is met."""
    levels = {g.id: _levels(g, options, round_to) for g in groups}
    dense = macs({})
    saved = {g.id: [dense - macs({g.id: lowest(scores[g.id], n)}) for n in levels[g.id]]
             for g in groups}
    cost = {g.id: [curves[g.id](n) ** 2 for n in levels[g.id]] for g in groups}
    at = {g.id: 0 for g in groups}
    removed: dict[int, np.ndarray] = {}
    while macs(removed) > budget:
        move = _cheapest_move(at, saved, cost)
        if move is None:
            raise InputError("the MACs target cannot be reached: even pruning every group to "
                             f"its cap (ratio {options.max_ratio:.2f}) keeps more")
        gid = move[0]
        at[gid] += 1  # one step toward the cheapest level, so the budget is not overshot
        removed[gid] = lowest(scores[gid], levels[gid][at[gid]])
    return removed


def _levels(group: Group, options: PlanOptions, round_to: int) -> list[int]:
    """Removable unit counts of a group, from 0 to its cap, one rounding step apart."""
    counts = {0}
    for keep in range(group.units, -1, -step_units(group, round_to)):
        kept = rounded_keep(group, keep, options, round_to)
        if group.units - kept <= options.max_ratio * group.units:
            counts.add(group.units - kept)
    return sorted(counts)


def _cheapest_move(at: dict[int, int], saved: dict[int, list], cost: dict[int, list]):
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
