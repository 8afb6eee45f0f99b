"""LSTM, GRU and RNN as `lax.scan` over time, forward, reverse or both directions.
Sequence lengths shorter than the input, clipping and coupled input-forget gates are
refused."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..registry import register
from .matmul import PRECISION

if TYPE_CHECKING:
    from ..registry import Array, Node

ACTIVATIONS = {"Sigmoid": jax.nn.sigmoid, "Tanh": jnp.tanh, "Relu": jax.nn.relu}


def _activations(node, defaults: list[str]) -> list:
    names = node.attr("activations") or defaults
    names = [n.decode() if isinstance(n, bytes) else n for n in names]
    if any(n not in ACTIVATIONS for n in names):
        raise node.refuse(f"activations {names} are not translated")
    return [ACTIVATIONS[n] for n in names]


def _check(node, x, lengths):
    if node.attr("clip") is not None or node.attr("input_forget", 0):
        raise node.refuse("clip and input_forget are not translated")
    steps = x.shape[1 if node.attr("layout", 0) else 0]
    if lengths is not None and not (np.asarray(lengths) == steps).all():
        raise node.refuse("sequence_lens shorter than the sequence are not translated")


def run_directions(node: Node, x: jax.Array, cell: Callable[..., tuple[tuple, jax.Array]],
                   carries: Sequence[jax.Array], weights: Sequence[Array]
                   ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Scan `cell` over time for each direction; returns Y [T, D, B, H] and the
    last carries stacked per direction."""
    direction = node.attr("direction", "forward")
    reverse = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
    ys, lasts = [], []
    for d, backward in enumerate(reverse):
        last, y = lax.scan(lambda carry, xt, d=d: cell(carry, xt, *[w[d] for w in weights]),
                           tuple(c[d] for c in carries), x, reverse=backward)
        ys.append(y)
        lasts.append(last)
    stacked = tuple(jnp.stack(parts) for parts in zip(*lasts, strict=True))
    return jnp.stack(ys, axis=1), stacked


def _inputs(node, x, hidden, initial):
    if node.attr("layout", 0):
        x = jnp.swapaxes(x, 0, 1)
        initial = [None if h is None else jnp.swapaxes(h, 0, 1) for h in initial]
    directions = 2 if node.attr("direction", "forward") == "bidirectional" else 1
    zero = jnp.zeros((directions, x.shape[1], hidden), x.dtype)
    return x, [zero if h is None else h for h in initial]


def _outputs(node, y, lasts):
    if node.attr("layout", 0):
        y = jnp.transpose(y, (2, 0, 1, 3))
        lasts = tuple(jnp.swapaxes(h, 0, 1) for h in lasts)
    return (y, *lasts)[:node.outputs]


@register("LSTM", static=(4,))
def lstm(node: Node, x: Array, w: Array, r: Array, b: Array | None = None,
         lengths: Array | None = None, h0: Array | None = None, c0: Array | None = None,
         p: Array | None = None) -> tuple[Array, ...]:
    """Gates i, o, f, c (weights in that order), peepholes i, o, f."""
    _check(node, x, lengths)
    f, g, h = _activations(node, ["Sigmoid", "Tanh", "Tanh"])[:3]
    hidden = r.shape[-1]
    x, (h0, c0) = _inputs(node, x, hidden, [h0, c0])
    b = jnp.zeros((w.shape[0], 8 * hidden), x.dtype) if b is None else b
    p = jnp.zeros((w.shape[0], 3 * hidden), x.dtype) if p is None else p

    def cell(carry, xt, w, r, b, p):
        ht, ct = carry
        gates = jnp.matmul(xt, w.T, precision=PRECISION) + jnp.matmul(
            ht, r.T, precision=PRECISION) + b[:4 * hidden] + b[4 * hidden:]
        i, o, fg, c = jnp.split(gates, 4, axis=-1)
        pi, po, pf = jnp.split(p, 3)
        i, fg = f(i + pi * ct), f(fg + pf * ct)
        ct = fg * ct + i * g(c)
        ht = f(o + po * ct) * h(ct)
        return (ht, ct), ht
    y, lasts = run_directions(node, x, cell, (h0, c0), (w, r, b, p))
    return _outputs(node, y, lasts)


@register("GRU", static=(4,))
def gru(node: Node, x: Array, w: Array, r: Array, b: Array | None = None,
        lengths: Array | None = None, h0: Array | None = None) -> tuple[Array, ...]:
    """Gates z, r, h; `linear_before_reset` applies R_h before the reset gate."""
    _check(node, x, lengths)
    f, g = _activations(node, ["Sigmoid", "Tanh"])[:2]
    hidden = r.shape[-1]
    x, (h0,) = _inputs(node, x, hidden, [h0])
    b = jnp.zeros((w.shape[0], 6 * hidden), x.dtype) if b is None else b
    before = node.attr("linear_before_reset", 0)

    def cell(carry, xt, w, r, b):
        (ht,) = carry
        wz, wr, wh = jnp.split(jnp.matmul(xt, w.T, precision=PRECISION) + b[:3 * hidden], 3, -1)
        rz, rr, rh = jnp.split(r, 3)
        bz, br, bh = jnp.split(b[3 * hidden:], 3)
        z = f(wz + jnp.matmul(ht, rz.T, precision=PRECISION) + bz)
        reset = f(wr + jnp.matmul(ht, rr.T, precision=PRECISION) + br)
        if before:
            candidate = g(wh + reset * (jnp.matmul(ht, rh.T, precision=PRECISION) + bh))
        else:
            candidate = g(wh + jnp.matmul(reset * ht, rh.T, precision=PRECISION) + bh)
        ht = (1 - z) * candidate + z * ht
        return (ht,), ht
    y, lasts = run_directions(node, x, cell, (h0,), (w, r, b))
    return _outputs(node, y, lasts)


@register("RNN", static=(4,))
def rnn(node: Node, x: Array, w: Array, r: Array, b: Array | None = None,
        lengths: Array | None = None, h0: Array | None = None) -> tuple[Array, ...]:
    _check(node, x, lengths)
    (f,) = _activations(node, ["Tanh"])[:1]
    hidden = r.shape[-1]
    x, (h0,) = _inputs(node, x, hidden, [h0])
    b = jnp.zeros((w.shape[0], 2 * hidden), x.dtype) if b is None else b

    def cell(carry, xt, w, r, b):
        (ht,) = carry
        ht = f(jnp.matmul(xt, w.T, precision=PRECISION)
               + jnp.matmul(ht, r.T, precision=PRECISION) + b[:hidden] + b[hidden:])
        return (ht,), ht
    y, lasts = run_directions(node, x, cell, (h0,), (w, r, b))
    return _outputs(node, y, lasts)
