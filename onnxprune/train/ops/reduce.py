"""Reductions (ReduceX, ArgMax/ArgMin, CumSum). Axes come from an attribute before
opset 18 (ReduceSum: 13) and from a static input after."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..registry import register
from .shape import ints

if TYPE_CHECKING:
    from ..registry import Array, Node

REDUCERS = {
    "ReduceSum": lambda xp, x, axes, keep: xp.sum(x, axis=axes, keepdims=keep),
    "ReduceMean": lambda xp, x, axes, keep: xp.mean(x, axis=axes, keepdims=keep),
    "ReduceMax": lambda xp, x, axes, keep: xp.max(x, axis=axes, keepdims=keep),
    "ReduceMin": lambda xp, x, axes, keep: xp.min(x, axis=axes, keepdims=keep),
    "ReduceProd": lambda xp, x, axes, keep: xp.prod(x, axis=axes, keepdims=keep),
    "ReduceL1": lambda xp, x, axes, keep: xp.sum(xp.abs(x), axis=axes, keepdims=keep),
    "ReduceL2": lambda xp, x, axes, keep: xp.sqrt(xp.sum(x * x, axis=axes, keepdims=keep)),
    "ReduceSumSquare": lambda xp, x, axes, keep: xp.sum(x * x, axis=axes, keepdims=keep),
    "ReduceLogSum": lambda xp, x, axes, keep: xp.log(xp.sum(x, axis=axes, keepdims=keep)),
    "ReduceLogSumExp": lambda xp, x, axes, keep: _logsumexp(xp, x, axes, keep),
}


def _logsumexp(xp, x, axes, keep):
    top = xp.max(x, axis=axes, keepdims=True)
    total = xp.log(xp.sum(xp.exp(x - top), axis=axes, keepdims=True)) + top
    return total if keep else xp.squeeze(total, axis=axes)


def reduce_axes(node: Node, x: Array, given: Array | None) -> tuple[int, ...] | None:
    """The reduced axes as a tuple; None for all; () when none and `noop_with_empty_axes`."""
    from_input = node.opset >= (13 if node.op == "ReduceSum" else 18)
    axes = (None if given is None else ints(given)) if from_input else node.attr("axes")
    if not axes:
        return () if node.attr("noop_with_empty_axes", 0) else None
    return tuple(a % max(x.ndim, 1) for a in axes)


@register(*REDUCERS, numpy=True, static=(1,))
def reduce(node: Node, x: Array, axes: Array | None = None) -> Array:
    axes = reduce_axes(node, x, axes)
    if axes == ():
        return x
    return REDUCERS[node.op](node.xp, x, axes, bool(node.attr("keepdims", 1)))


@register("ArgMax", "ArgMin", numpy=True)
def arg_extreme(node: Node, x: Array) -> Array:
    """Index of the first (or, with `select_last_index`, last) extreme value."""
    axis = node.attr("axis", 0) % x.ndim
    pick = node.xp.argmax if node.op == "ArgMax" else node.xp.argmin
    if node.attr("select_last_index", 0):
        index = x.shape[axis] - 1 - pick(node.xp.flip(x, axis), axis=axis)
    else:
        index = pick(x, axis=axis)
    index = index.astype(np.int64) if node.xp is np else index
    return node.xp.expand_dims(index, axis) if node.attr("keepdims", 1) else index


@register("CumSum", numpy=True, static=(1,))
def cumsum(node: Node, x: Array, axis: Array) -> Array:
    """Running sum along `axis`; `exclusive` shifts by one, `reverse` runs backward."""
    xp, axis = node.xp, ints(axis)[0] % x.ndim
    if node.attr("reverse", 0):
        x = xp.flip(x, axis)
    total = xp.cumsum(x, axis=axis)
    if node.attr("exclusive", 0):
        total = total - x
    return xp.flip(total, axis) if node.attr("reverse", 0) else total
