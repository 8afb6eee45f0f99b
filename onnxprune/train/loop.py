"""The fine-tuning loop, over plain callables: take steps until the step or time
budget is spent or validation stops improving, and keep the best weights seen.

The loop knows nothing of models: `step()` trains once and returns the loss,
`evaluate()` measures the current weights on validation data, `snapshot()` copies
them, and `clock()` reads seconds (a fake one in tests: nothing here depends on
timing). The weights before the first step are the first candidate, so the result is
never worse on validation than its input."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STEPS, TIME, PATIENCE, DIVERGED = "steps", "time", "no improvement", "diverged"


@dataclass(frozen=True)
class Budget:
    """When to stop: after `steps` steps or `minutes` minutes (whichever comes first;
    None: no bound), or after `patience` validations without improvement (one
    validation every `every` steps)."""

    steps: int | None = None
    minutes: float | None = None
    every: int = 25
    patience: int = 8

    def spent(self, steps: int, seconds: float) -> str | None:
        """The stop reason once the budget is spent, else None."""
        if self.steps is not None and steps >= self.steps:
            return STEPS
        if self.minutes is not None and seconds >= 60.0 * self.minutes:
            return TIME
        return None

    def fraction(self, steps: int, seconds: float) -> float:
        """How much of the budget is spent, in [0, 1] (0 without a step or time bound)."""
        parts = [0.0]
        if self.steps is not None:
            parts.append(steps / self.steps)
        if self.minutes is not None:
            parts.append(seconds / (60.0 * self.minutes))
        return min(1.0, max(parts))


def lr_factor(schedule: str, fraction: float) -> float:
    """The learning rate's multiplier when `fraction` of the budget is spent:
    `constant` 1; `cosine` decays from 1 to 0 along half a cosine."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * fraction))
    return 1.0


LR_SCHEDULES = ("constant", "cosine")


@dataclass
class Watch:
    """Early stopping: the best validation value so far, where it was seen, and how
    many validations since have not improved on it."""

    best: float
    best_step: int = 0
    stale: int = 0

    def see(self, step: int, value: float) -> bool:
        """Record a validation; True when it improves strictly on the best."""
        if math.isfinite(value) and value < self.best:
            self.best, self.best_step, self.stale = value, step, 0
            return True
        self.stale += 1
        return False


@dataclass
class History:
    """What the loop did: (step, value) curves, the stop reason, the best step (0: the
    input weights) and the validation value before and at the best step."""

    losses: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    stop_reason: str = STEPS
    steps: int = 0
    seconds: float = 0.0
    before: float = math.nan
    best: float = math.nan
    best_step: int = 0


def run_loop(step: Callable[[float], float], evaluate: Callable[[], float],
             snapshot: Callable[[], Any], budget: Budget, clock: Callable[[], float],
             progress: Callable[[float], None] | None = None) -> tuple[Any, History]:
    """Train within the budget; returns the best weights (a snapshot) and the history.
    `step(fraction)` is told how much of the budget is spent before it."""
    start = clock()
    history = History()
    history.before = evaluate()
    history.validation.append((0, history.before))
    watch, best = Watch(history.before), snapshot()
    while (reason := budget.spent(history.steps, seconds := clock() - start)) is None:
        loss = float(step(budget.fraction(history.steps, seconds)))
        history.steps += 1
        history.losses.append((history.steps, loss))
        if progress is not None:
            progress(loss)
        if not math.isfinite(loss):
            reason = DIVERGED
            break
        if history.steps % budget.every == 0:
            best = _validate(history, watch, evaluate, snapshot, best)
            if watch.stale >= budget.patience:
                reason = PATIENCE
                break
    if history.validation[-1][0] != history.steps and reason != DIVERGED:
        best = _validate(history, watch, evaluate, snapshot, best)
    history.stop_reason, history.seconds = reason, clock() - start
    history.best, history.best_step = watch.best, watch.best_step
    return best, history


def _validate(history: History, watch: Watch, evaluate: Callable[[], float],
              snapshot: Callable[[], Any], best: Any) -> Any:
    value = float(evaluate())
    history.validation.append((history.steps, value))
    return snapshot() if watch.see(history.steps, value) else best
