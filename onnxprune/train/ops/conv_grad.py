"""A convolution whose weight gradient is computed on the host by BLAS.

XLA's CPU backend computes a convolution's weight gradient as another convolution,
contracting over batch and space, and reaches a fraction of what the same product
takes as one matrix multiplication (resnet18 at batch 16: about half of a train
step). `conv_host_grad` keeps XLA's forward pass and input gradient and computes the
weight gradient in numpy: per kernel offset, the output gradient G [O, positions]
times the input read at that offset [C, positions]ᵀ, by one of two layouts of the
same product:

- flat: the padded input is split into its stride phases and flattened, and G is
  zero-padded to the same grid, so that every kernel offset reads a contiguous shift
  of one phase: one BLAS call per offset on a view, nothing copied. The zero padding
  costs (phase grid / output positions − 1) of extra work.
- windows: the input at every offset copied into one [offsets·C, positions] matrix
  (im2col), then one BLAS call. Exact work, one copy of the patches.

`layout` takes flat when the padding overhead is small, windows otherwise; flat with
few channels copies the shifts together into one product.

The host runs BLAS on one thread: XLA's own threads meanwhile go on with the rest of
the backward pass (the input gradients), and two pools sharing two cores each waiting
for the other cost more than they gain (resnet18 on 2 cores: about 0.4 s a step).
A convolution of an input that carries no gradient (the model's input) computes no
input gradient, so nothing of its branch's backward pass is left to overlap: its
weight gradient takes BLAS's own thread count.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Sequence

import jax
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from ...threads import one_blas_thread

Padding = tuple[tuple[int, int], ...]
FLAT_OVERHEAD = 1.2  # the most phase-grid positions per output position flat accepts
FLAT_CHANNELS = 16  # fewer input channels: flat copies the shifts into one product


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def conv_host_grad(x: jax.Array, w: jax.Array, strides: tuple[int, ...],
                   dilations: tuple[int, ...], padding: Padding, group: int) -> jax.Array:
    """`lax.conv_general_dilated` (NC... layout) whose weight gradient is computed on
    the host."""
    return xla_conv(x, w, strides, dilations, padding, group)


def xla_conv(x, w, strides, dilations, padding, group) -> jax.Array:
    """XLA's convolution of x [N, C, *S] by w [O, C/group, *kernel]."""
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilations,
                                    feature_group_count=group, precision="highest")


def _forward(x, w, strides, dilations, padding, group):
    # symbolic zeros: x and w come with whether they carry a gradient; the residuals
    # hold the names of those that do (static structure, no values)
    y = conv_host_grad(x.value, w.value, strides, dilations, padding, group)
    carried = tuple(n for n, v in (("input", x), ("weight", w)) if v.perturbed)
    return y, (x.value, w.value, {name: () for name in carried})


def _backward(strides, dilations, padding, group, residuals, g):
    x, w, carried = residuals
    if isinstance(g, SymbolicZero):
        return None, None
    dx = dw = None
    if "weight" in carried:
        kernel = functools.partial(weight_gradient, kernel=tuple(w.shape[2:]), strides=strides,
                                   dilations=dilations, padding=padding, group=group,
                                   dtype=w.dtype, threads=1 if "input" in carried else 0)
        dw = jax.pure_callback(kernel, jax.ShapeDtypeStruct(w.shape, w.dtype), x, g,
                               vmap_method="sequential")
    if "input" in carried:
        _, input_vjp = jax.vjp(lambda v: xla_conv(v, w, strides, dilations, padding, group), x)
        dx = input_vjp(g)[0]
    return dx, dw


conv_host_grad.defvjp(_forward, _backward, symbolic_zeros=True)


def weight_gradient(x: np.ndarray, g: np.ndarray, kernel: tuple[int, ...],
                    strides: Sequence[int], dilations: Sequence[int], padding: Padding,
                    group: int = 1, dtype: np.dtype | None = None,
                    threads: int = 1) -> np.ndarray:
    """∂L/∂W [O, C/group, *kernel] of a convolution of x [N, C, *S] whose output
    gradient is g [N, O, *out], in `dtype` (g's by default), on `threads` BLAS threads
    (0: BLAS's own count)."""
    xp = padded(np.asarray(x), padding)
    g = np.asarray(g)
    with one_blas_thread() if threads == 1 else contextlib.nullcontext():
        parts = [_group_gradient(xp_part, g_part, kernel, strides, dilations)
                 for xp_part, g_part in zip(np.split(xp, group, axis=1),
                                            np.split(g, group, axis=1), strict=True)]
    return np.concatenate(parts, axis=0).astype(g.dtype if dtype is None else dtype, copy=False)


