"""Conv and ConvTranspose, 1-D to 3-D, plain, grouped and depthwise.

Plain: output channels are produced by the weight's output axis (with the bias);
input channels are absorbed by the weight's input axis. Grouped: a whole group
of input channels goes with its group of output channels, and pruning rewrites
`group` (depthwise is the case of one channel per group).

Cost: every output element takes one multiply-accumulate per weight entry of its
group (Conv), every input element one per weight entry it spreads to (ConvTranspose).
Bias carrier: the bias input, else the shift of a BatchNormalization or a
per-channel Add right after. Refit: plain convolutions, one system per kernel tap.
Sparsity (Conv): the weight W[K, C/g, k...] grouped along C; its input rows are
sampled im2col patches, columns in (kernel tap, channel) order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from ..errors import InputError
from .layer import (
    added_after,
    elements,
    normalized_after,
    own_bias,
    per_output,
    reads_at,
    weight_input,
)
from .registry import Sink, SparseLayer, register
from .rule import Change, Rule

if TYPE_CHECKING:
    from ..sparsity.layers import Layer


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


class Conv(_ConvFamily):
    """Weight [M, C/group, k...]: output channels on axis 0, input channels on axis 1."""


class ConvTranspose(_ConvFamily):
    """Weight [C, M/group, k...]: input channels on axis 0, output channels on axis 1."""

    out_axis_of_weight = 1
    in_axis_of_weight = 0


IM2COL_ROWS = 4096  # positions sampled per batch for a convolution's Gram matrix


def _macs(node: gs.Node, shape_of) -> int:
    """Output elements (Conv) or input elements (ConvTranspose) × weight entries per
    output channel."""
    w = shape_of(node.inputs[1].name)
    if not w:
        return 0
    if node.op == "ConvTranspose":
        return elements(shape_of(node.inputs[0].name)) * elements(w[1:])
    return elements(shape_of(node.outputs[0].name) if node.outputs else None) * elements(w[1:])


def _strides(node: gs.Node, kernel_axes: int) -> float:
    return float(np.prod(node.attrs.get("strides", [1] * kernel_axes)))


def _bias(node: gs.Node):
    carrier = own_bias(node) or normalized_after(node)
    if carrier is not None:
        return carrier
    w = node.inputs[1].shape
    channels = w[0] if node.op == "Conv" else w[1] * int(node.attrs.get("group", 1))
    return added_after(node, channels, len(w) - 2)


def _contribution(node: gs.Node, values: np.ndarray, axis: int, means: np.ndarray):
    """Plain convolutions: the removed inputs' kernels summed over taps × their means;
    a transposed convolution spreads each input pixel over its kernel, and an output
    pixel gets on average 1 / ∏strides of those taps."""
    if int(node.attrs.get("group", 1)) != 1:
        return None
    kernel = values.sum(axis=tuple(range(2, values.ndim)))
    if node.op == "Conv":
        return kernel @ means
    return means @ kernel / _strides(node, values.ndim - 2)


def _refittable(node: gs.Node, weight: gs.Constant) -> bool:
    return reads_at(node, 1, weight) and int(node.attrs.get("group", 1)) == 1


def _output_shift(node: gs.Node, weight: np.ndarray, shift: np.ndarray) -> np.ndarray:
    if node.op == "ConvTranspose":
        return per_output(weight, shift) / _strides(node, weight.ndim - 2)
    return per_output(weight, shift)


def _shape_problem(shape: tuple[int, ...]) -> str | None:
    return f"Conv weight of rank {len(shape)}" if len(shape) < 3 else None


def _unmeasurable(layer: Layer, gram: bool) -> str | None:
    if gram and (layer.attrs.get("group", 1) != 1 or len(layer.shape) != 4):
        return "grouped or non-2-D convolution"
    return None


def _input_key(layer: Layer) -> tuple:
    return (layer.activation, "Conv", tuple(layer.shape),
            tuple(sorted((k, str(v)) for k, v in layer.attrs.items())))


def channel_sq(layer: Layer, value: np.ndarray) -> tuple[np.ndarray, int]:
    """Σx² of a convolution's input per matrix-view entry [K, R·S·C/g] (each channel's
    sum repeated for every kernel position, each output row seeing its own group), and
    the rows it sums over."""
    groups = layer.attrs.get("group", 1)
    per_channel = np.square(value, dtype=np.float64).sum(axis=tuple(
        a for a in range(value.ndim) if a != 1))
    per_group = np.tile(per_channel.reshape(groups, -1), (1, int(np.prod(layer.shape[2:]))))
    return np.repeat(per_group, layer.shape[0] // groups, axis=0), value.size // value.shape[1]


def im2col(layer: Layer, value: np.ndarray, seed: int) -> np.ndarray:
    """Sampled input patches of a 2-D convolution, columns in (r, s, c) order."""
    rng = np.random.default_rng(seed)
    kernel = layer.shape[2:]
    strides = layer.attrs.get("strides", [1, 1])
    dilations = layer.attrs.get("dilations", [1, 1])
    pads = layer.attrs.get("pads", [0, 0, 0, 0])
    if layer.attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise InputError(f"{layer.node}: auto_pad convolutions are not measured")
    padded = np.pad(value, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilations, strict=True)]
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=(2, 3))
    windows = windows[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    n, c, oh, ow = windows.shape[:4]
    picks = rng.choice(n * oh * ow, min(IM2COL_ROWS, n * oh * ow), replace=False)
    b, rest = np.divmod(picks, oh * ow)
    y, x = np.divmod(rest, ow)
    patches = windows[b, :, y, x]  # [P, C, R, S]
    return np.moveaxis(patches, 1, -1).reshape(len(picks), -1)


_SINK = Sink(_bias, _contribution, _refittable, _output_shift)
register("Conv", rule=Conv(), compute=True, macs=_macs, sink=_SINK, timed=weight_input(1),
         sparse=SparseLayer(lambda attrs: [(1, 1)], _shape_problem, lambda shape, axis: shape[0],
                            im2col, _unmeasurable, _input_key, channel_sq))
register("ConvTranspose", rule=ConvTranspose(), compute=True, macs=_macs, sink=_SINK,
         timed=weight_input(1))
