"""The rule interface: how one op family couples, rewrites and scores channels, and
the view of a rewrite (`Change`) that rules fix their nodes by."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Slot
from .registry import family_for


class Change:
    """The indices being removed, as a rule sees them during a rewrite."""

    def __init__(self, removed: dict[Slot, np.ndarray], view: GraphView):
        self._removed = removed
        self._tensors = {slot.tensor for slot in removed}
        self.view = view
        self.new_nodes: list[gs.Node] = []

    def add_node(self, node: gs.Node) -> None:
        """A node a rewrite creates (a private copy of a shared shape computation)."""
        self.new_nodes.append(node)

    def removed(self, tensor: str, axis: int) -> np.ndarray:
        """Sorted indices removed from one axis of a tensor (empty when none)."""
        rank = self.view.rank(tensor)
        if axis < 0 and rank is not None:
            axis += rank
        return self._removed.get(Slot(tensor, axis), np.empty(0, np.int64))

    def spans(self, tensor: str) -> list[tuple[Slot, np.ndarray]]:
        """Slots of several axes taken as one on a tensor, with their removed indices."""
        return [(slot, idx) for slot, idx in self._removed.items()
                if slot.tensor == tensor and slot.span > 1]

    def removed_slot(self, slot: Slot) -> np.ndarray:
        """Sorted indices removed from a slot (empty when none)."""
        return self._removed.get(slot, np.empty(0, np.int64))

    def kept(self, tensor: str, axis: int) -> int | None:
        """New size of one axis, or None when the old size is unknown."""
        dim = self.view.dim(Slot(tensor, axis))
        if dim is None:
            return None
        return dim - len(self.removed(tensor, axis))

    def touches(self, node: gs.Node) -> bool:
        """Whether any input or output of the node loses indices."""
        return any(t.name in self._tensors for t in list(node.inputs) + list(node.outputs))


class Rule:
    """How one op family couples, rewrites and scores channels."""

    spans = False  # whether the rule follows slots of several axes taken as one

    def seeds(self, node: gs.Node, view: GraphView) -> list[Slot]:
        """Weight axes whose indices this op produces (the roots of groups)."""
        return []

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        """Say which other slots lose the same indices when `slot` loses some."""
        raise NotImplementedError

    def rewrite(self, node: gs.Node, change: Change) -> None:
        """Fix attributes and shape constants once tensors have been sliced."""


def rule_for(node: gs.Node) -> Rule | None:
    """The rule for a node's op type, or None when the op is not understood."""
    family = family_for(node)
    return None if family is None else family.rule


def set_const_input(node: gs.Node, index: int, values: np.ndarray) -> None:
    """Give a node its own constant input (never edit a constant others share); an
    input computed at run time is replaced by the constant."""
    old = node.inputs[index]
    name = f"{old.name}__{node.name}" if old.name else f"{node.name}__in{index}"
    dtype = np.asarray(old.values).dtype if isinstance(old, gs.Constant) else None
    node.inputs[index] = gs.Constant(name, np.asarray(values, dtype=dtype))


def const_input(node: gs.Node, index: int, view: GraphView) -> np.ndarray | None:
    """Values of the node's index-th input when it is a constant."""
    if index >= len(node.inputs) or not node.inputs[index].name:
        return None
    return view.const(node.inputs[index].name)
