"""Concat, Split, Slice, Pad and the indexing ops: Gather, GatherElements, GatherND,
ScatterND, ScatterElements, TopK, NonZero."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..registry import register
from .shape import ints

if TYPE_CHECKING:
    from ..registry import Array, Node


@register("Concat", numpy=True)
def concat(node: Node, *xs: Array | None) -> Array:
    return node.xp.concatenate([x for x in xs if x is not None], axis=node.attr("axis"))


@register("Split", numpy=True, static=(1,))
def split(node: Node, x: Array, sizes: Array | None = None) -> tuple[Array, ...]:
    """Pieces of the given sizes (input from opset 13, attribute before), or
    `node.outputs` pieces of ⌈n / outputs⌉ (the last one shorter)."""
    axis = node.attr("axis", 0) % x.ndim
    sizes = node.attr("split") if node.opset < 13 else (None if sizes is None else ints(sizes))
    if not sizes:
        step = -(-x.shape[axis] // node.outputs)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(node.outputs)]
    return tuple(node.xp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


def _slice(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice bounds on one axis: negatives count from the end, then clamp."""
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


@register("Slice", numpy=True, static=(1, 2, 3, 4))
def slice_(node: Node, x: Array, starts: Array | None = None, ends: Array | None = None,
           axes: Array | None = None, steps: Array | None = None) -> Array:
    if node.opset < 10:
        starts, ends, axes = node.attr("starts"), node.attr("ends"), node.attr("axes")
    starts, ends = ints(starts), ints(ends)
    axes = list(range(len(starts))) if axes is None else [a % x.ndim for a in ints(axes)]
    steps = [1] * len(starts) if steps is None else ints(steps)
    index = [slice(None)] * x.ndim
    for a, b, e, s in zip(axes, starts, ends, steps, strict=True):
        index[a] = _slice(b, e, s, x.shape[a])
    return x[tuple(index)]


@register("Pad", numpy=True, static=(1, 3))
def pad(node: Node, x: Array, pads: Array | None = None, value: Array | None = None,
        axes: Array | None = None) -> Array:
    """Pad (negative amounts crop) in mode constant, reflect, edge or wrap."""
    pads = ints(node.attr("pads") if node.opset < 11 else pads)
    axes = list(range(x.ndim)) if axes is None else [a % x.ndim for a in ints(axes)]
    amounts = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        amounts[a] = (pads[i], pads[i + len(axes)])
    mode = node.attr("mode", "constant")
    kwargs = {}
    if mode == "constant":
        fill = node.attr("value", 0.0) if node.opset < 11 else (0 if value is None else value)
        kwargs["constant_values"] = node.xp.asarray(fill, dtype=x.dtype).reshape(())
    y = node.xp.pad(x, [(max(lo, 0), max(hi, 0)) for lo, hi in amounts], mode=mode, **kwargs)
    crop = tuple(slice(-min(lo, 0), y.shape[i] + min(hi, 0)) for i, (lo, hi) in
                 enumerate(amounts))
    return y[crop]


def _wrap(xp, indices, size):
    return xp.where(indices < 0, indices + size, indices)


@register("Gather", numpy=True)
def gather(node: Node, x: Array, indices: Array) -> Array:
    axis = node.attr("axis", 0) % x.ndim
    indices = _wrap(node.xp, indices, x.shape[axis])
    if node.xp is np:
        return np.take(x, indices, axis=axis)
    return jnp.take(x, indices, axis=axis, mode="clip")


@register("GatherElements", numpy=True)
def gather_elements(node: Node, x: Array, indices: Array) -> Array:
    axis = node.attr("axis", 0) % x.ndim
    return node.xp.take_along_axis(x, _wrap(node.xp, indices, x.shape[axis]), axis=axis)


def _nd_index(xp, shape, indices, batch_dims):
    """Index tuples into x viewed as [batch, rest...] for GatherND and ScatterND."""
    count, k = int(np.prod(shape[:batch_dims])), indices.shape[-1]
    flat = xp.reshape(indices, (count, -1, k))
    batch = xp.broadcast_to(xp.arange(count)[:, None], flat.shape[:2])
    parts = [_wrap(xp, flat[..., j], shape[batch_dims + j]) for j in range(k)]
    return (count,) + tuple(shape[batch_dims:]), (batch, *parts)


@register("GatherND", numpy=True)
def gather_nd(node: Node, x: Array, indices: Array) -> Array:
    batch_dims = node.attr("batch_dims", 0)
    view, index = _nd_index(node.xp, x.shape, indices, batch_dims)
    out = node.xp.reshape(x, view)[index]
    return node.xp.reshape(out, indices.shape[:-1] + x.shape[batch_dims + indices.shape[-1]:])


def _scatter(node, data, index, updates):
    reduction = node.attr("reduction", "none")
    if node.xp is np:
        out = data.copy()
        ufunc = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
        if reduction == "none":
            out[index] = updates
        else:
            ufunc[reduction].at(out, index, updates)
        return out
    ref = data.at[index]
    methods = {"none": ref.set, "add": ref.add, "mul": ref.multiply, "max": ref.max,
               "min": ref.min}
    return methods[reduction](updates)


@register("ScatterND", numpy=True)
def scatter_nd(node: Node, data: Array, indices: Array, updates: Array) -> Array:
    view, index = _nd_index(node.xp, data.shape, indices, 0)
    flat = _scatter(node, node.xp.reshape(data, view), index,
                    node.xp.reshape(updates, index[0].shape + view[1 + indices.shape[-1]:]))
    return node.xp.reshape(flat, data.shape)


@register("ScatterElements", "Scatter", numpy=True)
def scatter_elements(node: Node, data: Array, indices: Array, updates: Array) -> Array:
    axis = node.attr("axis", 0) % data.ndim
    grid = list(np.indices(indices.shape, sparse=True))
    grid[axis] = _wrap(node.xp, indices, data.shape[axis])
    return _scatter(node, data, tuple(grid), updates)


@register("TopK", static=(1,))
def top_k(node: Node, x: Array, k: Array) -> tuple[Array, ...]:
    """The k largest (or smallest) values along `axis`, sorted, and their indices."""
    axis, k = node.attr("axis", -1) % x.ndim, ints(k)[0]
    moved = jnp.moveaxis(x, axis, -1)
    largest = node.attr("largest", 1)
    values, indices = lax.top_k(moved if largest else -moved, k)
    values = values if largest else -values
    return jnp.moveaxis(values, -1, axis), jnp.moveaxis(indices, -1, axis)


@register("NonZero", numpy=True)
def nonzero(node: Node, x: Array) -> Array:
    if node.xp is not np:
        raise node.refuse("its output shape depends on data")
    return np.array(np.nonzero(x), np.int64)
