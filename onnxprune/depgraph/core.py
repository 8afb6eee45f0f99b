"""Plain data shared by the dependency graph and its op rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from ..ops.registry import VIEW_DEPTH, is_axis_view
from ..shapes import Shape

if TYPE_CHECKING:
    import numpy.typing as npt


@dataclass(frozen=True, order=True)
class Slot:
    """One axis of one tensor: the place where indices are removed. With `span` > 1,
    the axes axis … axis + span − 1 taken as one (row-major): the factors of an axis
    that a Reshape splits and, after a Transpose among them, merges again (a channel
    shuffle)."""

    tensor: str
    axis: int
    span: int = 1

    def __str__(self) -> str:
        if self.span > 1:
            return f"{self.tensor}[{self.axis}:{self.axis + self.span}]"
        return f"{self.tensor}[{self.axis}]"


class Role(str, Enum):
    """What a slot is to the group that holds it."""

    OUT = "out"  # output axis of a weight: the producer of the channels
    IN = "in"  # input axis of a consumer's weight: where the group is absorbed
    PARAM = "param"  # per-channel constant: bias, norm statistics, scales
    ACT = "act"  # an activation tensor


@dataclass
class Link:
    """Atoms `a_idx` of slot `a` are the same channels as atoms `b_idx` of slot `b`.

    `None` index arrays mean the identity over the whole (equal-sized) axis.
    """

    a: Slot
    b: Slot
    a_idx: np.ndarray | None = None
    b_idx: np.ndarray | None = None


@dataclass
class Edges:
    """What a rule says about one node for one incoming slot."""

    links: list[Link] = field(default_factory=list)
    blocks: dict[Slot, str] = field(default_factory=dict)
    roles: dict[Slot, Role] = field(default_factory=dict)
    tags: dict[Slot, set[str]] = field(default_factory=dict)
    mixed: dict[Slot, str] = field(default_factory=dict)
    choices: list[Choice] = field(default_factory=list)

    def merge(self, other: Edges) -> None:
        """Take in what another Edges says (first role and reason win)."""
        self.links.extend(other.links)
        for key, tags in other.tags.items():
            for tag in tags:
                self.tag(key, tag)
        for key, reason in other.mixed.items():
            self.mix(key, reason)
        for key, reason in other.blocks.items():
            self.block(key, reason)
        for key, role in other.roles.items():
            self.roles.setdefault(key, role)
        self.choices.extend(other.choices)

    def same(self, a: Slot, b: Slot, role: Role | None = None) -> None:
        """Couple two slots index for index."""
        self.links.append(Link(a, b))
        self._role(b, role)

    def map(self, a: Slot, b: Slot, a_idx: npt.ArrayLike, b_idx: npt.ArrayLike,
            role: Role | None = None) -> None:
        """Couple atoms a_idx[i] of `a` with atoms b_idx[i] of `b`."""
        self.links.append(Link(a, b, np.asarray(a_idx, np.int64), np.asarray(b_idx, np.int64)))
        self._role(b, role)

    def tag(self, slot: Slot, tag: str) -> None:
        """Mark a slot: "split" (the axis that carries the units of an axis split into
        factors), "interleaved" (an axis whose units are inner factors, strided),
        "attention" (the batch axis of a product of two activations)."""
        self.tags.setdefault(slot, set()).add(tag)

    def mix(self, slot: Slot, reason: str) -> None:
        """The op mixes the slot's indices (normalization statistics): the group stays
        prunable but approximate, and is cut only when hidden pruning is asked for."""
        self.mixed.setdefault(slot, reason)

    def block(self, slot: Slot, reason: str) -> None:
        """Forbid removing any index of `slot`, with a reason for the report."""
        self.blocks.setdefault(slot, reason)

    def _role(self, slot: Slot, role: Role | None) -> None:
        if role is not None:
            self.roles.setdefault(slot, role)


@dataclass
class Choice:
    """An axis that one of several axes may carry (the factors merged into one axis):
    decided once propagation has reached every slot it can. The first reached option
    carries it and the other reached ones are blocked with `reason`; when none is
    reached, option `fallback` carries it.

    `options` pairs each candidate slot with what choosing it adds.
    """

    key: tuple[str, Slot]
    options: list[tuple[Slot, Edges]]
    reason: str
    fallback: int = 0


class GraphView:
    """Read-only questions the rules ask about a normalized graph."""

    def __init__(self, graph: gs.Graph, shapes: dict[str, Shape],
                 periods: Callable[[], dict[str, tuple]] | None = None):
        self.graph = graph
        self.shapes = shapes
        self._periods_source = periods
        self._periods: dict[str, tuple] | None = None
        self.tensors: dict[str, gs.Tensor] = graph.tensors()
        self.output_names = {t.name for t in graph.outputs}
        self.input_names = {t.name for t in graph.inputs if isinstance(t, gs.Variable)}
        self.hidden_consumers = _subgraph_consumers(graph)
        self.prober = None  # the onnxruntime shape probe of the analysis, when it has one
        self.caches: dict[str, tuple[str, int]] = {}  # cache tensor -> (partner, joined axis)
        self._top_level = {id(node) for node in graph.nodes}

    def shape(self, name: str) -> Shape:
        """Static shape of a tensor: ints, symbols or None per axis; None if unknown."""
        tensor = self.tensors.get(name)
        if isinstance(tensor, gs.Constant):
            return tuple(tensor.shape)
        return self.shapes.get(name)

    def cache_axis(self, slot: Slot) -> bool:
        """Whether a slot is an axis of a key/value-cache input or output other than the
        joined one: it may lose indices, with its partner."""
        end = self.caches.get(slot.tensor)
        rank = self.rank(slot.tensor)
        return end is not None and slot.span == 1 and rank is not None and \
            slot.axis % rank != end[1]

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)

    def dim(self, slot: Slot) -> int | None:
        """Size of a slot's axis: a known integer, or for a run-time size proportional
        to the batch (heads folded into the batch, N·H) the size at batch 1, whose
        indices stand for every index with the same remainder."""
        static = self.static_dim(slot)
        if static is not None or self.shape(slot.tensor) is None or slot.span > 1:
            return static
        periods = self.periods().get(slot.tensor)
        return periods[slot.axis % len(periods)] if periods else None

    def static_dim(self, slot: Slot) -> int | None:
        """Size of a slot's axis (or axes) when it is the same for every input size."""
        shape = self.shape(slot.tensor)
        if shape is None or not -len(shape) <= slot.axis <= len(shape) - slot.span:
            return None
        axis = slot.axis % len(shape)
        values = shape[axis:axis + slot.span]
        if not all(isinstance(v, int) and v > 0 for v in values):
            return None
        return int(np.prod(values, dtype=np.int64))

    def periods(self) -> dict[str, tuple]:
        """Per tensor, per axis: the size at batch 1 of a batch-proportional axis."""
        if self._periods is None:
            self._periods = self._periods_source() if self._periods_source else {}
        return self._periods

    def batch_one_shape(self, name: str) -> Shape:
        """The shape with batch-proportional sizes at batch 1 (others unchanged)."""
        shape = self.shape(name)
        periods = self.periods().get(name) if shape is not None else None
        if not periods:
            return shape
        return tuple(p if not isinstance(d, int) and p else d
                     for d, p in zip(shape, periods, strict=True))

    def const(self, name: str) -> np.ndarray | None:
        """Values of a constant tensor, or None for activations and empty names."""
        tensor = self.tensors.get(name)
        if isinstance(tensor, gs.Constant):
            return np.asarray(tensor.values)
        return None

    def is_const(self, name: str) -> bool:
        return isinstance(self.tensors.get(name), gs.Constant)

    def is_weight(self, name: str) -> bool:
        """A constant, or a constant seen through weight views that keep its axes (Cast,
        Identity, QuantizeLinear, DequantizeLinear: weights stored in float16 or int8)."""
        tensor = self.tensors.get(name)
        for _ in range(VIEW_DEPTH):
            if isinstance(tensor, gs.Constant):
                return True
            producer = tensor.inputs[0] if tensor is not None and tensor.inputs else None
            if producer is None or not is_axis_view(producer.op):
                return False
            tensor = producer.inputs[0]
        return False

    def nodes_of(self, name: str) -> list[gs.Node]:
        """The producer and every consumer of a tensor (for a tensor a subgraph reads,
        the node that holds the subgraph)."""
        tensor = self.tensors.get(name)
        if tensor is None:
            return []
        nodes = list(tensor.inputs) + list(tensor.outputs)
        nodes += self.hidden_consumers.get(name, [])
        # A node inside a subgraph answers through the node that holds the subgraph.
        unique: dict[int, gs.Node] = {id(n): n for n in nodes if id(n) in self._top_level}
        return list(unique.values())


def _subgraph_consumers(graph: gs.Graph) -> dict[str, list[gs.Node]]:
    """Outer-scope tensors that nodes with subgraphs read implicitly."""
    found: dict[str, list[gs.Node]] = {}
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                for name in _names_used(value):
                    found.setdefault(name, []).append(node)
    return found


def _names_used(graph: gs.Graph) -> set[str]:
    names: set[str] = set()
    for node in graph.nodes:
        names.update(t.name for t in node.inputs)
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                names |= _names_used(value)
    return names
