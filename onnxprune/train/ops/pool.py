"""Pooling: MaxPool, AveragePool, LpPool and their global forms (lax.reduce_window)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

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
        return _reduce(x, -jnp.inf, lax.max, kernel, strides, dilations, padding)
    x = jnp.pad(x, [(0, 0), (0, 0)] + padding, constant_values=-jnp.inf)
    result = None
    for _, part in offset_slices(x, kernel, strides, dilations):
        result = part if result is None else jnp.maximum(result, part)
    return result


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
