"""Budgets a plan must fit: MACs, energy and latency, each as a fraction of the dense
model. Every budget is a *meter* with one interface (`Meter`): it maps removed units
to that fraction, may call for a rounding, is prepared with the planner's cuts at
uniform ratios, and `settle` turns a planner (`plan_at(fraction)`) into the final plan
and what the report says of it — directly for MACs and energy, in a closed loop on
measured latency for latency (`latency.py`).

Energy model (Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, 45 nm, 0.9 V): a 32-bit float multiply costs 3.7 pJ and an add 0.9 pJ,
so a float MAC 4.6 pJ; reading 64 bits from DRAM 1.3–2.6 nJ (≈ 160 pJ per byte at
the low end) and from a 1 MB cache 100 pJ (12.5 pJ per byte). Weights are read once
from DRAM; activations are written and read once through a large cache; values are
4-byte floats. Only relative energy matters to a budget, so the constants set how
MACs and memory traffic weigh against each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..cost import Cost
from ..errors import InputError
from .options import PlanOptions
from .problem import Plan, Removed

if TYPE_CHECKING:
    from ..analysis import Analysis, Pricer

RemovedAt = Callable[[float], Removed]
Candidates = Callable[[], list[tuple[int, int, int]]]


@dataclass(frozen=True)
class EnergyModel:
    """Picojoules per MAC and per byte moved (Horowitz 2014, 45 nm)."""

    mac_pj: float = 3.7 + 0.9
    dram_pj_per_byte: float = 1300 / 8
    cache_pj_per_byte: float = 100 / 8
    bytes_per_value: int = 4

    def joules(self, cost: Cost) -> float:
        """Energy of one inference: MACs, weights from DRAM, activations via cache."""
        picojoules = (cost.macs * self.mac_pj
                      + cost.params * self.bytes_per_value * self.dram_pj_per_byte
                      + cost.activations * self.bytes_per_value * self.cache_pj_per_byte)
        return picojoules * 1e-12


class Meter(Protocol):
    """A budget: the fraction of the dense model a cut keeps, and how a plan settles."""

    name: str

    def __call__(self, removed: Removed) -> float: ...

    def rounding(self, candidates: Candidates) -> int | None:
        """The rounding this budget calls for, from `candidates()`: (group id, units,
        MACs one unit costs) of the channel groups of one channel per unit; None for
        no preference."""

    def prepare(self, removed_at: RemovedAt, max_ratio: float) -> None:
        """Called once before planning with the planner's cut at a uniform ratio (up to
        `max_ratio`)."""

    def settle(self, plan_at: Callable[[float], Plan], target: float
               ) -> tuple[Plan, dict | None]:
        """The plan for `target`, and what the report's `target` says (None: nothing)."""


@dataclass(frozen=True)
class ClosedForm:
    """A budget computed from the cost model: `fraction(removed)` of the dense model;
    `report` (with the target added) is what the report shows, if anything."""

    name: str
    fraction: Callable[[Removed], float]
    report: dict | None = None

    def __call__(self, removed: Removed) -> float:
        return self.fraction(removed)

    def rounding(self, candidates: Candidates) -> int | None:
        return None

    def prepare(self, removed_at: RemovedAt, max_ratio: float) -> None:
        return None

    def settle(self, plan_at: Callable[[float], Plan], target: float
               ) -> tuple[Plan, dict | None]:
        plan = plan_at(target)
        return plan, None if self.report is None else dict(self.report, target=target)


def macs_meter(price: Callable[[Removed | None], Cost]) -> ClosedForm:
    """The MACs budget: MACs kept over the dense model's."""
    dense = max(price(None).macs, 1)
    return ClosedForm("MACs", lambda removed: price(removed).macs / dense)


def energy_meter(price: Callable[[Removed | None], Cost],
                 model: EnergyModel | None = None) -> ClosedForm:
    """The energy budget: joules of the energy model kept over the dense model's."""
    model = model or EnergyModel()
    dense = max(model.joules(price(None)), 1e-30)
    return ClosedForm("energy", lambda removed: model.joules(price(removed)) / dense,
                      {"dense_joules": dense})


def _latency(analysis: Analysis, price: Pricer, options: PlanOptions, quiet: bool) -> Meter:
    from .latency import latency_meter

    return latency_meter(analysis, price, options, quiet)


METERS: dict[str, Callable[[Analysis, Pricer, PlanOptions, bool], Meter]] = {
    "macs": lambda analysis, price, options, quiet: macs_meter(price),
    "latency": _latency,
    "energy": lambda analysis, price, options, quiet: energy_meter(price),
}


def meter_for(options: PlanOptions, analysis: Analysis, price: Pricer,
              quiet: bool = True) -> Meter | None:
    """The budget of the options' target as a meter (None for a ratio)."""
    target = options.target()
    return None if target is None else METERS[target[0]](analysis, price, options, quiet)


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
