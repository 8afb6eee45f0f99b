"""Retraining-free reconstruction.

Bias compensation (as in FLAP, An et al. 2024): a removed channel c that feeds a
consumer with weights W contributes, on average, W[:, c] · E[x_c] to every output.
That mean contribution is folded into the consumer's bias — the Conv/Gemm bias, the
bias Add after a MatMul, or the shift of a BatchNormalization right after a biasless
Conv or ConvTranspose — so only the channel's fluctuation around its mean is lost.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .calibrate import ChannelStats
from .criteria.activation import sink_activations
from .depgraph import DepGraph, Group, Role, Slot


def compensate_bias(dep: DepGraph, removed_units: dict[int, np.ndarray],
                    stats: dict[tuple[str, int], ChannelStats]) -> tuple[int, int]:
    """Fold removed channels' mean contributions into consumer biases, in place on the
    analyzed graph. Returns (consumers compensated, consumers without a bias to hold it)."""

    def fold(node, weight, gone, found):
        idx = np.flatnonzero(gone)
        return _contribution(node, weight, idx, found.mean[idx], dep)

    return _fold_all(dep, removed_units, stats, fold)


def _fold_all(dep: DepGraph, removed_units, stats, fold) -> tuple[int, int]:
    """For every consumer of a pruned (exact) group with statistics at its input, let
    `fold` return a per-output-channel bias shift and add it. (done, missed) counts."""
    done = missed = 0
    for group in dep.groups:
        units = removed_units.get(group.id)
        if units is None or not len(units) or group.approximate:
            continue
        for node, weight, act in sinks(group, dep):
            found = (stats or {}).get((act.tensor, act.axis))
            if found is None:
                continue
            delta = fold(node, weight, np.isin(group.members[weight], units), found)
            if delta is not None and add_to_bias(node, delta):
                done += 1
            else:
                missed += 1
    return done, missed


def sinks(group: Group, dep: DepGraph):
    """(consumer node, its weight slot, its activation slot) for each absorbing layer."""
    acts = sink_activations(group, dep.view)
    for weight in group.slots(Role.IN):
        tensor = dep.view.tensors.get(weight.tensor)
        if not isinstance(tensor, gs.Constant):
            continue
        for node in tensor.outputs:
            inputs = {t.name for t in node.inputs}
            mine = [a for a in acts if a.tensor in inputs]
            if node.op in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(mine) == 1 and \
                    len(group.members[mine[0]]) == len(group.members[weight]):
                yield node, weight, mine[0]


def _contribution(node: gs.Node, weight: Slot, idx: np.ndarray, means: np.ndarray,
                  dep: DepGraph) -> np.ndarray | None:
    """Per output channel: Σ over removed inputs of weight slice × mean input."""
    values = np.take(np.asarray(dep.view.const(weight.tensor), np.float64), idx, weight.axis)
    if node.op in ("Conv", "ConvTranspose"):
        if int(node.attrs.get("group", 1)) != 1:
            return None
        kernel = values.sum(axis=tuple(range(2, values.ndim)))
        if node.op == "Conv":
            return kernel @ means
        # Each input pixel spreads over the kernel; an output pixel gets on average
        # 1 / ∏strides of those taps.
        strides = node.attrs.get("strides", [1] * (values.ndim - 2))
        return means @ kernel / float(np.prod(strides))
    if values.ndim != 2:
        return None
    delta = np.tensordot(means, values, axes=([0], [weight.axis]))
    if node.op == "Gemm":
        delta *= float(node.attrs.get("alpha", 1.0)) / float(node.attrs.get("beta", 1.0))
    return delta


def add_to_bias(node: gs.Node, delta: np.ndarray) -> bool:
    carrier = bias_of(node)
    if carrier is None:
        return False
    tensor, scale = carrier
    values = np.asarray(tensor.values)
    if values.size != delta.size:
        return False
    tensor.values = (values + (delta * scale).reshape(values.shape)).astype(values.dtype)
    return True


def _per_channel(shape: tuple, node: gs.Node, channels: int) -> bool:
    """Whether a constant of this shape adds one value per output channel of the node
    (channels on axis 1 of a Conv output, on the last axis of a matrix product)."""
    trailing = len(node.inputs[1].shape) - 2 if node.op in ("Conv", "ConvTranspose") else 0
    if len(shape) <= trailing or shape[len(shape) - trailing - 1] != channels:
        return False
    return int(np.prod(shape)) == channels


def bias_of(node: gs.Node):
    """The unshared constant that adds per output channel after the node, with the
    factor a unit of the node's output becomes in it."""
    if node.op in ("Conv", "ConvTranspose", "Gemm") and len(node.inputs) > 2 and \
            _own(node.inputs[2]):
        return node.inputs[2], 1.0
    users = node.outputs[0].outputs
    if len(users) != 1:
        return None
    user = users[0]
    if user.op == "BatchNormalization" and node.op in ("Conv", "ConvTranspose") and all(
            isinstance(t, gs.Constant) for t in user.inputs[1:5]) and _own(user.inputs[2]):
        scale, var = (np.asarray(user.inputs[i].values, np.float64) for i in (1, 4))
        return user.inputs[2], scale / np.sqrt(var + float(user.attrs.get("epsilon", 1e-5)))
    if user.op == "Add":
        other = [t for t in user.inputs if t is not node.outputs[0]]
        channels = {"Conv": lambda w: w[0], "ConvTranspose": lambda w: w[1] * int(
            node.attrs.get("group", 1)), "MatMul": lambda w: w[-1]}.get(
            node.op, lambda w: None)(node.inputs[1].shape)
        if len(other) == 1 and _own(other[0]) and channels and _per_channel(
                tuple(other[0].shape), node, channels):
            return other[0], 1.0
    return None


def _own(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant) and len(tensor.outputs) == 1
