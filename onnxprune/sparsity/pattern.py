"""Sparsity patterns and their masks on a weight's matrix view.

A matrix view has one row per output (an output channel or feature) and the
grouped axis last, so an N:M group is M consecutive entries of a row. "2:4"
keeps at most 2 non-zeros in every 4; "unstructured" removes a fraction of each
row's entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

PATTERNS = ("2:4", "4:8", "unstructured")


@dataclass(frozen=True)
class Pattern:
    """`n` kept of every `m` along the grouped axis, or unstructured (`m` = 0)."""

    n: int
    m: int
    sparsity: float

    @property
    def structured(self) -> bool:
        return self.m > 0

    @property
    def name(self) -> str:
        return f"{self.n}:{self.m}" if self.structured else "unstructured"


def parse_pattern(text: str, sparsity: float | None = None) -> Pattern:
    """`2:4`, `4:8` (sparsity fixed at 1 − n/m) or `unstructured` (default 0.5)."""
    if text not in PATTERNS:
        raise InputError(f"unknown pattern {text!r}; choose one of {', '.join(PATTERNS)}")
    if text == "unstructured":
        value = 0.5 if sparsity is None else sparsity
        if not 0 < value < 1:
            raise InputError(f"--sparsity must be in (0, 1), got {value}")
        return Pattern(0, 0, float(value))
    n, m = (int(v) for v in text.split(":"))
    fixed = 1 - n / m
    if sparsity is not None and abs(sparsity - fixed) > 1e-9:
        raise InputError(f"pattern {text} fixes the sparsity at {fixed:g}; drop --sparsity "
                         f"{sparsity:g} or use --pattern unstructured")
    return Pattern(n, m, fixed)


def removed_per_row(pattern: Pattern, cols: int) -> int:
    """How many entries of a row of `cols` the pattern removes."""
    if pattern.structured:
        return cols // pattern.m * (pattern.m - pattern.n)
    return int(np.floor(pattern.sparsity * cols))


def keep_mask(scores: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Keep the highest scores: the top n of every group of m, or the top
    (1 − sparsity) of every row. Ties are broken by position (stable)."""
    rows, cols = scores.shape
    if pattern.structured:
        groups = scores.reshape(rows, cols // pattern.m, pattern.m)
        order = np.argsort(-groups, axis=2, kind="stable")
        keep = np.zeros(groups.shape, bool)
        np.put_along_axis(keep, order[:, :, :pattern.n], True, axis=2)
        return keep.reshape(rows, cols)
    drop = removed_per_row(pattern, cols)
    order = np.argsort(scores, axis=1, kind="stable")
    keep = np.ones((rows, cols), bool)
    np.put_along_axis(keep, order[:, :drop], False, axis=1)
    return keep


def violations(matrix: np.ndarray, pattern: Pattern) -> int:
    """Groups (N:M) or rows (unstructured) of a matrix view that break the pattern."""
    nonzero = matrix != 0
    rows, cols = matrix.shape
    if pattern.structured:
        counts = nonzero.reshape(rows, cols // pattern.m, pattern.m).sum(2)
        return int((counts > pattern.n).sum())
    zeros = cols - nonzero.sum(1)
    return int((zeros < removed_per_row(pattern, cols)).sum())
