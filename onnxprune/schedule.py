"""The schedule of `--rounds K`: what each round reaches, and the options that rounds
do not combine with.

Round k of K reaches s_k = s·(1 − (1 − k/K)³) of the final ratio, sparsity or budget
cut s (the cubic schedule of Zhu & Gupta 2017), measured on the original model; the
last round reaches s itself, exactly."""

from __future__ import annotations

import numbers

from .errors import InputError


def check_rounds(rounds: object) -> int:
    """`rounds` as a whole number of at least 1, or refused."""
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise InputError(f"--rounds must be a whole number >= 1, got {rounds!r}")
    return int(rounds)


def fractions(rounds: int) -> list[float]:
    """The share of the final cut that each round reaches: 1 − (1 − k/K)³, and exactly
    1 in the last round."""
    rounds = check_rounds(rounds)
    return [1.0 - (1.0 - k / rounds) ** 3 if k < rounds else 1.0
            for k in range(1, rounds + 1)]


def schedule(final: float, rounds: int) -> list[float]:
    """The ratio (or sparsity) each round reaches: s_k = s·(1 − (1 − k/K)³); the last is
    `final` itself."""
    return [final if share == 1.0 else final * share for share in fractions(rounds)]


def budget_schedule(final: float, rounds: int) -> list[float]:
    """The kept fraction of a budget (`--target-macs`, `--target-energy`) each round
    reaches: the cut 1 − T rises on the cubic schedule; the last is `final` itself."""
    return [final if share == 1.0 else 1.0 - (1.0 - final) * share
            for share in fractions(rounds)]


def check_prune_rounds(rounds: int, given: dict[str, object]) -> None:
    """Refuse, for more than one round, the prune options rounds do not support
    (`given`: option spelling -> value, None or False when not given)."""
    if check_rounds(rounds) == 1:
        return
    reasons = {
        "--plan": "a replayed plan is applied in one step",
        "--hidden-ratio": "hidden cuts are approximate, and a round's masked model is no "
                          "exact reference for the next",
        "--target-latency": "latency is measured, not priced, and its rounding is chosen "
                            "per run",
        "--criterion sensitivity": "it measures its own per-group ratios in one step",
        "--criterion zero": "it removes only what already scores zero",
    }
    for name, reason in reasons.items():
        if given.get(name):
            raise InputError(f"--rounds {rounds} cannot be combined with {name}: {reason}")


def check_sparsify_rounds(rounds: int, structured: bool, replay: bool) -> None:
    """Refuse more than one round of an N:M pattern or of a replayed plan."""
    if check_rounds(rounds) == 1:
        return
    if structured:
        raise InputError(f"--rounds {rounds} needs --pattern unstructured: an N:M pattern "
                         "is all or nothing per layer, so it has no sparsity to raise")
    if replay:
        raise InputError(f"--rounds {rounds} cannot be combined with --plan: a replayed "
                         "plan is applied in one step")
