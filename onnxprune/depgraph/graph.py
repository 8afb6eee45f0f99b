"""Building channel groups by propagating slots through the op rules.

Every axis reached from a weight becomes a row of *atoms* (its indices). Rules
link atoms that must be removed together; connected atoms form a *unit*, and
units that touch the same set of slots form a *group*.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .core import WEIGHT_VIEWS, Edges, GraphView, Link, Role, Slot
from .rules import rule_for


@dataclass
class Group:
    """Units that must lose the same indices together, and where each unit lives.

    `members[slot][i]` is the unit that owns index i of that slot (-1: none).
    """

    id: int
    kind: str
    units: int
    members: dict[Slot, np.ndarray]
    roles: dict[Slot, Role]
    blocked: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    producers: list[tuple[str, str]] = field(default_factory=list)
    approximate: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.blocked

    @property
    def channels(self) -> int:
        """Indices per unit on the group's first output slot (1 for plain channels)."""
        counts = np.bincount(self.members[self.root][self.members[self.root] >= 0])
        return int(counts.max()) if counts.size else 1

    @property
    def root(self) -> Slot:
        outs = [s for s, r in self.roles.items() if r == Role.OUT and s in self.members]
        return outs[0] if outs else next(iter(self.members))

    def slots(self, role: Role) -> list[Slot]:
        return [s for s in self.members if self.roles.get(s) == role]


@dataclass
class DepGraph:
    """All groups of a model, and what the propagation learned on the way."""

    groups: list[Group]
    view: GraphView


def build(view: GraphView) -> DepGraph:
    """Propagate from every weight's output axis and collect the groups."""
    found = _propagate(view)
    sizes = {slot: view.dim(slot) for slot in found.slots}
    _block_unknown_sizes(found, sizes)
    rows = _rows(found, sizes)
    labels = _components(rows.total, _atom_pairs(found.edges.links, rows, sizes))
    return DepGraph(_groups(found, rows, labels), view)


def _block_unknown_sizes(found: _Found, sizes: dict[Slot, int | None]) -> None:
    """A link to an axis of unknown size, or between unequal sizes, blocks both ends."""
    for slot, size in sizes.items():
        if size is None:
            found.edges.block(slot, f"size of {slot} is unknown")
    for link in found.edges.links:
        size_a, size_b = sizes.get(link.a), sizes.get(link.b)
        if size_a is None or size_b is None:
            unknown = link.a if size_a is None else link.b
            reason = f"size of {unknown} is unknown"
        elif link.a_idx is None and size_a != size_b:
            reason = f"{link.a} and {link.b} differ in size ({size_a} vs {size_b})"
        else:
            continue
        found.edges.block(link.a, reason)
        found.edges.block(link.b, reason)


@dataclass
class _Rows:
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


def _rows(found: _Found, sizes: dict[Slot, int | None]) -> _Rows:
    parent = {slot: slot for slot in found.slots}

    def root(slot: Slot) -> Slot:
        while parent[slot] != slot:
            parent[slot] = parent[parent[slot]]
            slot = parent[slot]
        return slot

    for link in found.edges.links:
        if link.a_idx is None and sizes.get(link.a) and sizes.get(link.a) == sizes.get(link.b):
            parent[root(link.a)] = root(link.b)
    row_of: dict[Slot, int] = {}
    roots: dict[Slot, int] = {}
    offsets, row_sizes, total = [], [], 0
    for slot in found.slots:
        top = root(slot)
        if top not in roots:
            roots[top] = len(offsets)
            offsets.append(total)
            row_sizes.append(sizes[slot] or 0)
            total += sizes[slot] or 0
        row_of[slot] = roots[top]
    return _Rows(row_of, offsets, row_sizes)


@dataclass
class _Found:
    slots: list[Slot]
    edges: Edges
    nodes: dict[Slot, set[tuple[str, str]]]
    view: GraphView


def _propagate(view: GraphView) -> _Found:
    edges = Edges()
    order: list[Slot] = []
    nodes: dict[Slot, set[str]] = {}
    queue = deque(_seeds(view, edges))
    seen = set(queue)
    while queue:
        slot = queue.popleft()
        order.append(slot)
        nodes[slot] = set()
        for new in _visit(slot, view, edges, nodes[slot]):
            if new not in seen:
                seen.add(new)
                queue.append(new)
    return _Found(order, edges, nodes, view)


def _seeds(view: GraphView, edges: Edges) -> list[Slot]:
    seeds: dict[Slot, None] = {}
    for node in view.graph.nodes:
        rule = rule_for(node)
        for slot in rule.seeds(node, view) if rule else []:
            seeds.setdefault(slot)
            edges.roles.setdefault(slot, Role.OUT)
    return list(seeds)


