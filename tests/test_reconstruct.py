"""Bias compensation: a removed channel that is constant over the data is recovered
exactly through the consumer's bias (Conv bias, bias Add, or BatchNorm shift)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import GraphBuilder

import onnxprune
from onnxprune.analysis import ActivationStats, analyze
from onnxprune.errors import InputError
from onnxprune.pruning import RECONSTRUCTIONS
from onnxprune.verify import relative_error, run


def matmul(b: GraphBuilder, x: str, w: str) -> str:
    return b.op("MatMul", [x, w])


def mlp_with_constant_unit(product=matmul):
    """x·W1 + b1, Relu, ·W2 + b2, the products written by `product(builder, x, w)`."""
    b = GraphBuilder(seed=1)
    x = b.input("x", ["n", 8])
    w1 = b.rng.standard_normal((8, 16)).astype(np.float32)
    b1 = b.rng.standard_normal(16).astype(np.float32)
    w1[:, 3], b1[3] = 0.0, 2.0  # unit 3 is always relu(2) = 2
    h = b.op("Relu", [b.op("Add", [product(b, x, b.const(w1)), b.const(b1)])])
    y = b.op("Add", [product(b, h, b.weight(16, 4)), b.weight(4)])
    return b.build(y)


def relu_conv_with_constant_channel(b: GraphBuilder, x: str, channel: int, value: float) -> str:
    """Relu(3×3 conv to 8 channels) whose `channel` is always relu(value)."""
    w1 = b.rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b1 = b.rng.standard_normal(8).astype(np.float32)
    w1[channel], b1[channel] = 0.0, value
    return b.op("Relu", [b.op("Conv", [x, b.const(w1), b.const(b1)], pads=[1, 1, 1, 1])])


def conv_bn_with_constant_channel():
    b = GraphBuilder(seed=2)
    h = relu_conv_with_constant_channel(b, b.input("x", ["n", 3, 8, 8]), 2, 1.5)
    conv2 = b.op("Conv", [h, b.weight(4, 8, 1, 1)])
    return b.build(b.bn(conv2, 4))


CASES = [(mlp_with_constant_unit, (5, 8)), (conv_bn_with_constant_channel, (2, 3, 8, 8))]


def calibration(shape, count=3, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("make, shape", CASES)
def test_bias_compensation_recovers_a_constant_channel_exactly(make, shape):
    model = make()
    kwargs = dict(criterion="variance", calib=calibration(shape), round_to=1, min_channels=1)
    ratio = 1 / 16 if shape == (5, 8) else 1 / 8
    plain, report = onnxprune.prune(model, ratio, reconstruct="none", **kwargs)
    fixed, _ = onnxprune.prune(model, ratio, reconstruct="bias", **kwargs)
    assert next(g for g in report.groups if g.removed).removed == [3 if shape == (5, 8) else 2]
    feeds = calibration(shape, 1)[0]
    want = next(iter(run(model, feeds).values()))
    assert relative_error(want, next(iter(run(fixed, feeds).values()))) < 1e-5
    assert relative_error(want, next(iter(run(plain, feeds).values()))) > 1e-2


def test_reconstruction_needs_calibration_and_a_known_name():
    model = mlp_with_constant_unit()
    with pytest.raises(InputError, match="needs calibration"):
        onnxprune.prune(model, 0.25, reconstruct="bias")
    with pytest.raises(InputError, match="unknown reconstruction"):
        onnxprune.prune(model, 0.25, reconstruct="magic", calib=calibration((5, 8)))


def test_shared_biases_are_left_alone():
    model = mlp_with_constant_unit()
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    shared = onnx.numpy_helper.from_array(np.zeros(4, np.float32), "shared_bias")
    model.graph.initializer.append(shared)
    adds[1].input[1] = "shared_bias"
    extra = onnx.helper.make_node("Add", [adds[1].output[0], "shared_bias"], ["z"])
    model.graph.node.append(extra)
    model.graph.output.append(onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT,
                                                                 ["n", 4]))
    pruned, _ = onnxprune.prune(model, 1 / 16, criterion="variance", reconstruct="bias",
                                calib=calibration((5, 8)), round_to=1)
    values = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert not values["shared_bias"].any()


def test_calibration_data_switches_the_defaults_to_wanda_and_bias():
    model = mlp_with_constant_unit()
    _, report = onnxprune.prune(model, 0.25, calib=calibration((5, 8)), round_to=1)
    assert report.criterion == "wanda"
    _, report = onnxprune.prune(model, 0.25, round_to=1)
    assert report.criterion == "l1"


def test_bias_compensation_through_a_transposed_convolution():
    """Kernel = stride: every output pixel gets one tap per input channel; with equal
    taps for the constant channel its mean contribution is exact."""
    b = GraphBuilder(seed=3)
    h = relu_conv_with_constant_channel(b, b.input("x", ["n", 3, 4, 4]), 5, 0.7)
    wt = b.rng.standard_normal((8, 4, 2, 2)).astype(np.float32)
    wt[5] = b.rng.standard_normal((4, 1, 1)).astype(np.float32)  # equal taps
    y = b.op("ConvTranspose", [h, b.const(wt), b.weight(4)], strides=[2, 2])
    model = b.build(y)
    data = calibration((2, 3, 4, 4))
    fixed, report = onnxprune.prune(model, 1 / 8, criterion="variance", calib=data,
                                    reconstruct="bias", round_to=1)
    assert next(g for g in report.groups if g.removed).removed == [5]
    feeds = calibration((2, 3, 4, 4), 1)[0]
    want = next(iter(run(model, feeds).values()))
    assert relative_error(want, next(iter(run(fixed, feeds).values()))) < 1e-5


def test_least_squares_refit_is_exact_for_a_linear_combination_of_kept_channels():
    b = GraphBuilder(seed=4)
    x = b.input("x", ["n", 8])
    w1 = b.rng.standard_normal((8, 16)).astype(np.float32)
    b1 = b.rng.standard_normal(16).astype(np.float32)
    w1[:, 5] = 0.02 * w1[:, 1] - 0.01 * w1[:, 3]  # h5 = 0.02·h1 − 0.01·h3 + const
    b1[5] = 0.3
    h = b.op("Add", [b.op("MatMul", [x, b.const(w1)]), b.const(b1)])
    w2 = b.rng.standard_normal((16, 4)).astype(np.float32)
    y = b.op("Add", [b.op("MatMul", [h, b.const(w2)]), b.weight(4)])
    model = b.build(y)
    data = calibration((64, 8))
    kwargs = dict(criterion="variance", calib=data, round_to=1)
    refit, report = onnxprune.prune(model, 1 / 16, reconstruct="lsq", ridge=1e-6, **kwargs)
    biased, _ = onnxprune.prune(model, 1 / 16, reconstruct="bias", **kwargs)
    assert next(g for g in report.groups if g.removed).removed == [5]
    feeds = calibration((5, 8), 1)[0]
    want = next(iter(run(model, feeds).values()))
    assert relative_error(want, next(iter(run(refit, feeds).values()))) < 1e-4
    assert relative_error(want, next(iter(run(biased, feeds).values()))) > 1e-3


def test_layerwise_refit_is_exact_per_kernel_position_of_a_3x3_conv():
    b = GraphBuilder(seed=6)
    x = b.input("x", ["n", 3, 8, 8])
    w1 = b.rng.standard_normal((8, 3, 1, 1)).astype(np.float32)
    b1 = b.rng.standard_normal(8).astype(np.float32)
    w1[6], b1[6] = 0.05 * w1[0] - 0.02 * w1[2], 0.2  # h6 = 0.05·h0 − 0.02·h2 + const
    h = b.op("Conv", [x, b.const(w1), b.const(b1)])
    y = b.op("Conv", [h, b.weight(4, 8, 3, 3), b.weight(4)])  # zero padding: no pads
    model = b.build(y)
    data = calibration((4, 3, 8, 8))
    kwargs = dict(criterion="variance", calib=data, round_to=1)
    refit, report = onnxprune.prune(model, 1 / 8, reconstruct="lsq", ridge=1e-8, **kwargs)
    plain, _ = onnxprune.prune(model, 1 / 8, reconstruct="none", **kwargs)
    assert next(g for g in report.groups if g.removed).removed == [6]
    feeds = calibration((2, 3, 8, 8), 1)[0]
    want = next(iter(run(model, feeds).values()))
    assert relative_error(want, next(iter(run(refit, feeds).values()))) < 1e-4
    assert relative_error(want, next(iter(run(plain, feeds).values()))) > 1e-2


def linear_channel(b: GraphBuilder, x: str, weights: tuple[int, ...], removed: int) -> str:
    """A 1×1 conv (or MatMul, for rank-2 x) with bias whose `removed` output is
    0.05·out[1] − 0.02·out[3] + 0.2: an affine function of kept outputs."""
    width = 16 if len(weights) == 1 else 8
    if len(weights) == 1:
        w = b.rng.standard_normal((weights[0], width)).astype(np.float32)
        w[:, removed] = 0.05 * w[:, 1] - 0.02 * w[:, 3]
    else:
        w = b.rng.standard_normal((width, *weights)).astype(np.float32)
        w[removed] = 0.05 * w[1] - 0.02 * w[3]
    bias = b.rng.standard_normal(width).astype(np.float32)
    bias[removed] = 0.05 * bias[1] - 0.02 * bias[3] + 0.2
    if len(weights) == 1:
        return b.op("Add", [b.op("MatMul", [x, b.const(w)]), b.const(bias)])
    return b.op("Conv", [x, b.const(w), b.const(bias)])


def refit_errors(model, shape: tuple[int, ...], ratio: float, removed: int):
    """Relative output errors of the lsq refit and of the plain cut (variance criterion:
    the affine channel goes), and the refit model."""
    kwargs = dict(criterion="variance", calib=calibration((16, *shape[1:])), round_to=1)
    refit, report = onnxprune.prune(model, ratio, reconstruct="lsq", ridge=1e-8, **kwargs)
    plain, _ = onnxprune.prune(model, ratio, reconstruct="none", **kwargs)
    assert [g.removed for g in report.groups if g.removed] == [[removed]]
    feeds = calibration(shape, 1, seed=5)[0]
    want = next(iter(run(model, feeds).values()))
    return [relative_error(want, next(iter(run(m, feeds).values()))) for m in (refit, plain)] \
        + [refit]


def test_least_squares_refit_is_exact_through_gemm_with_transposed_b():
    """The bias shift goes through Gemm's alpha and beta; the kept weights are the
    columns of B (transB=1)."""
    b = GraphBuilder(seed=9)
    h = linear_channel(b, b.input("x", ["n", 8]), (8,), removed=5)
    weight = b.weight(4, 16)
    model = b.build(b.op("Gemm", [h, weight, b.weight(4)], transB=1, alpha=0.5, beta=2.0))
    refit_error, plain_error, refit = refit_errors(model, (5, 8), 1 / 16, 5)
    assert refit_error < 1e-4 and plain_error > 1e-2
    shapes = {t.name: tuple(t.dims) for t in refit.graph.initializer}
    assert shapes[weight] == (4, 15)


def test_least_squares_refit_is_exact_through_a_transposed_convolution():
    """Kernel = stride: each output pixel is one tap per input channel, so every tap is
    refit on its own; the removed channel's taps are equal, so are the bias shifts.
    Eight input channels keep the kept channels and the constant linearly independent
    (a rank-deficient Gram matrix leaves the near-zero ridge solution to rounding)."""
    b = GraphBuilder(seed=10)
    h = linear_channel(b, b.input("x", ["n", 8, 4, 4]), (8, 1, 1), removed=6)
    wt = b.rng.standard_normal((8, 4, 2, 2)).astype(np.float32)
    wt[6] = b.rng.standard_normal((4, 1, 1)).astype(np.float32)
    model = b.build(b.op("ConvTranspose", [h, b.const(wt), b.weight(4)], strides=[2, 2]))
    refit_error, plain_error, refit = refit_errors(model, (2, 8, 4, 4), 1 / 8, 6)
    assert refit_error < 1e-4 and plain_error > 1e-2
    (transposed,) = [n for n in refit.graph.node if n.op_type == "ConvTranspose"]
    shapes = {t.name: tuple(t.dims) for t in refit.graph.initializer}
    assert shapes[transposed.input[1]] == (7, 4, 2, 2)


def test_layerwise_refit_fits_each_layer_on_the_pruned_prefix():
    """Two pruned layers in a row: the second is refit on what the pruned first layer
    really produces, so the refit beats bias compensation, and a larger ridge moves
    the weights less."""
    b = GraphBuilder(seed=7)
    x = b.input("x", ["n", 16])
    h = x
    for width in (32, 32):
        h = b.op("Relu", [b.op("Add", [b.op("MatMul", [h, b.weight(h == x and 16 or 32,
                                                                    width)]),
                                       b.weight(width)])])
    model = b.build(b.op("Add", [b.op("MatMul", [h, b.weight(32, 4)]), b.weight(4)]))
    rng = np.random.default_rng(0)
    data = [{"x": rng.standard_normal((64, 16)).astype(np.float32)} for _ in range(4)]
    kwargs = dict(criterion="wanda", calib=data, round_to=1)
    feeds = {"x": rng.standard_normal((256, 16)).astype(np.float32)}
    want = next(iter(run(model, feeds).values()))
    errors = {}
    for reconstruct, ridge in (("bias", 0.1), ("lsq", 0.01), ("lsq", 1e4)):
        pruned, _ = onnxprune.prune(model, 0.25, reconstruct=reconstruct, ridge=ridge, **kwargs)
        errors[reconstruct, ridge] = relative_error(want, next(iter(run(pruned,
                                                                        feeds).values())))
    assert errors["lsq", 0.01] < 0.9 * errors["bias", 0.1]
    assert errors["lsq", 0.01] < errors["lsq", 1e4]


def test_truncated_model_computes_an_intermediate_with_fewer_nodes():
    from onnxprune.verify import truncated

    b = GraphBuilder(seed=8)
    x = b.input("x", ["n", 3, 8, 8])
    h = b.op("Relu", [b.conv(x, 3, 8)])
    y = b.conv(b.op("Relu", [b.conv(h, 8, 8)]), 8, 4)
    model = b.build(y)
    part = truncated(model, [h])
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    from onnxprune.targets.onnxruntime import session

    want = session(model, outputs=[h]).run([h], feeds)[0]
    assert [n.op_type for n in part.graph.node] == ["Conv", "Relu"]
    assert len(part.graph.initializer) == 2 and [o.name for o in part.graph.output] == [h]
    assert np.array_equal(run(part, feeds)[h], want)


@pytest.mark.parametrize("method", ["bias", "lsq"])
def test_reconstruction_returns_new_values_and_leaves_the_analysis_alone(method):
    """The analyzed graph still describes the input model after reconstruction; the
    new values it returns, applied by the rewrite, recover the constant unit."""
    model = mlp_with_constant_unit()
    analysis = analyze(model, calib=calibration((5, 8)))
    group = next(g for g in analysis.dep.groups if g.units == 16 and not g.blocked)
    removed = {group.id: np.array([3])}
    before = constants(analysis)
    values, _ = RECONSTRUCTIONS[method](analysis, removed, ActivationStats(analysis), 1e-6,
                                        None)
    after = constants(analysis)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[name], after[name]) for name in before)
    assert values and set(values) <= set(before)
    assert any(not np.array_equal(before[name], value) for name, value in values.items())
    feeds = calibration((5, 8), 1, seed=7)[0]
    want = next(iter(run(model, feeds).values()))
    fixed = next(iter(run(analysis.rewritten(removed, values), feeds).values()))
    plain = next(iter(run(analysis.rewritten(removed), feeds).values()))
    assert relative_error(want, fixed) < 1e-4 < relative_error(want, plain)


def constants(analysis) -> dict[str, np.ndarray]:
    return {name: np.array(tensor.values) for name, tensor in analysis.dep.view.tensors.items()
            if isinstance(tensor, gs.Constant)}
