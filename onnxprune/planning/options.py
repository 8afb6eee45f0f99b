"""What decides a plan: the planning options a plan file records, checked when made."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import InputError

# Kept channel counts are multiples of this by default: onnxruntime's CPU
# convolutions run in blocked NCHWc layouts of 8 (AVX2) or 16 (AVX-512) channels,
# and counts off those multiples run padded blocks or slower kernels (measured by
# tools/bench_prune.py; see README). 16 serves both instruction sets.
DEFAULT_ROUND_TO = 16
CHANNEL_KINDS = ("channel", "neuron")
TARGETS = ("macs", "latency", "energy")


@dataclass(frozen=True)
class PlanOptions:
    """What the user asked the plan to do (in the order plan files record it)."""

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

    def __post_init__(self) -> None:
        _check_goal(self)
        _check_ranges(self)
        _check_patterns(self.ignore)

    def target(self) -> tuple[str, float] | None:
        """The budget asked for, as (what, fraction of the dense model), if any."""
        for what in TARGETS:
            value = getattr(self, f"target_{what}")
            if value is not None:
                return what, value
        return None

    @property
    def rounding(self) -> int:
        """The rounding in force: `round_to`, or the default."""
        return DEFAULT_ROUND_TO if self.round_to is None else self.round_to

    def rounded_to(self, chosen: int | None) -> PlanOptions:
        """These options with a rounding chosen for them (as a plan file records it)."""
        return self if chosen is None else replace(self, round_to=chosen)


def _check_goal(options: PlanOptions) -> None:
    given = [v for v in (options.ratio, options.target_macs, options.target_latency,
                         options.target_energy) if v is not None]
    if len(given) > 1:
        raise InputError("give only one of --ratio, --target-macs, --target-latency and "
                         "--target-energy")
    if not given and options.head_ratio is None and options.hidden_ratio is None \
            and options.criterion != "zero":  # zero removes every zero unit, at no ratio
        raise InputError("give --ratio, --target-macs, --target-latency, --target-energy, "
                         "--head-ratio or --hidden-ratio")


def _check_ranges(options: PlanOptions) -> None:
    for flag, value in (("--target-latency", options.target_latency),
                        ("--target-energy", options.target_energy)):
        if value is not None and not 0.0 < value <= 1.0:
            raise InputError(f"{flag} must be in (0, 1], got {value}")
    for flag, value in (("--ratio", options.ratio), ("--head-ratio", options.head_ratio),
                        ("--hidden-ratio", options.hidden_ratio)):
        if value is not None and not 0.0 <= value < 1.0:
            raise InputError(f"{flag} must be in [0, 1), got {value}")
    if options.target_macs is not None and not 0.0 < options.target_macs <= 1.0:
        raise InputError(f"--target-macs must be in (0, 1], got {options.target_macs}")
    if not 0.0 < options.max_ratio <= 1.0:
        raise InputError(f"max ratio must be in (0, 1], got {options.max_ratio}")
    if options.round_to is not None and options.round_to < 1:
        raise InputError(f"--round-to must be at least 1, got {options.round_to}")
    if options.seed < 0:
        raise InputError(f"--seed must be at least 0, got {options.seed}")
    if options.min_channels < 1:
        raise InputError(f"--min-channels must be at least 1, got {options.min_channels}")


def _check_patterns(patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InputError(f"--ignore {pattern!r} is not a valid pattern: {exc}") from None
