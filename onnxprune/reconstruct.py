"""Retraining-free reconstruction.

Bias compensation (as in FLAP, An et al. 2024): a removed channel c that feeds a
consumer with weights W contributes, on average, W[:, c] · E[x_c] to every output.
That mean contribution is folded into the consumer's bias — the Conv/Gemm bias, the
bias Add after a MatMul, or the shift of a BatchNormalization right after a biasless
Conv or ConvTranspose — so only the channel's fluctuation around its mean is lost.
Which layers absorb channels, their bias carriers and the contribution's closed form
are their op family's `sink` hook (`ops/`). Like every reconstruction it returns new
constant values by name, which the rewrite applies; the analyzed graph is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from .criteria.activation import sink_activations
from .depgraph import DepGraph, Group, Role, Slot
from .moments import Moments
from .ops import Sink, family_for
from .rewrite import Values, cut_groups

if TYPE_CHECKING:
    from .ops.registry import Carrier


def compensate_bias(dep: DepGraph, removed_units: dict[int, np.ndarray],
                    stats: dict[tuple[str, int], Moments]) -> tuple[Values, int, int]:
    """Fold removed channels' mean contributions into consumer biases. Returns the new
    bias values by name (the analyzed graph is left as it is), the consumers compensated
    and those without a bias to hold it."""

    def fold(node, weight, gone, found):
        idx = np.flatnonzero(gone)
        return _contribution(node, weight, idx, found.mean[idx], dep)

    return _fold_all(dep, removed_units, stats, fold)


def _fold_all(dep: DepGraph, removed_units, stats, fold) -> tuple[Values, int, int]:
    """For every consumer of a pruned (exact) group with statistics at its input, let
    `fold` return a per-output-channel bias shift and add it. New values, (done, missed)
    counts."""
    values: Values = {}
    done = missed = 0
    for group, units in cut_groups(dep, removed_units):
        if group.approximate:
            continue
        for node, weight, act in sinks(group, dep):
            found = (stats or {}).get((act.tensor, act.axis))
            if found is None:
                continue
            delta = fold(node, weight, np.isin(group.members[weight], units), found)
            if delta is not None and add_to_bias(node, delta, values):
                done += 1
            else:
                missed += 1
    return values, done, missed


def sinks(group: Group, dep: DepGraph) -> Iterator[tuple[gs.Node, Slot, Slot]]:
    """(consumer node, its weight slot, its activation slot) for each absorbing layer."""
    acts = sink_activations(group, dep.view)
    for weight in group.slots(Role.IN):
        tensor = dep.view.tensors.get(weight.tensor)
        if not isinstance(tensor, gs.Constant):
            continue
        for node in tensor.outputs:
            inputs = {t.name for t in node.inputs}
            mine = [a for a in acts if a.tensor in inputs]
            if _sink(node) is not None and len(mine) == 1 and \
                    len(group.members[mine[0]]) == len(group.members[weight]):
                yield node, weight, mine[0]


def _sink(node: gs.Node) -> Sink | None:
    family = family_for(node)
    return None if family is None else family.sink


def _contribution(node: gs.Node, weight: Slot, idx: np.ndarray, means: np.ndarray,
                  dep: DepGraph) -> np.ndarray | None:
    """Per output channel: Σ over removed inputs of weight slice × mean input."""
    values = np.take(np.asarray(dep.view.const(weight.tensor), np.float64), idx, weight.axis)
    return _sink(node).contribution(node, values, weight.axis, means)


def add_to_bias(node: gs.Node, delta: np.ndarray, values: Values) -> bool:
    """Add a per-output-channel shift to the node's bias carrier, as a new value in
    `values` (over the one already there, else the graph's); False without one."""
    carrier = bias_of(node)
    if carrier is None:
        return False
    tensor, scale = carrier
    current = np.asarray(values.get(tensor.name, tensor.values))
    if current.size != delta.size:
        return False
    values[tensor.name] = (current + (delta * scale).reshape(current.shape)).astype(
        current.dtype)
    return True


def bias_of(node: gs.Node) -> Carrier | None:
    """The unshared constant that adds per output channel after the node, with the
    factor a unit of the node's output becomes in it (None for a node that is not a
    sink or has no such constant)."""
    sink = _sink(node)
    return None if sink is None else sink.bias(node)
