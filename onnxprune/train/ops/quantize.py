"""QuantizeLinear and DequantizeLinear (QDQ), trainable by straight-through rounding.

A quantized weight (an integer initializer read by DequantizeLinear) is trained as
its dequantized float value: the forward pass fake-quantizes it — round(w / scale)
+ zero point, clipped to the integer type, then dequantized — and the gradient
passes the rounding unchanged (the straight-through estimator), and is zero where the
value is clipped. A QuantizeLinear on data yields the integer values carried in the
data's float type, rounded the same way, which its DequantizeLinear maps back.
Integer-only ops (QLinearConv, MatMulInteger, ...) are refused with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from onnx import helper

from ..registry import MS, refuse, register

if TYPE_CHECKING:
    from ..registry import Array, Node

STE_DTYPE = "__ste_dtype"  # set by `translate` on DequantizeLinear of a trained weight
refuse("integer-only arithmetic has no gradient; export the model with QDQ "
       "(QuantizeLinear/DequantizeLinear) instead", "QLinearConv", "QLinearMatMul",
       "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear")
refuse("integer-only arithmetic has no gradient; export the model with QDQ "
       "(QuantizeLinear/DequantizeLinear) instead", "QLinearAdd", "QLinearMul",
       "QLinearConcat", "QLinearGlobalAveragePool", "QLinearSigmoid", domain=MS)


def _axis_view(node, value, x):
    """A per-axis scale or zero point shaped to broadcast against x."""
    value = jnp.asarray(value)
    if value.ndim == 0 or value.size == 1:
        return value.reshape(())
    if node.attr("block_size", 0):
        raise node.refuse("blocked quantization is not translated")
    shape = [1] * x.ndim
    shape[node.attr("axis", 1) % x.ndim] = -1
    return value.reshape(shape)


def _range(dtype) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def round_through(y: jax.Array, low: int, high: int) -> jax.Array:
    """clip(round(y), low, high), whose gradient is 1 where low ≤ y ≤ high and 0
    elsewhere (the straight-through estimator, clipped)."""
    inside = (y >= low) & (y <= high)
    passed = jnp.where(inside, y - jax.lax.stop_gradient(y), 0)
    return jax.lax.stop_gradient(jnp.clip(jnp.round(y), low, high)) + passed


def _quantized_type(node, zero_point):
    if zero_point is not None:
        return zero_point.dtype
    to = node.attr("output_dtype", 0)
    return np.dtype(helper.tensor_dtype_to_np_dtype(to) if to else np.uint8)


@register("QuantizeLinear", numpy=True)
def quantize(node: Node, x: Array, scale: Array, zero_point: Array | None = None) -> Array:
    """saturate(round(x / scale) + zero point); in JAX, the values in x's float type."""
    dtype = _quantized_type(node, zero_point)
    if not np.issubdtype(dtype, np.integer):
        raise node.refuse(f"{np.dtype(dtype).name} quantization is not translated")
    low, high = _range(dtype)
    zp = 0 if zero_point is None else zero_point
    if node.xp is np:
        y = np.round(x / scale.reshape(_shape(node, scale, x))) + np.asarray(zp).reshape(
            _shape(node, np.asarray(zp), x))
        return np.clip(y, low, high).astype(dtype)
    y = x / _axis_view(node, scale, x) + _axis_view(node, zp, x).astype(x.dtype)
    return round_through(y, low, high)


def _shape(node, value, x):
    if value.size == 1:
        return ()
    shape = [1] * x.ndim
    shape[node.attr("axis", 1) % x.ndim] = -1
    return shape


@register("DequantizeLinear", numpy=True)
def dequantize(node: Node, x: Array, scale: Array, zero_point: Array | None = None) -> Array:
    """(x − zero point) · scale; a trained weight is fake-quantized first."""
    zp = np.zeros((), np.int32) if zero_point is None else zero_point
    if node.xp is np:
        return ((x.astype(np.int32) - zp.astype(np.int32).reshape(_shape(node, zp, x)))
                * scale.reshape(_shape(node, scale, x))).astype(scale.dtype)
    scale_view = _axis_view(node, scale, x)
    zp_view = _axis_view(node, zp, x).astype(scale.dtype)
    if STE_DTYPE in node.attrs:
        low, high = _range(node.attrs[STE_DTYPE])
        x = round_through(x / scale_view + zp_view, low, high)
    return (x.astype(scale.dtype) - zp_view) * scale_view
