"""Atoms: every index of every slot, numbered in rows (slots linked index for index
share a row), and their connected components under the rules' links (the units)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core import Link, Slot


@dataclass
class Rows:
    """Slots joined index-for-index share one row of atoms."""

    row_of: dict[Slot, int]
    offsets: list[int]
    sizes: list[int]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def atoms(self, slot: Slot) -> slice:
        row = self.row_of[slot]
        return slice(self.offsets[row], self.offsets[row] + self.sizes[row])


def rows(slots: list[Slot], links: list[Link], sizes: dict[Slot, int | None]) -> Rows:
    """Give every slot a row of atoms; slots linked index for index share one."""
    parent = {slot: slot for slot in slots}

    def root(slot: Slot) -> Slot:
        while parent[slot] != slot:
            parent[slot] = parent[parent[slot]]
            slot = parent[slot]
        return slot

    for link in links:
        if link.a_idx is None and sizes.get(link.a) and sizes.get(link.a) == sizes.get(link.b):
            parent[root(link.a)] = root(link.b)
    row_of: dict[Slot, int] = {}
    roots: dict[Slot, int] = {}
    offsets, row_sizes, total = [], [], 0
    for slot in slots:
        top = root(slot)
        if top not in roots:
            roots[top] = len(offsets)
            offsets.append(total)
            row_sizes.append(sizes[slot] or 0)
            total += sizes[slot] or 0
        row_of[slot] = roots[top]
    return Rows(row_of, offsets, row_sizes)


def atom_pairs(links: list[Link], rows: Rows, sizes: dict[Slot, int | None]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of atoms that rules link (as two index arrays)."""
    us, vs = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for link in links:
        size_a, size_b = sizes.get(link.a), sizes.get(link.b)
        if not size_a or not size_b or rows.row_of[link.a] == rows.row_of[link.b] and \
                link.a_idx is None:
            continue
        if link.a_idx is None:
            a_idx = b_idx = np.arange(min(size_a, size_b))
        else:
            ok = (link.a_idx < size_a) & (link.b_idx < size_b)
            a_idx, b_idx = link.a_idx[ok], link.b_idx[ok]
        us.append(rows.atoms(link.a).start + a_idx)
        vs.append(rows.atoms(link.b).start + b_idx)
    return np.concatenate(us), np.concatenate(vs)


def components(total: int, pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Connected components of atoms: a label (smallest member) for each atom."""
    parent = np.arange(total)
    u, v = pairs
    while u.size:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            break
        low = np.minimum(pu[differ], pv[differ])
        np.minimum.at(parent, pu[differ], low)
        np.minimum.at(parent, pv[differ], low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent
