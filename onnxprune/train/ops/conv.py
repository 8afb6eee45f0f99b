"""Conv and ConvTranspose (any number of spatial axes, groups, dilations).

Depthwise convolutions (one input channel per group) have two translations with the
same values: XLA's grouped convolution, and a sum over kernel offsets of a strided
slice of the padded input times that offset's per-channel weight (`shifted_sum`).
On CPU XLA's weight gradient of a grouped convolution is slow, the shifted sum is not;
`depthwise="auto"` (the default) takes the shifted sum on CPU and XLA's grouped
convolution elsewhere (see `tools/bench_train_step.py` for the measured step times).
Other convolutions keep XLA's forward pass; their weight gradient is XLA's, or is
computed on the host by BLAS where XLA's is slow (`conv_grad`, option
`conv_weight_grad`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from ..compile import compiler_options
from ..registry import register
from .conv_grad import conv_host_grad

if TYPE_CHECKING:
    from ..registry import Array, Node


def conv_padding(node: Node, x_shape: Sequence[int], kernel: Sequence[int],
                 strides: Sequence[int], dilations: Sequence[int]) -> list[tuple[int, int]]:
    """Per spatial axis (begin, end) padding from `pads` or `auto_pad`."""
    auto = node.attr("auto_pad", "NOTSET")
    spatial = len(kernel)
    if auto == "VALID":
        return [(0, 0)] * spatial
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if auto == "SAME_UPPER" else (large, small))
        return pads
    pads = node.attr("pads", [0] * 2 * spatial)
    return list(zip(pads[:spatial], pads[spatial:], strict=True))


def geometry(node: Node, x: Array, kernel: tuple[int, ...]
             ) -> tuple[tuple[int, ...], tuple[int, ...], list[tuple[int, int]]]:
    """Strides, dilations and (begin, end) padding per spatial axis of a kernel over x."""
    spatial = len(kernel)
    strides = tuple(node.attr("strides", [1] * spatial))
    dilations = tuple(node.attr("dilations", [1] * spatial))
    return strides, dilations, conv_padding(node, x.shape, kernel, strides, dilations)


@register("Conv")
def conv(node: Node, x: Array, w: Array, b: Array | None = None) -> Array:
    """Y = X ⋆ W (+ B), with `group` feature groups."""
    kernel = tuple(w.shape[2:])
    strides, dilations, padding = geometry(node, x, kernel)
    group = node.attr("group", 1)
    if group > 1 and w.shape[1] == 1 and depthwise_path(node) == "slices":
        y = shifted_sum(x, w, strides, dilations, padding)
    elif weight_gradient_path(node, x) == "host":
        y = conv_host_grad(x, w, strides, dilations, tuple(map(tuple, padding)), group)
    else:
        y = lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilations,
                                     feature_group_count=group, precision="highest")
    return y if b is None else y + b.reshape((-1,) + (1,) * len(kernel))


def depthwise_path(node: Node) -> str:
    """The depthwise translation chosen by the `depthwise` option."""
    choice = node.options.get("depthwise", "auto")
    if choice == "auto":
        return "slices" if jax.default_backend() == "cpu" else "conv"
    return choice


def weight_gradient_path(node: Node, x: Array) -> str:
    """Where the weight gradient is computed, by the `conv_weight_grad` option: "host"
    (numpy and BLAS, see `conv_grad`) or "xla". "auto" (the default) takes XLA's where
    `compile.jit` gives XLA's own CPU convolutions (their weight gradient is fast),
    else the host for float32 on the CPU backend, where XLA hands convolutions to
    YNNPACK (a callback's values pass through JAX's default precision, which
    `jax.enable_x64` does not change in XLA's threads)."""
    choice = node.options.get("conv_weight_grad", "auto")
    if choice == "auto":
        host = jax.default_backend() == "cpu" and x.dtype == jnp.float32
        return "host" if host and not compiler_options() else "xla"
    return choice


def shifted_sum(x: Array, w: Array, strides: Sequence[int], dilations: Sequence[int],
                padding: Sequence[tuple[int, int]]) -> jax.Array:
    """Depthwise convolution as Σ over kernel offsets of (strided slice of the padded
    input) × (that offset's weight per channel). Output channel o reads input channel
    o // m, m = out channels / in channels."""
    multiplier = w.shape[0] // x.shape[1]
    if multiplier > 1:
        x = jnp.repeat(x, multiplier, axis=1)
    x = jnp.pad(x, [(0, 0), (0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in padding])
    x = x[(slice(None), slice(None)) + tuple(
        slice(-min(lo, 0), x.shape[2 + i] + min(hi, 0)) for i, (lo, hi) in enumerate(padding))]
    kernel = w.shape[2:]
    total = None
    for offset, window in offset_slices(x, kernel, strides, dilations):
        term = window * w[(slice(None), 0) + offset].reshape((1, -1) + (1,) * len(kernel))
        total = term if total is None else total + term
    return total


def offset_slices(x: Array, kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int]) -> Iterator[tuple[tuple[int, ...], jax.Array]]:
    """Each kernel offset with the strided slice of the padded input `x` [N, C, ...] that
    it meets at every output position."""
    out = [(size - (k - 1) * d - 1) // s + 1
           for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True)]
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = [o * d for o, d in zip(offset, dilations, strict=True)]
        limit = [b + (n - 1) * s + 1 for b, n, s in zip(start, out, strides, strict=True)]
        yield offset, lax.slice(x, (0, 0, *start), (*x.shape[:2], *limit), (1, 1, *strides))


@register("ConvTranspose")
def conv_transpose(node: Node, x: Array, w: Array, b: Array | None = None) -> Array:
    """The gradient of Conv with respect to its input: X dilated by the strides,
    convolved with W flipped, in/out channels swapped per group."""
    if node.attr("output_shape") is not None or node.attr("auto_pad", "NOTSET") not in (
            "NOTSET", "VALID"):
        raise node.refuse("output_shape and SAME auto_pad are not translated; give pads")
    kernel = tuple(w.shape[2:])
    spatial, group = len(kernel), node.attr("group", 1)
    strides = tuple(node.attr("strides", [1] * spatial))
    dilations = tuple(node.attr("dilations", [1] * spatial))
    pads = node.attr("pads", [0] * 2 * spatial)
    extra = node.attr("output_padding", [0] * spatial)
    padding = [((k - 1) * d - pads[i], (k - 1) * d - pads[spatial + i] + extra[i])
               for i, (k, d) in enumerate(zip(kernel, dilations, strict=True))]
    c_in, m = w.shape[0], w.shape[1]
    w = w.reshape((group, c_in // group, m) + kernel).swapaxes(1, 2)
    w = jnp.flip(w.reshape((group * m, c_in // group) + kernel), axis=tuple(range(2, 2 + spatial)))
    y = lax.conv_general_dilated(x, w, (1,) * spatial, padding, lhs_dilation=strides,
                                 rhs_dilation=dilations, feature_group_count=group,
                                 precision="highest")
    return y if b is None else y + b.reshape((-1,) + (1,) * spatial)
