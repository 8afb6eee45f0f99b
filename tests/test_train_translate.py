"""The ONNX → JAX translation against onnxruntime: every op family on small graphs,
constant shape plumbing, refusals that name the op, trainable parameters, float16,
and real models."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import onnx
import pytest

jax = pytest.importorskip("jax")
from helpers import GraphBuilder, build_typed  # noqa: E402
from model_files import real_inputs, real_path, zoo_model  # noqa: E402
from onnx import TensorProto  # noqa: E402
from train_graphs import CASES, case, finish, ms  # noqa: E402

from onnxprune.errors import InputError  # noqa: E402
from onnxprune.train import check_translation, registry, tolerance, translate  # noqa: E402
from onnxprune.verify import relative_error, sample_feeds  # noqa: E402


@pytest.mark.parametrize("name", list(CASES))
def test_small_graph_matches_onnxruntime(name):
    model, feeds = case(name)
    _, parity = check_translation(model, feeds)
    assert set(parity.errors) == {o.name for o in model.graph.output}
    assert parity.worst <= 1e-6, parity.errors


def _depthwise(b: GraphBuilder) -> list[str]:
    x = b.input("x", [2, 3, 9, 8])
    y = b.op("Conv", [x, b.weight(6, 1, 3, 3), b.weight(6)], group=3, strides=[2, 1],
             dilations=[1, 2], pads=[1, 0, 2, 3])
    z = b.op("Conv", [y, b.weight(6, 1, 5, 2)], group=6, auto_pad="SAME_LOWER")
    v = b.input("v", [2, 4, 12])
    return [z, b.op("Conv", [v, b.weight(4, 1, 3)], group=4, strides=[3], pads=[0, 2])]


def test_depthwise_paths_agree_with_each_other_and_onnxruntime():
    b = GraphBuilder(seed=3)
    model = finish(b, _depthwise(b))
    feeds = sample_feeds(model, {"x": (2, 3, 9, 8), "v": (2, 4, 12)}, seed=2)
    grads = []
    for path in ("conv", "slices"):
        translated, _ = check_translation(model, feeds, depthwise=path)
        f = translated.function()

        def loss(params, f=f):
            return sum(jax.numpy.sum(v ** 2) for v in f(params, feeds).values())
        grads.append(jax.jit(jax.grad(loss))(translated.params))
    for name, value in grads[0].items():
        assert relative_error(np.asarray(value), np.asarray(grads[1][name])) <= 1e-5, name


def test_shape_plumbing_is_constant_under_jit():
    """Shape, Gather, Range, ConstantOfShape, Expand, computed targets: numpy at
    translation time; the traced program computes nothing but floats."""
    model, feeds = case("shape")
    translated = translate(model)
    jaxpr = jax.make_jaxpr(translated.function())(translated.params, feeds)
    kinds = {str(v.aval.dtype) for eqn in jaxpr.eqns for v in eqn.outvars}
    assert kinds == {"float32"}, kinds


def test_untranslated_ops_are_refused_by_name():
    b = GraphBuilder()
    x = b.input("x", [1, 4])
    y = b.op("Relu", [b.op("Frobnicate", [x])])
    b.nodes[0].domain = "com.example"
    q = b.op("QLinearMatMul", [y, "s", "z", "w", "s", "z", "s", "z"])
    model = finish(b, q)
    with pytest.raises(InputError) as err:
        translate(model)
    text = str(err.value)
    assert "com.example::Frobnicate (node 'Frobnicate2')" in text
    assert "QLinearMatMul" in text and "integer-only" in text
    assert err.value.exit_code == 2


def test_disagreement_names_the_first_wrong_node(monkeypatch):
    model, feeds = case("conv")
    wrong = registry.Translation(lambda node, x: node.xp.maximum(x, 0) * 1.001, numpy=True)
    monkeypatch.setitem(registry.TRANSLATIONS, ("", "Relu"), wrong)
    with pytest.raises(InputError, match=r"disagrees with onnxruntime at Relu node 'Relu"):
        check_translation(model, feeds)


def test_shape_computed_from_data_is_refused():
    b = GraphBuilder()
    x, n = b.input("x", [2, 6]), b.input("n", [2], TensorProto.INT64)
    model = finish(b, b.op("Reshape", [x, b.op("Abs", [n])]))
    feeds = {"x": np.ones((2, 6), np.float32), "n": np.array([3, 4], np.int64)}
    with pytest.raises(InputError, match="Reshape node 'Reshape.*input 1 .* computed from data"):
        check_translation(model, feeds)


def test_trainable_parameters_are_the_weights():
    b = GraphBuilder()
    x = b.input("x", [1, 2, 4, 4])
    y = b.op("Conv", [x, b.weight(3, 2, 1, 1)], pads=[0, 0, 0, 0])
    y = b.op("Mul", [y, b.const(np.float32(2.0), "two")])
    scales = b.const(np.array([1, 1, 2, 2], np.float32), "scales")
    y = b.op("Resize", [y, "", scales], mode="nearest")
    halves = b.const(np.array([1, 3, 4, 16], np.float32), "halves")
    y = b.op("Reshape", [y, b.op("Cast", [halves], to=TensorProto.INT64)])
    w = b.const(np.array([[-3, 5], [7, 127]], np.int8), "qweight")
    wq = b.op("DequantizeLinear", [w, b.const(np.float32(0.5), "qscale")])
    model = finish(b, [y, b.op("MatMul", [b.op("Reshape", [x, b.const(
        np.array([16, 2]), "flat")]), wq])])
    translated = translate(model)
    assert set(translated.params) == {b.inits[0].name, "qweight"}
    np.testing.assert_array_equal(translated.params["qweight"], [[-1.5, 2.5], [3.5, 63.5]])
    check_translation(model, {"x": np.ones((1, 2, 4, 4), np.float32)}, translated)


def test_float16_graph_within_the_half_precision_bound():
    b = GraphBuilder(seed=4)
    x = b.input("x", [2, 4, 6, 6], TensorProto.FLOAT16)
    w = b.const(b.rng.standard_normal((4, 1, 3, 3)).astype(np.float16))
    y = b.op("Conv", [x, w], group=4, pads=[1, 1, 1, 1])
    gamma = b.const(np.ones(6, np.float16))
    y = b.op("Softmax", [b.op("LayerNormalization", [y, gamma, gamma])], axis=-1)
    model = build_typed(b, y, TensorProto.FLOAT16)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float16)}
    _, parity = check_translation(model, feeds)
    assert parity.tolerances[y] == 1e-2 and parity.worst <= 1e-2
    assert tolerance(np.float32) == (1e-4, 1e-6)


def test_without_jax_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    for name in [m for m in sys.modules if m.startswith("onnxprune.train")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(InputError, match=r"needs JAX: pip install 'onnxprune\[train\]'"):
        importlib.import_module("onnxprune.train")


def test_bias_add_is_the_sum():
    """onnxruntime's CPU build has no BiasAdd kernel: its translation against the spec."""
    b = GraphBuilder()
    x, skip = b.input("x", [2, 3, 4]), b.input("skip", [2, 3, 4])
    model = finish(b, ms(b, "BiasAdd", [x, b.weight(4), skip]), contrib=True)
    translated = translate(model)
    feeds = sample_feeds(model, {"x": (2, 3, 4), "skip": (2, 3, 4)})
    (got,) = translated(translated.params, feeds).values()
    bias = next(iter(translated.params.values()))
    np.testing.assert_allclose(got, feeds["x"] + bias + feeds["skip"], rtol=1e-6)


