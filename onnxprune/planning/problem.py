"""What planners plan over (`Problem`) and what they return (`Planned`, holding the
`Plan`: removed unit indices per group), and which groups a plan may cut."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..depgraph import DepGraph, Group
from .options import CHANNEL_KINDS, PlanOptions

if TYPE_CHECKING:
    from ..analysis import Analysis
    from ..cost import Cost
    from ..distributed import Executor
    from .budgets import Meter
    from .curves import Curve

Removed = dict[int, np.ndarray]


@dataclass
class Plan:
    """Removed unit indices per group id, and why other groups were left alone."""

    removed: Removed = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)

    def kept(self, group: Group) -> int:
        return group.units - len(self.removed.get(group.id, ()))


@dataclass(frozen=True)
class Problem:
    """Everything a planner decides from: the eligible groups and their unit scores,
    the options and the rounding in force, the cost of a cut, the budget of the
    options' target as a meter (None: a ratio) and, for measuring planners, the
    analysis, the calibration samples a measurement runs on and the executor the
    measurements run as tasks of (None: in-process)."""

    groups: list[Group]
    skipped: dict[int, str]
    scores: dict[int, np.ndarray]
    options: PlanOptions
    round_to: int
    price: Callable[[Removed | None], Cost]
    meter: Meter | None
    analysis: Analysis
    samples: int
    executor: Executor | None = None

    def of_kind(self, *kinds: str) -> list[Group]:
        return [g for g in self.groups if g.kind in kinds]

    def plan(self, removed: Removed) -> Plan:
        return Plan(removed, self.skipped)


@dataclass(frozen=True)
class Planned:
    """A planner's plan, what its budget reports (`target`), the sensitivity curves it
    measured, and the rounding chosen for the options (None: as they say)."""

    plan: Plan
    target: dict | None = None
    curves: list[Curve] | None = None
    round_to: int | None = None


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
    lossless = options.criterion == "zero"  # zero units go, whatever the ratios
    if group.kind == "head" and options.head_ratio is None and not lossless:
        return "head group: cut only by --head-ratio"
    if group.kind == "hidden" and options.hidden_ratio is None:
        return "hidden group (approximate: " + group.approximate[0] + "): cut only by " \
               "--hidden-ratio"
    if group.kind in CHANNEL_KINDS and options.ratio is None and options.target() is None \
            and not lossless:
        return f"{group.kind} group: no --ratio or --target-macs"
    for pattern in options.ignore:
        if any(_matches(pattern, name, op) for name, op in group.producers):
            return f"ignored by {pattern!r}"
    if group.units <= options.min_channels:
        return "no more channels than --min-channels"
    return None


def _matches(pattern: str, name: str, op: str) -> bool:
    return pattern in (name, op) or re.fullmatch(pattern, name) is not None