def padded(x: np.ndarray, padding: Padding) -> np.ndarray:
    """x with (begin, end) padding per spatial axis; negative padding crops."""
    grown = np.pad(x, [(0, 0), (0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in padding])
    return grown[(slice(None), slice(None)) + tuple(
        slice(-min(lo, 0), grown.shape[2 + i] + min(hi, 0))
        for i, (lo, hi) in enumerate(padding))]


def layout(channels: int, padded_shape: Sequence[int], out: Sequence[int],
           kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> str:
    """"flat" or "windows" for one group's product (see the module's docstring)."""
    grid = phase_grid(padded_shape, out, kernel, strides, dilations)
    overhead = math.prod(grid) / math.prod(out)
    return "flat" if overhead <= FLAT_OVERHEAD else "windows"


def _group_gradient(xp, g, kernel, strides, dilations):
    out = g.shape[2:]
    if layout(xp.shape[1], xp.shape[2:], out, kernel, strides, dilations) == "flat":
        return flat_gradient(xp, g, kernel, strides, dilations)
    return windows_gradient(xp, g, kernel, strides, dilations)


def channel_major(g: np.ndarray) -> np.ndarray:
    """[N, O, *out] -> [O, N·prod(out)]."""
    return np.ascontiguousarray(np.moveaxis(g, 1, 0)).reshape(g.shape[1], -1)


def offsets(kernel: Sequence[int]) -> itertools.product:
    """Every kernel offset, in the weight's row-major order."""
    return itertools.product(*(range(k) for k in kernel))


def windows_gradient(xp, g, kernel, strides, dilations) -> np.ndarray:
    """Patches of the padded input [offsets·C, positions] and one product."""
    channels, out = xp.shape[1], g.shape[2:]
    moved = np.moveaxis(xp, 1, 0)
    patches = np.empty((math.prod(kernel), channels, xp.shape[0], *out), xp.dtype)
    for index, offset in enumerate(offsets(kernel)):
        patches[index] = moved[(slice(None), slice(None)) + tuple(
            slice(o * d, o * d + (n - 1) * s + 1, s)
            for o, d, n, s in zip(offset, dilations, out, strides, strict=True))]
    product = channel_major(g) @ patches.reshape(-1, patches[0, 0].size).T
    return product.reshape(g.shape[1], -1, channels).swapaxes(1, 2).reshape(
        (g.shape[1], channels, *kernel))


def phase_grid(padded_shape: Sequence[int], out: Sequence[int], kernel: Sequence[int],
               strides: Sequence[int], dilations: Sequence[int]) -> tuple[int, ...]:
    """Per spatial axis, the length of a stride phase in the flat layout: it holds the
    phase of the padded input and every output position shifted by any offset."""
    return tuple(max(-(-size // s), n + (k - 1) * d // s) for size, n, k, s, d in zip(
        padded_shape, out, kernel, strides, dilations, strict=True))


def flat_gradient(xp, g, kernel, strides, dilations) -> np.ndarray:
    """The product on contiguous shifts of the flattened stride phases: one BLAS call
    per kernel offset on a view, or (few channels) one on the shifts copied together."""
    batch, channels, out = xp.shape[0], xp.shape[1], g.shape[2:]
    grid = phase_grid(xp.shape[2:], out, kernel, strides, dilations)
    length = batch * math.prod(grid)
    pitch = [math.prod(grid[i + 1:]) for i in range(len(grid))]
    reads = {}  # offset -> (phase, flat shift)
    for offset in offsets(kernel):
        start = [o * d for o, d in zip(offset, dilations, strict=True)]
        reads[offset] = (tuple(s % st for s, st in zip(start, strides, strict=True)),
                         sum(s // st * p for s, st, p in zip(start, strides, pitch, strict=True)))
    width = length + max(shift for _, shift in reads.values())
    phases = {phase: _flat_phase(xp, phase, strides, grid, width)
              for phase in {phase for phase, _ in reads.values()}}
    spread = np.zeros((g.shape[1], batch, *grid), g.dtype)
    spread[(slice(None), slice(None)) + tuple(slice(0, n) for n in out)] = np.moveaxis(g, 1, 0)
    spread = spread.reshape(g.shape[1], length)
    shifts = [phases[phase][:, shift:shift + length] for phase, shift in reads.values()]
    if channels < FLAT_CHANNELS:
        product = spread @ np.concatenate(shifts).T
        return product.reshape(g.shape[1], -1, channels).swapaxes(1, 2).reshape(
            (g.shape[1], channels, *kernel))
    result = np.empty((g.shape[1], channels, *kernel), np.result_type(xp, g))
    for offset, view in zip(reads, shifts, strict=True):
        result[(slice(None), slice(None)) + offset] = spread @ view.T
    return result


def _flat_phase(xp, phase, strides, grid, width) -> np.ndarray:
    """[C, width]: the stride phase of xp, channel-major on the grid, then zeros."""
    flat = np.zeros((xp.shape[1], width), xp.dtype)
    view = flat[:, :xp.shape[0] * math.prod(grid)].reshape(xp.shape[1], xp.shape[0], *grid)
    part = np.moveaxis(xp[(slice(None), slice(None)) + tuple(
        slice(p, None, s) for p, s in zip(phase, strides, strict=True))], 1, 0)
    view[(slice(None), slice(None)) + tuple(slice(0, n) for n in part.shape[2:])] = part
    return flat
