"""Pooling: MaxPool, AveragePool, LpPool and their global forms (lax.reduce_window)."""

from __future__ import annotations

import functools
import itertools
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..registry import register
from .conv import geometry, offset_slices

if TYPE_CHECKING:
    from ..registry import Array, Node

# Kernel, strides, dilations, (begin, end) padding and the ceil-mode end padding, per axis.
Window = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], list[tuple[int, int]], list[int]]


def window(node: Node, x: Array) -> Window:
    """Kernel, strides, dilations and (begin, end) padding per spatial axis; with
    `ceil_mode`, the end padding grows so a last partial window is kept (unless it
    would start past the input and its begin padding)."""
    kernel = tuple(node.attr("kernel_shape"))
    strides, dilations, padding = geometry(node, x, kernel)
    extra = []
    for size, k, s, d, (lo, hi) in zip(x.shape[2:], kernel, strides, dilations, padding,
                                       strict=True):
        span = size + lo + hi - (k - 1) * d - 1
        count = (math.ceil(span / s) if node.attr("ceil_mode", 0) else span // s) + 1
        if node.attr("ceil_mode", 0) and (count - 1) * s >= size + lo:
            count -= 1
        extra.append(max((count - 1) * s + (k - 1) * d + 1 - (size + lo + hi), 0))
    return kernel, strides, dilations, padding, extra


def _reduce(x, init, fn, kernel, strides, dilations, padding):
    return lax.reduce_window(x, init, fn, (1, 1) + kernel, (1, 1) + strides,
                             [(0, 0), (0, 0)] + list(padding), window_dilation=(1, 1) + dilations)


@register("MaxPool")
def max_pool(node: Node, x: Array) -> Array:
    """The window maximum; with dilations, the maximum over the kernel offsets of
    strided slices (JAX has no gradient for a dilated reduce_window max)."""
    if node.outputs > 1:
        raise node.refuse("the Indices output is not translated")
    kernel, strides, dilations, padding, extra = window(node, x)
    padding = [(lo, hi + e) for (lo, hi), e in zip(padding, extra, strict=True)]
    if all(d == 1 for d in dilations):
        return window_max(x, kernel, strides, tuple(map(tuple, padding)))
    x = jnp.pad(x, [(0, 0), (0, 0)] + padding, constant_values=-jnp.inf)
    result = None
    for _, part in offset_slices(x, kernel, strides, dilations):
        result = part if result is None else jnp.maximum(result, part)
    return result


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def window_max(x: jax.Array, kernel: tuple[int, ...], strides: tuple[int, ...],
               padding: tuple[tuple[int, int], ...]) -> jax.Array:
    """The maximum over each window (-inf padding); its gradient goes to the first
    maximum of each window in row-major order, as XLA's own, computed per stride phase
    with unit-stride slices and pads (XLA's select-and-scatter is slow on CPU)."""
    return _reduce(x, -jnp.inf, lax.max, kernel, strides, (1,) * len(kernel), padding)


def _window_max_forward(x, kernel, strides, padding):
    y = window_max(x, kernel, strides, padding)
    return y, (x, y)


def _window_max_backward(kernel, strides, padding, residuals, g):
    x, y = residuals
    out = y.shape[2:]
    grid = [max(-(-(size + lo + hi) // s), n + (k - 1) // s) for size, (lo, hi), n, k, s
            in zip(x.shape[2:], padding, out, kernel, strides, strict=True)]
    split = _phase_split(x, grid, strides, padding)
    claimed, phases = jnp.zeros(y.shape, bool), {}
    for offset in itertools.product(*(range(k) for k in kernel)):
        phase = tuple(o % s for o, s in zip(offset, strides, strict=True))
        shift = [o // s for o, s in zip(offset, strides, strict=True)]
        reads = [(slice(u, u + n), a) for u, n, a in zip(shift, out, phase, strict=True)]
        window = split[(slice(None), slice(None)) + sum(reads, ())]
        hit = (window == y) & ~claimed
        claimed = claimed | hit
        part = jnp.pad(jnp.where(hit, g, 0), [(0, 0), (0, 0)] + [
            (u, q - n - u) for u, q, n in zip(shift, grid, out, strict=True)])
        phases[phase] = part if phase not in phases else phases[phase] + part
    return (_interleave(phases, x.shape, grid, strides, padding),)


def _phase_split(x, grid, strides, padding) -> jax.Array:
    """x padded with -inf to grid·strides per axis, viewed as [N, C, q₁, s₁, q₂, s₂, …]:
    index (u, a) of an axis is padded position u·s + a."""
    ends = [q * s - size - lo for q, s, size, (lo, _) in zip(grid, strides, x.shape[2:],
                                                             padding, strict=True)]
    xp = jnp.pad(x, [(0, 0), (0, 0)] + [(lo, e) for (lo, _), e in zip(padding, ends, strict=True)],
                 constant_values=-jnp.inf)
    return xp.reshape(x.shape[:2] + sum(((q, s) for q, s in zip(grid, strides, strict=True)), ()))


def _interleave(phases, shape, grid, strides, padding) -> jax.Array:
    """The padded gradient rebuilt from its stride phases, cropped to the input."""
    zero = jnp.zeros(shape[:2] + tuple(grid), next(iter(phases.values())).dtype)
    stacked = jnp.stack([phases.get(p, zero) for p in itertools.product(
        *(range(s) for s in strides))]).reshape(tuple(strides) + shape[:2] + tuple(grid))
    spatial = len(grid)
    order = [spatial, spatial + 1] + [a for i in range(spatial) for a in (spatial + 2 + i, i)]
    full = stacked.transpose(order).reshape(shape[:2] + tuple(q * s for q, s in zip(
        grid, strides, strict=True)))
    return full[(slice(None), slice(None)) + tuple(slice(lo, lo + size) for (lo, _), size in zip(
        padding, shape[2:], strict=True))]


window_max.defvjp(_window_max_forward, _window_max_backward)


@register("AveragePool")
def average_pool(node: Node, x: Array) -> Array:
    """Window sums over window counts: the explicit padding counts when
    `count_include_pad`, the ceil-mode extension never does."""
    kernel, strides, dilations, padding, extra = window(node, x)
    full = [(lo, hi + e) for (lo, hi), e in zip(padding, extra, strict=True)]
    total = _reduce(x, np.array(0, x.dtype), lax.add, kernel, strides, dilations, full)
    ones = jnp.ones((1, 1) + x.shape[2:], x.dtype)
    if node.attr("count_include_pad", 0):
        ones = jnp.pad(ones, [(0, 0), (0, 0)] + list(padding), constant_values=1)
        full = [(0, e) for e in extra]
    count = _reduce(ones, np.array(0, x.dtype), lax.add, kernel, strides, dilations, full)
    return total / count


@register("LpPool")
def lp_pool(node: Node, x: Array) -> Array:
    p = node.attr("p", 2)
    kernel, strides, dilations, padding, extra = window(node, x)
    full = [(lo, hi + e) for (lo, hi), e in zip(padding, extra, strict=True)]
    total = _reduce(jnp.abs(x) ** p, np.array(0, x.dtype), lax.add, kernel, strides,
                    dilations, full)
    return total ** (1 / p)


def _spatial(x):
    return tuple(range(2, x.ndim))


@register("GlobalAveragePool")
def global_average_pool(node: Node, x: Array) -> Array:
    return x.mean(axis=_spatial(x), keepdims=True)


@register("GlobalMaxPool")
def global_max_pool(node: Node, x: Array) -> Array:
    return x.max(axis=_spatial(x), keepdims=True)


@register("GlobalLpPool")
def global_lp_pool(node: Node, x: Array) -> Array:
    p = node.attr("p", 2)
    return (jnp.abs(x) ** p).sum(axis=_spatial(x), keepdims=True) ** (1 / p)
