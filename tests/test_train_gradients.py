"""Gradients of the JAX translation against finite differences (float64), on small
graphs covering every op family; depthwise paths; straight-through QDQ weights."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from train_graphs import CASES, case  # noqa: E402

from onnxprune.train import translate  # noqa: E402

SMOOTH = [name for name in CASES if name != "qdq"]  # rounding has no derivative


def _loss(translated, params, feeds, seed: int = 0):
    """A scalar loss of (params, float inputs): every output · a fixed random tensor."""
    fixed = {k: v for k, v in feeds.items() if v.dtype.kind != "f"}
    f = translated.function()
    shapes = jax.eval_shape(f, params, feeds)
    rng = np.random.default_rng(seed)
    weights = {k: rng.standard_normal(s.shape) for k, s in shapes.items()}

    def loss(params, floats):
        out = f(params, {**floats, **fixed})
        return sum(jnp.sum(out[k] * weights[k]) for k in weights)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))  # one compilation


def _directional(loss, point, direction, eps: float) -> float:
    plus = jax.tree.map(lambda p, d: p + eps * d, point, direction)
    minus = jax.tree.map(lambda p, d: p - eps * d, point, direction)
    return float(loss(*plus)[0] - loss(*minus)[0]) / (2 * eps)


@pytest.mark.parametrize("name", SMOOTH)
def test_gradient_matches_central_differences(name):
    model, feeds = case(name)
    translated = translate(model)
    with jax.enable_x64(True):
        params = {k: v.astype(np.float64) for k, v in translated.params.items()}
        floats = {k: v.astype(np.float64) for k, v in feeds.items() if v.dtype.kind == "f"}
        loss = _loss(translated, params, {**feeds, **floats})
        _, grads = loss(params, floats)
        rng = np.random.default_rng(1)
        for _ in range(2):
            direction = jax.tree.map(lambda p: rng.standard_normal(p.shape), (params, floats))
            analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(
                jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True))
            numeric = _directional(loss, (params, floats), direction, 1e-6)
            assert abs(analytic - numeric) <= 1e-6 * max(abs(numeric), 1.0), (analytic, numeric)


def test_quantized_weight_trains_straight_through():
    """The gradient with respect to a QDQ weight is the gradient with respect to its
    dequantized value (the rounding passes it unchanged)."""
    model, feeds = case("qdq")
    translated = translate(model)
    (name,) = [k for k, v in translated.params.items() if v.ndim == 4]
    f = translated.function()
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    g = translated.function([conv.input[1]])

    def loss(params):
        return jnp.sum(f(params, feeds)[conv.output[0]] ** 2)
    grad = jax.jit(jax.grad(loss))(translated.params)[name]
    weight = np.asarray(g(translated.params, feeds)[conv.input[1]])
    np.testing.assert_array_equal(weight, translated.params[name])  # a grid point

    def loss_of_weight(w):
        params = {k: v for k, v in translated.params.items() if k != name}
        return jnp.sum(f({**params, name: w}, feeds)[conv.output[0]] ** 2)
    assert np.abs(np.asarray(grad)).sum() > 0
    np.testing.assert_allclose(grad, jax.grad(loss_of_weight)(weight), rtol=1e-6)


def test_quantized_activation_gradient_is_one_inside_the_range_zero_outside():
    model, _ = case("qdq")
    translated = translate(model)
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear")
    f = translated.function([dq.output[0]])
    x = np.linspace(-4, 4, 2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6) + 0.001

    def total(x):
        return jnp.sum(f(translated.params, {"x": x})[dq.output[0]])
    grad = np.asarray(jax.grad(total)(x))
    inside = (x > -128 * 0.02) & (x < 127 * 0.02)  # uint8, zero point 128, scale 0.02
    np.testing.assert_array_equal(grad, inside.astype(np.float32))
