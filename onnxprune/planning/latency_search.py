"""Decisions of the latency budget that need no onnxruntime: the rounding that latency
curves call for, the chain of plans the closed loop searches, where to time next and
which measured plan wins. Pure functions of predictions and measurements."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MULTIPLES = (1, 2, 4, 8, 16, 32)


def step_multiple(curves: list[dict[int, float]], multiples: tuple[int, ...] = MULTIPLES,
                  share: float = 0.9) -> int:
    """The rounding latency curves call for (seconds per kept channel count, over
    consecutive counts up to a group's size). A count is *efficient* when every larger
    count of its curve is slower: no more channels come for the same time or less. The
    answer is the smallest of `multiples` whose multiples below the groups' sizes are
    efficient at least `share` of the time (else the one most often efficient; 1
    without curves)."""
    efficient: dict[int, list[bool]] = {m: [] for m in multiples}
    for curve in curves:
        counts = sorted(curve, reverse=True)
        cheapest_above = curve[counts[0]] if counts else 0.0
        for n in counts[1:]:
            for m in multiples:
                if n % m == 0:
                    efficient[m].append(curve[n] < cheapest_above)
            cheapest_above = min(cheapest_above, curve[n])
    rated = {m: sum(flags) / len(flags) for m, flags in efficient.items() if flags}
    if not rated:
        return 1
    return next((m for m in multiples if rated.get(m, 0.0) >= share),
                max(rated, key=lambda m: (rated[m], -m)))


def plan_chain(removed_at: Callable[[float], dict], high: float, steps: int = 400
               ) -> list[dict]:
    """Plans from the planner's at ratio 0 to its at `high`, each cutting one group by
    one more rounding step than the one before: the uniform plans on a fine grid of
    ratios, with the groups that change between two of them switched one at a time."""
    chain = [removed_at(0.0)]
    for ratio in np.linspace(0.0, high, steps + 1)[1:]:
        goal = removed_at(float(ratio))
        for gid in sorted(goal):
            now = chain[-1].get(gid)
            if now is None or len(now) != len(goal[gid]) or not np.array_equal(now, goal[gid]):
                chain.append({**chain[-1], gid: goal[gid]})
    return chain


def next_step(known: dict[int, float], predict: Callable[[int], float], size: int,
              target: float, tolerance: float) -> int | None:
    """The next plan of a chain of `size` to time, or None: once a plan measured within
    `tolerance` below the target, or the crossing is between two neighbours. Between the
    last plan measured above the target and the first measured below it after that one,
    the first whose table prediction, rescaled by measured/predicted interpolated from
    the measured plans, meets the target (found by bisection: predictions fall along the
    chain); kept in the middle half of that span."""
    if any(target * (1 - tolerance) <= m <= target for m in known.values()):
        return None
    low = max((i for i, m in known.items() if m > target), default=-1)
    high = min((i for i, m in known.items() if m <= target and i > low), default=size)
    if high - low <= 1:
        return None
    steps = sorted(known)
    scales = [known[i] / max(predict(i), 1e-12) for i in steps]
    guess = first_at_most(lambda i: predict(i) * float(np.interp(i, steps, scales)),
                          target, low + 1, high - 1)
    margin = max((high - low) // 4, 1)
    return int(min(max(guess, low + margin), high - margin))


def first_at_most(value: Callable[[int], float], target: float, low: int, high: int) -> int:
    """The first index in [low, high] whose falling `value` is at most the target (high
    when none is), by bisection."""
    while low < high:
        mid = (low + high) // 2
        if value(mid) <= target:
            high = mid
        else:
            low = mid + 1
    return low


def pick_step(known: dict[int, float], target: float) -> int:
    """The measured plan closest to the target without exceeding it (the fastest one
    when all exceed it)."""
    fits = [i for i, m in known.items() if m <= target]
    if fits:
        return max(fits, key=lambda i: (known[i], -i))
    return min(known, key=lambda i: known[i])
