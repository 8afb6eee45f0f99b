"""Aligning the input and output shapes of a Reshape into runs of axes with equal
products (the axes a run holds on one side regroup those it holds on the other)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..shapes import Dim

Groups = list[tuple[list[int], list[int]]]


def align(a: Sequence[Dim], b: Sequence[Dim]) -> Groups:
    """Pair runs of axes with equal products, from the front and then the back."""
    front = _align_prefix(a, b)
    used_a = {k for group, _ in front for k in group}
    back = _align_prefix(a[::-1], b[::-1])
    flip_a, flip_b = len(a) - 1, len(b) - 1
    for group_a, group_b in back:
        mirrored = ([flip_a - k for k in group_a][::-1], [flip_b - k for k in group_b][::-1])
        if not used_a.intersection(mirrored[0]):
            front.append(mirrored)
    return front


def _align_prefix(a, b) -> Groups:
    """Runs from the front. Two run-time sizes are paired as equal only when the rest
    aligns too: a failure after such a pair (N against N·H) drops it and what follows."""
    groups: Groups = []
    first_guess = None
    i = j = 0
    while i < len(a) and j < len(b):
        if not isinstance(a[i], int) or not isinstance(b[j], int):
            if isinstance(a[i], int) or isinstance(b[j], int):
                break
            first_guess = len(groups) if first_guess is None else first_guess
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        run = _equal_product_run(a, b, i, j)
        if run is None:
            break
        groups.append(run)
        i, j = i + len(run[0]), j + len(run[1])
    if (i < len(a) or j < len(b)) and first_guess is not None:
        return groups[:first_guess]
    tail_a, tail_b = list(range(i, len(a))), list(range(j, len(b)))
    if groups and all(a[k] == 1 for k in tail_a) and all(b[k] == 1 for k in tail_b):
        groups[-1][0].extend(tail_a)
        groups[-1][1].extend(tail_b)
    return groups


def _equal_product_run(a, b, i, j):
    group_a, group_b, prod_a, prod_b = [i], [j], a[i], b[j]
    i, j = i + 1, j + 1
    while prod_a != prod_b:
        if prod_a < prod_b:
            if i >= len(a) or not isinstance(a[i], int):
                return None
            group_a.append(i)
            prod_a, i = prod_a * a[i], i + 1
        else:
            if j >= len(b) or not isinstance(b[j], int):
                return None
            group_b.append(j)
            prod_b, j = prod_b * b[j], j + 1
    return group_a, group_b
