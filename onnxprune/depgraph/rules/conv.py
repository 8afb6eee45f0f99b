"""Conv and ConvTranspose, 1-D to 3-D, plain, grouped and depthwise.

Plain: output channels are produced by the weight's output axis (with the bias);
input channels are absorbed by the weight's input axis. Grouped: a whole group
of input channels goes with its group of output channels, and pruning rewrites
`group` (depthwise is the case of one channel per group).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..core import Edges, GraphView, Role, Slot
from .base import Change, Rule, register


def _names(node: gs.Node) -> tuple[str, str, str, str]:
    bias = node.inputs[2].name if len(node.inputs) > 2 else ""
    return node.inputs[0].name, node.inputs[1].name, bias, node.outputs[0].name


class _ConvFamily(Rule):
    out_axis_of_weight = 0  # weight axis that holds output channels (per group)
    in_axis_of_weight = 1  # weight axis that holds input channels (per group)

    def seeds(self, node: gs.Node, view: GraphView) -> list[Slot]:
        _, w, _, _ = _names(node)
        if not view.is_weight(w):
            return []
        return [Slot(w, self._producer_weight_axis(node))]

    def _groups(self, node: gs.Node) -> int:
        return int(node.attrs.get("group", 1))

    def _producer_weight_axis(self, node: gs.Node) -> int:
        return self.out_axis_of_weight if self._groups(node) == 1 else self._grouped_anchor()

    def _grouped_anchor(self) -> int:
        return 0

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, w, b, y = _names(node)
        if slot.axis == 0 and slot.tensor in (x, y):
            other = y if slot.tensor == x else x
            edges.same(slot, Slot(other, 0), Role.ACT)
            return
        if self._groups(node) == 1:
            self._plain(node, slot, edges)
        else:
            self._grouped(node, slot, view, edges)

    def _plain(self, node: gs.Node, slot: Slot, edges: Edges) -> None:
        x, w, b, y = _names(node)
        w_out, w_in = Slot(w, self.out_axis_of_weight), Slot(w, self.in_axis_of_weight)
        out_side = [Slot(y, 1), w_out] + ([Slot(b, 0)] if b else [])
        in_side = [Slot(x, 1), w_in]
        roles = {Slot(y, 1): Role.ACT, w_out: Role.OUT, Slot(b, 0): Role.PARAM,
                 Slot(x, 1): Role.ACT, w_in: Role.IN}
        for side in (out_side, in_side):
            if slot in side:
                for other in side:
                    if other != slot:
                        edges.same(slot, other, roles[other])
                return
        edges.block(slot, f"{node.op} {node.name}: spatial or kernel axis")

    def _grouped(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, w, b, y = _names(node)
        groups = self._groups(node)
        c_in, c_out = view.dim(Slot(x, 1)), view.dim(Slot(y, 1))
        if c_in is None or c_out is None:
            edges.block(slot, f"{node.op} {node.name}: channel counts unknown")
            return
        anchor = Slot(w, self._grouped_anchor())
        members = {Slot(x, 1): c_in // groups, Slot(y, 1): c_out // groups}
        members[anchor] = view.dim(anchor) // groups
        if b:
            members[Slot(b, 0)] = c_out // groups
        if slot not in members:
            edges.block(slot, f"{node.op} {node.name}: in-group or kernel axis of a grouped conv")
            return
        for other, per_group in members.items():
            role = Role.OUT if other == anchor else (
                Role.PARAM if other.tensor == b else Role.ACT)
            _link_groups(edges, slot, members[slot], other, per_group, groups, role)

    def rewrite(self, node: gs.Node, change: Change) -> None:
        groups = self._groups(node)
        if groups == 1:
            return
        x = node.inputs[0].name
        removed = len(change.removed(x, 1))
        if removed:
            per_group = change.view.dim(Slot(x, 1)) // groups
            node.attrs["group"] = groups - removed // per_group


def _link_groups(edges: Edges, a: Slot, a_per: int, b: Slot, b_per: int, groups: int,
                 role: Role) -> None:
    """Every index of group j on `a` goes with every index of group j on `b`."""
    a_idx = np.arange(a_per * groups)
    edges.map(a, b, a_idx, (a_idx // a_per) * b_per, role)
    if b_per > 1:
        b_idx = np.arange(b_per * groups)
        edges.map(b, b, b_idx, (b_idx // b_per) * b_per, role)


@register("Conv")
class Conv(_ConvFamily):
    """Weight [M, C/group, k...]: output channels on axis 0, input channels on axis 1."""


@register("ConvTranspose")
class ConvTranspose(_ConvFamily):
    """Weight [C, M/group, k...]: input channels on axis 0, output channels on axis 1."""

    out_axis_of_weight = 1
    in_axis_of_weight = 0
