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

from ..ops.registry import VIEW_DEPTH, families, family_of, is_axis_view
from ..ops.rule import rule_for
from .atoms import Rows, atom_pairs, components
from .atoms import rows as atom_rows
from .core import Choice, Edges, GraphView, Role, Slot


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
    def channels_per_unit(self) -> int:
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
    found = _without_dead_ends(_propagate(view), view)
    sizes = {slot: view.dim(slot) for slot in found.slots}
    _block_unknown_sizes(found, sizes)
    rows = atom_rows(found.slots, found.edges.links, sizes)
    labels = components(rows.total, atom_pairs(found.edges.links, rows, sizes))
    return DepGraph(_groups(found, rows, labels), view)


def _without_dead_ends(found: _Found, view: GraphView) -> _Found:
    """Drop slots of activations nothing reads (a Dropout mask, unused MaxPool indices):
    they carry no channels anywhere, and their sizes may be unknown."""
    def dead(name: str) -> bool:
        tensor = view.tensors.get(name)
        return isinstance(tensor, gs.Variable) and not tensor.outputs and \
            name not in view.output_names and name not in view.hidden_consumers

    gone = {slot for slot in found.slots if dead(slot.tensor)}
    if gone:
        found.slots = [s for s in found.slots if s not in gone]
        found.edges.links = [k for k in found.edges.links if k.a not in gone and k.b not in gone]
    return found


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
class _Found:
    slots: list[Slot]
    edges: Edges
    nodes: dict[Slot, set[tuple[str, str]]]
    view: GraphView


def _propagate(view: GraphView) -> _Found:
    """Visit every slot reachable from the weights; decide merge carriers (`Choice`)
    once nothing more is reached, and go on from what they link."""
    edges = Edges()
    order: list[Slot] = []
    nodes: dict[Slot, set[str]] = {}
    queue = deque(_seeds(view, edges))
    seen = set(queue)
    decided: set[tuple] = set()
    position = 0  # edges.choices only grows: those before it are decided
    while queue:
        while queue:
            slot = queue.popleft()
            order.append(slot)
            nodes[slot] = set()
            _enqueue(_visit(slot, view, edges, nodes[slot]), seen, queue)
        while position < len(edges.choices) and edges.choices[position].key in decided:
            position += 1
        if position < len(edges.choices):
            decided.add(edges.choices[position].key)
            _enqueue(_decide(edges.choices[position], seen, edges), seen, queue)
    return _Found(order, edges, nodes, view)


def _enqueue(slots: list[Slot], seen: set[Slot], queue: deque) -> None:
    for new in slots:
        if new not in seen:
            seen.add(new)
            queue.append(new)


def _decide(choice: Choice, seen: set[Slot], edges: Edges) -> list[Slot]:
    """The first reached option carries the choice; other reached options are blocked."""
    reached = [(slot, option) for slot, option in choice.options if slot in seen]
    carrier = reached[0] if reached else choice.options[choice.fallback]
    for slot, _ in reached[1:]:
        edges.block(slot, choice.reason)
    edges.merge(carrier[1])
    return [end for link in carrier[1].links for end in (link.a, link.b)]


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
    cache = view.cache_axis(slot)
    if slot.tensor in view.output_names and not cache:
        edges.block(slot, f"{slot.tensor} is a graph output")
    if slot.tensor in view.input_names and not cache:
        edges.block(slot, f"{slot.tensor} is a graph input")
    reached: list[Slot] = []
    for node in view.nodes_of(slot.tensor):
        touched.add((node.name, node.op))
        local = Edges()
        _apply(node, slot, view, local)
        edges.merge(local)
        reached += [end for link in local.links for end in (link.a, link.b)]
    return reached


def _apply(node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
    if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        edges.block(slot, f"{node.op} {node.name} has subgraphs that read {slot.tensor}")
        return
    rule = rule_for(node)
    if rule is None:
        edges.block(slot, f"{node.op} {node.name}: no rule for this op")
        return
    if slot.span > 1 and not rule.spans:
        spanning = sorted(op for op, family in families().items() if family.rule.spans)
        edges.block(slot, f"{node.op} {node.name}: axes {slot} are followed only through "
                          f"{', '.join(spanning[:-1])} and {spanning[-1]}")
        return
    rule.propagate(node, slot, view, edges)


def _groups(found: _Found, rows: Rows, labels: np.ndarray) -> list[Group]:
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


def _make_group(gid, slots, unit_labels, found: _Found, rows: Rows, labels) -> Group:
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
    if {"interleaved", "split"} <= tags:
        blocked.append("an axis merged as an inner factor (strided) is split again with "
                       "another factorization")
    blocked += _unpaired(members, found.view)
    kind = _kind(tags, approximate, producers)
    return Group(gid, kind, len(unit_labels), members, roles, blocked, nodes, producers,
                 approximate)


def _unpaired(members: dict[Slot, np.ndarray], view: GraphView) -> list[str]:
    """A key/value-cache input or output must lose the same indices as its partner."""
    reasons = []
    for slot, owner in members.items():
        if slot.tensor not in view.caches or not view.cache_axis(slot):
            continue
        partner = Slot(view.caches[slot.tensor][0], slot.axis)
        if partner not in members or not np.array_equal(members[partner], owner):
            reasons.append(f"cache {slot.tensor} and {partner.tensor} would lose different "
                           "indices")
    return reasons


def _roles(slots: list[Slot], found: _Found) -> dict[Slot, Role]:
    """Each slot's role; a constant seen through weight views that keep its axes (Cast,
    Identity, DequantizeLinear) takes the weight role of the view it feeds."""
    roles = {s: found.edges.roles.get(s, Role.ACT) for s in slots}
    for slot in slots:
        if roles[slot] == Role.ACT and found.view.is_const(slot.tensor):
            roles[slot] = _viewed_role(slot, found) or Role.ACT
    return roles


def _viewed_role(slot: Slot, found: _Found) -> Role | None:
    name = slot.tensor
    for _ in range(VIEW_DEPTH):
        users = found.view.tensors[name].outputs
        if len(users) != 1 or not is_axis_view(users[0].op):
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
    products = [family_of(op) for _, op in producers if not is_axis_view(op)]
    if products and all(family is not None and family.products for family in products):
        return "neuron"
    return "channel"