def _visit(slot: Slot, view: GraphView, edges: Edges, touched: set) -> list[Slot]:
    """Apply every rule around one slot; return the slots it reached."""
    if slot.tensor in view.output_names:
        edges.block(slot, f"{slot.tensor} is a graph output")
    if slot.tensor in view.input_names:
        edges.block(slot, f"{slot.tensor} is a graph input")
    reached: list[Slot] = []
    for node in view.nodes_of(slot.tensor):
        touched.add((node.name, node.op))
        local = Edges()
        _apply(node, slot, view, local)
        edges.links.extend(local.links)
        for key, tags in local.tags.items():
            for tag in tags:
                edges.tag(key, tag)
        for key, reason in local.mixed.items():
            edges.mix(key, reason)
        for key, reason in local.blocks.items():
            edges.block(key, reason)
        for key, role in local.roles.items():
            edges.roles.setdefault(key, role)
        reached += [link.b for link in local.links]
    return reached


def _apply(node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
    if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        edges.block(slot, f"{node.op} {node.name} has subgraphs that read {slot.tensor}")
        return
    rule = rule_for(node)
    if rule is None:
        edges.block(slot, f"{node.op} {node.name}: no rule for this op")
        return
    rule.propagate(node, slot, view, edges)


def _atom_pairs(links: list[Link], rows: _Rows, sizes) -> tuple[np.ndarray, np.ndarray]:
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


def _components(total: int, pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
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


def _groups(found: _Found, rows: _Rows, labels: np.ndarray) -> list[Group]:
    row_ids = np.repeat(np.arange(len(rows.sizes)), rows.sizes)
    keys = np.unique(labels.astype(np.int64) * len(rows.sizes) + row_ids)
    if not keys.size:
        return []
    key_labels, key_rows = np.divmod(keys, len(rows.sizes))
    bounds = np.flatnonzero(np.diff(key_labels)) + 1
    by_signature: dict[tuple[int, ...], list[int]] = {}
    for label_rows, label in zip(np.split(key_rows, bounds), key_labels[np.r_[0, bounds]],
                                 strict=True):
        by_signature.setdefault(tuple(label_rows.tolist()), []).append(int(label))
    slots_of_row: dict[int, list[Slot]] = {}
    for slot in found.slots:
        slots_of_row.setdefault(rows.row_of[slot], []).append(slot)
    groups = []
    for signature, unit_labels in sorted(by_signature.items()):
        slots = [s for row in signature for s in slots_of_row[row]]
        groups.append(_make_group(len(groups), slots, unit_labels, found, rows, labels))
    return groups


def _make_group(gid, slots, unit_labels, found: _Found, rows: _Rows, labels) -> Group:
    ordered = np.sort(np.asarray(unit_labels))
    members, by_row = {}, {}
    for slot in slots:
        row = rows.row_of[slot]
        if row not in by_row:
            atoms = labels[rows.atoms(slot)]
            unit = np.minimum(np.searchsorted(ordered, atoms), len(ordered) - 1)
            by_row[row] = np.where(ordered[unit] == atoms, unit, -1)
        members[slot] = by_row[row]
    roles = _roles(slots, found)
    blocked = sorted({found.edges.blocks[s] for s in slots if s in found.edges.blocks})
    nodes = sorted({name for s in slots for name, _ in found.nodes.get(s, ())})
    producers = sorted({n for s in slots if roles[s] == Role.OUT for n in found.nodes[s]})
    approximate = sorted({found.edges.mixed[s] for s in slots if s in found.edges.mixed})
    tags = set().union(*(found.edges.tags.get(s, set()) for s in slots))
    kind = _kind(tags, approximate, producers)
    return Group(gid, kind, len(unit_labels), members, roles, blocked, nodes, producers,
                 approximate)


def _roles(slots: list[Slot], found: _Found) -> dict[Slot, Role]:
    """Each slot's role; a constant seen through Cast, Identity or DequantizeLinear
    takes the weight role of the view it feeds."""
    roles = {s: found.edges.roles.get(s, Role.ACT) for s in slots}
    for slot in slots:
        if roles[slot] == Role.ACT and found.view.is_const(slot.tensor):
            roles[slot] = _viewed_role(slot, found) or Role.ACT
    return roles


def _viewed_role(slot: Slot, found: _Found) -> Role | None:
    name = slot.tensor
    for _ in range(4):
        users = found.view.tensors[name].outputs
        if len(users) != 1 or users[0].op not in WEIGHT_VIEWS:
            return None
        name = users[0].outputs[0].name
        role = found.edges.roles.get(Slot(name, slot.axis))
        if role in (Role.OUT, Role.IN):
            return role
    return None


def _kind(tags: set[str], approximate: list[str], producers: list[tuple[str, str]]) -> str:
    """hidden (mixed by normalization), head (attention heads), neuron (produced by
    matrix products only) or channel."""
    if approximate:
        return "hidden"
    if {"split", "attention"} <= tags:
        return "head"
    if producers and all(op in ("MatMul", "Gemm") for _, op in producers):
        return "neuron"
    return "channel"