def _real(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A real or zoo model and two seeded samples (token ids below 100, bytes below 257)."""
    if name in ("ppocr_rec_v4", "paraphrase_minilm_l3", "magika"):
        model = onnx.load(str(real_path(name)))
        shapes = {k: (2, *v[1:]) for k, v in real_inputs(name).items()}
    elif name == "ppocr_cls":
        model, shapes = onnx.load("models/ppocr_mobile_cls.onnx"), {"x": (2, 3, 48, 192)}
    else:
        model = zoo_model(name)
        shapes = {"input": (2, 3, 224, 224)} if "bert" not in name and "llama" not in name \
            else {"input_ids": (2, 12), "attention_mask": (2, 12)}
    feeds = sample_feeds(model, shapes, seed=0)
    rng = np.random.default_rng(1)
    for key, value in feeds.items():
        if value.dtype.kind == "i" and "mask" not in key:
            feeds[key] = rng.integers(0, 257 if name == "magika" else 100,
                                      value.shape).astype(value.dtype)
        elif "mask" in key:
            feeds[key][:, :8] = 1
    return model, feeds


def test_shipped_classifier_matches_onnxruntime():
    model, feeds = _real("ppocr_cls")
    translated, parity = check_translation(model, feeds)
    assert parity.worst <= 1e-5 and len(translated.params) > 100


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["bert_tiny_ts_fused", "llama_gqa_ts", "paraphrase_minilm_l3",
                                  "magika", "mobilenet_v2"])
def test_real_model_matches_onnxruntime(name):
    model, feeds = _real(name)
    _, parity = check_translation(model, feeds)
    assert parity.worst <= 1e-4, parity.errors
