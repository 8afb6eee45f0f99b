"""Budgets a plan must fit: MACs, energy and latency, each as a fraction of the dense
model. A *meter* maps removed units to that fraction; `settle` turns a planner
(`plan_at(fraction)`) into the final plan — directly for MACs and energy, in a
closed loop on measured latency for latency.

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
from dataclasses import dataclass, field

import numpy as np

from .cost import Cost

Removed = dict[int, np.ndarray]


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


@dataclass
class Meter:
    """A budget: `fraction(removed)` of the dense model, and how to settle a plan."""

    name: str
    fraction: Callable[[Removed], float]
    outcome: dict = field(default_factory=dict)

    def __call__(self, removed: Removed) -> float:
        return self.fraction(removed)

    def prepare(self, removed_at: Callable[[float], Removed], max_ratio: float = 0.9) -> None:
        """Called once before planning with the planner's units at a uniform ratio (up
        to `max_ratio`)."""

    def settle(self, plan_at: Callable[[float], object], target: float):
        self.outcome["target"] = target
        return plan_at(target)


def macs_meter(price: Callable[[Removed | None], Cost]) -> Meter:
    dense = max(price(None).macs, 1)
    return Meter("MACs", lambda removed: price(removed).macs / dense)


def energy_meter(price: Callable[[Removed | None], Cost],
                 model: EnergyModel | None = None) -> Meter:
    model = model or EnergyModel()
    dense = max(model.joules(price(None)), 1e-30)
    meter = Meter("energy", lambda removed: model.joules(price(removed)) / dense)
    meter.outcome = {"dense_joules": dense}
    return meter
