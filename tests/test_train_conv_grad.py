"""The host-computed convolution weight gradient and MaxPool's phase gradient against
XLA's own gradients; ReLU's gradient at zero."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402
from train_graphs import case  # noqa: E402

from onnxprune.train import translate  # noqa: E402
from onnxprune.train.ops import conv_grad  # noqa: E402
from onnxprune.train.ops.pool import window_max  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"
# x shape, w shape, strides, dilations, (begin, end) padding per axis, group
CONVS = [
    ((2, 4, 9, 9), (6, 4, 3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), 1),
    ((2, 20, 11, 10), (6, 10, 3, 2), (2, 1), (1, 2), ((1, 0), (2, -1)), 2),
    ((2, 32, 16, 16), (8, 32, 3, 3), (2, 2), (1, 1), ((1, 1), (1, 1)), 1),
    ((2, 17, 30, 30), (8, 17, 3, 3), (1, 1), (2, 2), ((2, 2), (2, 2)), 1),
    ((2, 3, 30, 28), (8, 3, 7, 7), (2, 2), (1, 1), ((3, 3), (3, 3)), 1),
    ((2, 3, 17), (5, 3, 4), (3,), (1,), ((2, 1),), 1),
    ((1, 17, 5, 6, 7), (4, 17, 2, 3, 2), (1, 2, 1), (1, 1, 2), ((0, 1), (1, 1), (2, 0)), 1),
]


def _xla_grads(x, w, g, strides, dilations, padding, group):
    _, vjp = jax.vjp(lambda x, w: conv_grad.xla_conv(x, w, strides, dilations, padding,
                                                     group), x, w)
    return [np.asarray(v) for v in vjp(g)]


def _data(x_shape, w_shape, strides, dilations, padding, group, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    y = conv_grad.xla_conv(x, w, strides, dilations, padding, group)
    return x, w, rng.standard_normal(y.shape).astype(np.float32)


def _close(actual, expected, tolerance=1e-5):
    scale = np.abs(expected).max()
    assert np.abs(np.asarray(actual) - expected).max() <= tolerance * scale


@pytest.mark.parametrize("spec", CONVS)
def test_both_layouts_give_xla_weight_gradient(spec):
    x, w, g = _data(*spec)
    _, strides, dilations, padding, group = spec[1:]
    expected = _xla_grads(x, w, g, strides, dilations, padding, group)[1]
    xp = conv_grad.padded(x, padding)
    for layout in (conv_grad.flat_gradient, conv_grad.windows_gradient):
        parts = [layout(a, b, w.shape[2:], strides, dilations) for a, b in zip(
            np.split(xp, group, axis=1), np.split(g, group, axis=1), strict=True)]
        _close(np.concatenate(parts), expected)


@pytest.mark.parametrize("spec", CONVS)
def test_jitted_conv_has_xla_gradients(spec):
    x, w, g = _data(*spec)
    strides, dilations, padding, group = spec[2:]

    @jax.jit
    def grads(x, w, g):
        _, vjp = jax.vjp(lambda x, w: conv_grad.conv_host_grad(
            x, w, strides, dilations, padding, group), x, w)
        return vjp(g)
    for actual, expected in zip(grads(x, w, g), _xla_grads(x, w, g, *spec[2:]), strict=True):
        _close(actual, expected)


def test_layout_choice_follows_padding_overhead():
    # 56x56 output on a 58x58 phase grid: 7 % overhead; 7x7 on 9x9: 65 %
    assert conv_grad.layout(64, (58, 58), (56, 56), (3, 3), (1, 1), (1, 1)) == "flat"
    assert conv_grad.layout(512, (9, 9), (7, 7), (3, 3), (1, 1), (1, 1)) == "windows"
    assert conv_grad.phase_grid((230, 230), (112, 112), (7, 7), (2, 2), (1, 1)) == (115, 115)


def _translated_grads(model, feeds, path, batch_axis=False):
    translated = translate(model, conv_weight_grad=path)
    f = translated.function()

    def loss(params, feeds):
        return sum(jnp.sum(jnp.sin(v)) for v in f(params, feeds).values())
    grad = jax.grad(loss)
    if batch_axis:  # per-sample gradients
        grad = jax.vmap(grad, in_axes=(None, 0))
        feeds = {k: v[:, None] for k, v in feeds.items()}
    return jax.jit(grad)(translated.params, feeds)


@pytest.mark.parametrize(("name", "per_sample"), [
    ("conv", False), ("conv", True), ("conv_other_ranks", False)])
def test_translation_gradients_agree_between_paths(name, per_sample):
    model, feeds = case(name)
    host = _translated_grads(model, feeds, "host", per_sample)
    xla = _translated_grads(model, feeds, "xla", per_sample)
    assert host.keys() == xla.keys()
    for key in xla:
        _close(host[key], np.asarray(xla[key]), 1e-4)


def test_real_model_gradients_agree_between_paths():
    """The shipped text-direction classifier (MobileNetV3: 1x1 and strided 3x3 convs)."""
    model = onnx.load(str(MODELS / "ppocr_mobile_cls.onnx"))
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 192)).astype(np.float32)
    name = model.graph.input[0].name
    host = _translated_grads(model, {name: x}, "host")
    xla = _translated_grads(model, {name: x}, "xla")
    convs = {n.input[1] for n in model.graph.node if n.op_type == "Conv"} & set(xla)
    assert len(convs) > 10
    for key in convs:
        _close(host[key], np.asarray(xla[key]), 1e-4)


POOLS = [  # x shape, kernel, strides, padding
    ((2, 3, 11, 12), (3, 3), (2, 2), ((1, 1), (1, 1))),
    ((2, 3, 11, 12), (2, 2), (2, 2), ((0, 0), (0, 0))),
    ((2, 3, 11, 12), (3, 2), (1, 2), ((1, 2), (0, 1))),
    ((2, 3, 13), (4,), (3,), ((2, 3),)),
    ((1, 2, 5, 6, 7), (2, 3, 2), (2, 1, 3), ((0, 1), (1, 1), (1, 0))),
]


@pytest.mark.parametrize("spec", POOLS)
def test_window_max_gradient_is_xlas_ties_included(spec):
    shape, kernel, strides, padding = spec
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)  # ties at zero
    x[0, 0] = 0  # a channel of nothing but ties

    def reference(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1) + kernel, (1, 1) + strides,
                                 [(0, 0), (0, 0)] + list(padding))
    y, vjp = jax.vjp(reference, x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    ours, our_vjp = jax.vjp(lambda x: window_max(x, kernel, strides, padding), x)
    np.testing.assert_array_equal(ours, y)
    np.testing.assert_allclose(jax.jit(our_vjp)(g)[0], vjp(g)[0], atol=1e-6)


def test_relu_gradient_is_half_at_zero():
    model, _ = case("elementwise")
    b = onnx.helper
    graph = b.make_graph([b.make_node("Relu", ["x"], ["y"])], "relu",
                         [b.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
                         [b.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])])
    f = translate(b.make_model(graph, opset_imports=model.opset_import)).function()
    grad = jax.grad(lambda x: jnp.sum(f({}, {"x": x})["y"]))(np.array([-1, 0, 0, 2], np.float32))
    np.testing.assert_array_equal(grad, [0, 0.5, 0.5, 1])  # as jnp.maximum's


def test_input_without_gradient_gets_none_and_all_blas_threads(monkeypatch):
    """Differentiating only the weight: the weight gradient still matches XLA's, no
    input gradient is computed and BLAS keeps its own thread count."""
    spec = CONVS[2]
    x, w, g = _data(*spec)
    strides, dilations, padding, group = spec[2:]
    seen = []
    original = conv_grad.weight_gradient

    def spy(*args, **kwargs):
        seen.append(kwargs["threads"])
        return original(*args, **kwargs)
    monkeypatch.setattr(conv_grad, "weight_gradient", spy)

    def loss(w, x):
        return jnp.vdot(conv_grad.conv_host_grad(x, w, strides, dilations, padding, group), g)
    _close(jax.jit(jax.grad(loss))(w, x), _xla_grads(x, w, g, *spec[2:])[1])
    dw, dx = jax.jit(jax.grad(loss, argnums=(0, 1)))(w, x)
    _close(dx, _xla_grads(x, w, g, *spec[2:])[0])
    assert seen == [0, 1]


def test_weight_without_gradient_runs_no_host_product(monkeypatch):
    spec = CONVS[0]
    x, w, g = _data(*spec)
    monkeypatch.setattr(conv_grad, "weight_gradient", lambda *a, **k: pytest.fail("called"))

    def loss(x):
        return jnp.vdot(conv_grad.conv_host_grad(x, w, *spec[2:]), g)
    _close(jax.grad(loss)(x), _xla_grads(x, w, g, *spec[2:])[0])


def test_auto_takes_xla_with_its_own_convolutions_else_the_host(monkeypatch):
    from onnxprune.train.ops import conv
    from onnxprune.train.registry import Node
    node = Node("Conv", "c", {}, 17, jnp, {"conv_weight_grad": "auto"})
    x = np.zeros((1, 2, 4, 4), np.float32)
    monkeypatch.setattr(conv, "compiler_options", lambda: {"xla_cpu_option": ""})
    assert conv.weight_gradient_path(node, x) == "xla"
    monkeypatch.setattr(conv, "compiler_options", dict)
    expected = "host" if jax.default_backend() == "cpu" else "xla"
    assert conv.weight_gradient_path(node, x) == expected
    assert conv.weight_gradient_path(node, x.astype(np.float64)) == "xla"
    forced = Node("Conv", "c", {}, 17, jnp, {"conv_weight_grad": "host"})
    assert conv.weight_gradient_path(forced, x) == "host"
