"""Normalizations: BatchNormalization (inference), Layer-, Instance-, Group-, RMS- and
Lp-normalization, MeanVarianceNormalization, LRN. Statistics of half-precision inputs
are computed in float32, as onnxruntime does."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp
from jax import lax

from ..registry import register

if TYPE_CHECKING:
    import jax

    from ..registry import Array, Node


def _per_channel(v, ndim):
    return v.reshape((-1,) + (1,) * (ndim - 2))


def _wide(x):
    return x.astype(jnp.float32) if x.dtype in (jnp.float16, jnp.bfloat16) else x


@register("BatchNormalization")
def batch_norm(node: Node, x: Array, scale: Array, bias: Array, mean: Array, var: Array) -> Array:
    """Y = (X − mean) / √(var + ε) · scale + bias, with the running statistics."""
    if node.attr("training_mode", 0):
        raise node.refuse("training_mode=1 is not translated")
    inv = lax.rsqrt(_wide(var) + node.attr("epsilon", 1e-5)).astype(x.dtype)
    return (x - _per_channel(mean, x.ndim)) * _per_channel(inv * scale, x.ndim) \
        + _per_channel(bias, x.ndim)


def standardize(x: Array, axes: tuple[int, ...], epsilon: float
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(X − mean) / √(var + ε) over `axes`, with the mean and 1/√(var + ε)."""
    wide = _wide(x)
    mean = wide.mean(axis=axes, keepdims=True)
    centered = wide - mean
    inv = lax.rsqrt((centered * centered).mean(axis=axes, keepdims=True) + epsilon)
    return (centered * inv).astype(x.dtype), mean, inv


@register("LayerNormalization")
def layer_norm(node: Node, x: Array, scale: Array, bias: Array | None = None) -> tuple[Array, ...]:
    """Standardize over the axes from `axis` on, then scale and shift."""
    axis = node.attr("axis", -1) % x.ndim
    y, mean, inv = standardize(x, tuple(range(axis, x.ndim)), node.attr("epsilon", 1e-5))
    y = y * scale if bias is None else y * scale + bias
    return (y, mean, inv)[:node.outputs]


@register("InstanceNormalization")
def instance_norm(node: Node, x: Array, scale: Array, bias: Array) -> Array:
    y, _, _ = standardize(x, tuple(range(2, x.ndim)), node.attr("epsilon", 1e-5))
    return y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)


@register("GroupNormalization")
def group_norm(node: Node, x: Array, scale: Array, bias: Array) -> Array:
    """Standardize per group of channels; scale and bias are per group before opset
    21, per channel from 21."""
    groups = node.attr("num_groups")
    shape = x.shape
    grouped = x.reshape((shape[0], groups, -1))
    y, _, _ = standardize(grouped, (2,), node.attr("epsilon", 1e-5))
    if node.opset < 21:
        scale, bias = (jnp.repeat(v, shape[1] // groups) for v in (scale, bias))
    return y.reshape(shape) * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)


@register("RMSNormalization")
def rms_norm(node: Node, x: Array, scale: Array) -> Array:
    axis = node.attr("axis", -1) % x.ndim
    wide = _wide(x)
    ms = (wide * wide).mean(axis=tuple(range(axis, x.ndim)), keepdims=True)
    return (wide * lax.rsqrt(ms + node.attr("epsilon", 1e-5))).astype(x.dtype) * scale


@register("LpNormalization")
def lp_norm(node: Node, x: Array) -> Array:
    p, axis = node.attr("p", 2), node.attr("axis", -1)
    norm = jnp.sum(jnp.abs(x) ** p, axis=axis, keepdims=True) ** (1 / p)
    return x / norm


@register("MeanVarianceNormalization")
def mean_variance_norm(node: Node, x: Array) -> Array:
    axes = tuple(node.attr("axes", [0, 2, 3]))
    mean = x.mean(axis=axes, keepdims=True)
    std = jnp.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True))
    return (x - mean) / (std + 1e-9)


@register("LRN")
def lrn(node: Node, x: Array) -> Array:
    """x / (bias + alpha / size · Σ over `size` neighbouring channels of x²) ** beta."""
    size = node.attr("size")
    alpha, beta, bias = node.attr("alpha", 1e-4), node.attr("beta", 0.75), node.attr("bias", 1.0)
    pad = [(0, 0), ((size - 1) // 2, size // 2)] + [(0, 0)] * (x.ndim - 2)
    square = jnp.pad(x * x, pad)
    total = sum(square[:, i:i + x.shape[1]] for i in range(size))
    return x / (bias + alpha / size * total) ** beta
