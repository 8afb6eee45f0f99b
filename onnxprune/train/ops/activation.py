"""Activations and softmax, written as their ONNX definitions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import register

if TYPE_CHECKING:
    from ..registry import Array, Node


@register("Relu", numpy=True)
def relu(node: Node, x: Array) -> Array:
    if node.xp is np:
        return np.maximum(x, 0).astype(x.dtype)
    return _relu(x)


@jax.custom_jvp
def _relu(x: jax.Array) -> jax.Array:
    """max(x, 0) with jnp.maximum's derivative (1/2 at 0), written as one select
    (jnp.maximum's own rule divides two selects, a slow pass over every activation)."""
    return jnp.maximum(x, 0)


@_relu.defjvp
def _relu_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    slope = jnp.where(x > 0, 1.0, jnp.where(x == 0, 0.5, 0.0)).astype(x.dtype)
    return _relu(x), t * slope


@register("LeakyRelu")
def leaky_relu(node: Node, x: Array) -> Array:
    return jnp.where(x >= 0, x, node.attr("alpha", 0.01) * x)


@register("PRelu")
def prelu(node: Node, x: Array, slope: Array) -> Array:
    return jnp.where(x >= 0, x, slope * x)


@register("ThresholdedRelu")
def thresholded_relu(node: Node, x: Array) -> Array:
    return jnp.where(x > node.attr("alpha", 1.0), x, 0).astype(x.dtype)


@register("Elu")
def elu(node: Node, x: Array) -> Array:
    alpha = node.attr("alpha", 1.0)
    return jnp.where(x >= 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))


@register("Celu")
def celu(node: Node, x: Array) -> Array:
    alpha = node.attr("alpha", 1.0)
    return jnp.maximum(x, 0) + jnp.minimum(0, alpha * jnp.expm1(jnp.minimum(x, 0) / alpha))


@register("Selu")
def selu(node: Node, x: Array) -> Array:
    alpha, gamma = node.attr("alpha", 1.67326319217681884765625), node.attr(
        "gamma", 1.05070102214813232421875)
    return gamma * jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))


@register("Sigmoid")
def sigmoid(node: Node, x: Array) -> Array:
    return jax.nn.sigmoid(x)


@register("HardSigmoid")
def hard_sigmoid(node: Node, x: Array) -> Array:
    """max(0, min(1, alpha * x + beta))."""
    alpha, beta = node.attr("alpha", 0.2), node.attr("beta", 0.5)
    return jnp.clip(alpha * x + beta, 0, 1).astype(x.dtype)


@register("HardSwish")
def hard_swish(node: Node, x: Array) -> Array:
    """x * max(0, min(1, x / 6 + 1 / 2))."""
    return x * jnp.clip(x / 6 + 0.5, 0, 1).astype(x.dtype)


@register("Softplus")
def softplus(node: Node, x: Array) -> Array:
    return jax.nn.softplus(x)


@register("Softsign")
def softsign(node: Node, x: Array) -> Array:
    return x / (1 + jnp.abs(x))


@register("Mish")
def mish(node: Node, x: Array) -> Array:
    return x * jnp.tanh(jax.nn.softplus(x))


@register("Gelu")
def gelu(node: Node, x: Array) -> Array:
    """Gelu (opset 20): exact with erf, or the tanh approximation."""
    return jax.nn.gelu(x, approximate=node.attr("approximate", "none") == "tanh")


def _flattened(fn, node, x):
    """Before opset 13, softmax normalizes the input flattened to 2-D at `axis`."""
    if node.opset >= 13:
        return fn(x, axis=node.attr("axis", -1))
    axis = node.attr("axis", 1) % x.ndim
    flat = x.reshape(int(np.prod(x.shape[:axis])), -1)
    return fn(flat, axis=-1).reshape(x.shape)


@register("Softmax")
def softmax(node: Node, x: Array) -> Array:
    return _flattened(jax.nn.softmax, node, x)


@register("LogSoftmax")
def log_softmax(node: Node, x: Array) -> Array:
    return _flattened(jax.nn.log_softmax, node, x)


@register("Hardmax")
def hardmax(node: Node, x: Array) -> Array:
    def one_hot(values, axis):
        return jax.nn.one_hot(jnp.argmax(values, axis=axis), values.shape[axis],
                              axis=axis, dtype=values.dtype)
    return _flattened(one_hot, node, x)
