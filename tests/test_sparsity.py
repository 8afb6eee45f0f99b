"""N:M and unstructured sparsity: the axis each op is grouped on, the weights seen
through views, what is skipped and why, the criteria, storage and verification."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import GraphBuilder, const_values
from onnx import TensorProto, numpy_helper

import onnxprune
from onnxprune.errors import InputError
from onnxprune.sparsity.layers import find_layers
from onnxprune.sparsity.pattern import Pattern, keep_mask, parse_pattern, violations
from onnxprune.sparsity.statistics import waves
from onnxprune.sparsity.weight_criteria import sparsegpt, wanda
from onnxprune.verify import run


def nm_groups(values: np.ndarray, axis: int, m: int = 4) -> np.ndarray:
    """Groups of m consecutive entries along `axis`: [..., m] with the axis split."""
    moved = np.moveaxis(values, axis, -1)
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)


def expected_nm(values: np.ndarray, axis: int, n: int = 2, m: int = 4) -> np.ndarray:
    """Reference N:M magnitude pruning, written independently of the package."""
    groups = nm_groups(values, axis, m).copy()
    flat = groups.reshape(-1, m)
    for row in flat:
        row[np.argsort(np.abs(row), kind="stable")[:m - n]] = 0
    moved = np.moveaxis(values, axis, -1).shape
    return np.moveaxis(flat.reshape(moved), -1, axis)


def layer_report(report, node_op):
    return next(layer for layer in report.layers if layer.op == node_op)


def sparsify(model, pattern="2:4", **kwargs):
    kwargs.setdefault("all_layers", True)
    return onnxprune.sparsify(model, pattern, **kwargs)


def matmul_model(k=16, n=8, transpose=False, cast=False):
    b = GraphBuilder(seed=1)
    x = b.input("x", [2, k])
    w = b.weight(n, k) if transpose else b.weight(k, n)
    if cast:
        values = const_values_of(b, w).astype(np.float16)
        b.inits[-1] = numpy_helper.from_array(values, w)
        w = b.op("Cast", [w], to=TensorProto.FLOAT)
    if transpose:
        w = b.op("Transpose", [w], perm=[1, 0])
    return b.build(b.op("MatMul", [x, w]))


def const_values_of(builder: GraphBuilder, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in builder.inits if t.name == name)


def test_conv_is_grouped_along_input_channels_for_each_kernel_position():
    b = GraphBuilder(seed=2)
    x = b.input("x", [1, 8, 6, 6])
    model = b.build(b.conv(x, 8, 16, k=3))
    weight = model.graph.node[0].input[1]
    before = const_values(model, weight)
    out, report = sparsify(model)
    after = const_values(out, weight)
    np.testing.assert_array_equal(after, expected_nm(before, axis=1))
    assert (np.count_nonzero(nm_groups(after, 1), axis=-1) == 2).all()
    assert layer_report(report, "Conv").axis == 1


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_is_grouped_along_the_reduction_axis_of_b(trans_b):
    b = GraphBuilder(seed=3)
    x = b.input("x", [2, 12])
    w = b.weight(8, 12) if trans_b else b.weight(12, 8)
    model = b.build(b.op("Gemm", [x, w, b.weight(8)], transB=trans_b))
    out, report = sparsify(model)
    after = const_values(out, w)
    axis = 1 if trans_b else 0
    np.testing.assert_array_equal(after, expected_nm(const_values(model, w), axis))
    assert layer_report(report, "Gemm").axis == axis
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 12)).astype(np.float32)}
    dense_w = after.T if trans_b else after
    want = feeds["x"] @ dense_w + const_values(model, model.graph.node[0].input[2])
    np.testing.assert_allclose(run(out, feeds)[out.graph.output[0].name], want, rtol=1e-5)


def test_matmul_b_is_grouped_along_k_and_outputs_match_the_masked_product():
    model = matmul_model()
    w = model.graph.node[0].input[1]
    out, _ = sparsify(model)
    after = const_values(out, w)
    np.testing.assert_array_equal(after, expected_nm(const_values(model, w), axis=0))
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)}
    np.testing.assert_allclose(run(out, feeds)[out.graph.output[0].name], feeds["x"] @ after,
                               rtol=1e-5)


def test_weights_through_transpose_are_grouped_on_the_stored_axis_it_maps_to():
    model = matmul_model(transpose=True)
    stored = model.graph.node[0].input[0]  # W[N, K] -> Transpose -> B[K, N]
    out, report = sparsify(model)
    after = const_values(out, stored)
    np.testing.assert_array_equal(after, expected_nm(const_values(model, stored), axis=1))
    assert layer_report(report, "MatMul").weight == stored


def test_weights_through_cast_stay_in_their_stored_precision():
    model = matmul_model(cast=True)
    stored = model.graph.node[0].input[0]
    out, _ = sparsify(model)
    after = const_values(out, stored)
    assert after.dtype == np.float16
    np.testing.assert_array_equal(after, expected_nm(const_values(model, stored), axis=0))


def test_quantized_weights_zero_at_the_zero_point_per_channel():
    b = GraphBuilder(seed=4, opset=13)
    x = b.input("x", [2, 16])
    q = b.rng.integers(-100, 100, (16, 8)).astype(np.int8)
    zero = np.arange(8, dtype=np.int8)
    scale = np.linspace(0.01, 0.08, 8).astype(np.float32)
    w = b.op("DequantizeLinear", [b.const(q), b.const(scale), b.const(zero)], axis=1)
    model = b.build(b.op("MatMul", [x, w]))
    out, _ = sparsify(model)
    stored = out.graph.node[0].input[0]
    after = const_values(out, stored)
    dequantized = (after.astype(np.float32) - zero) * scale
    reference = expected_nm((q.astype(np.float32) - zero) * scale, axis=0)
    np.testing.assert_allclose(dequantized, reference, rtol=1e-6)
    assert after.dtype == np.int8 and (nm_groups(after == zero, 0).sum(-1) == 2).all()


def test_axis_not_a_multiple_of_four_is_skipped_and_reported():
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 6, 5, 5])
    model = b.build(b.conv(x, 6, 8))
    weight = model.graph.node[0].input[1]
    out, report = sparsify(model)
    np.testing.assert_array_equal(const_values(out, weight), const_values(model, weight))
    layer = layer_report(report, "Conv")
    assert not layer.eligible and not layer.sparsified
    assert "6 entries, not a multiple of 4" in layer.reason


def test_small_layers_are_left_alone_by_default_and_the_report_says_why():
    b = GraphBuilder(seed=6)
    x = b.input("x", [2, 256])
    big = b.op("MatMul", [x, b.weight(256, 512)])
    small = b.op("MatMul", [big, b.weight(512, 8)])
    model = b.build(small)
    _, report = onnxprune.sparsify(model, "2:4")
    first, second = report.layers
    assert first.sparsified and first.outputs == 512 and first.reduction == 256
    assert not second.sparsified and "8 outputs" in second.reason and "--all" in second.reason
    _, everything = onnxprune.sparsify(model, "2:4", all_layers=True)
    assert all(layer.sparsified for layer in everything.layers)
    _, lowered = onnxprune.sparsify(model, "2:4", min_size=8)
    assert all(layer.sparsified for layer in lowered.layers)


def test_activation_products_and_shared_weights_are_listed_with_reasons():
    b = GraphBuilder(seed=7)
    x = b.input("x", [2, 8])
    w = b.weight(8, 8)
    h = b.op("MatMul", [x, w])
    shared = b.op("MatMul", [h, w])
    model = b.build(b.op("MatMul", [shared, b.op("Transpose", [shared])]))
    _, report = sparsify(model)
    reasons = [layer.reason for layer in report.layers]
    assert reasons[0].startswith("weight shared with") and reasons[1].startswith("weight shared")
    assert reasons[2].startswith("no constant weight")


def test_unstructured_removes_the_fraction_of_every_row():
    model = matmul_model(k=40, n=6)
    w = model.graph.node[0].input[1]
    out, report = sparsify(model, "unstructured", sparsity=0.3)
    after = const_values(out, w)
    assert ((after == 0).sum(0) == 12).all()  # floor(0.3 * 40) per output column of B
    before = const_values(model, w)
    for col in range(6):
        dropped = np.abs(before[after[:, col] == 0, col])
        kept = np.abs(before[after[:, col] != 0, col])
        assert dropped.max() <= kept.min()
    assert report.pattern == "unstructured"


def test_four_of_eight_pattern():
    model = matmul_model(k=16, n=4)
    w = model.graph.node[0].input[1]
    out, _ = sparsify(model, "4:8")
    np.testing.assert_array_equal(const_values(out, w),
                                  expected_nm(const_values(model, w), 0, 4, 8))


def test_pattern_checker_counts_groups_that_break_it():
    pattern = parse_pattern("2:4")
    matrix = np.ones((3, 8))
    matrix[:, ::2] = 0
    assert violations(matrix, pattern) == 0
    matrix[1, 0] = 5
    assert violations(matrix, pattern) == 1
    assert violations(np.ones((2, 10)), Pattern(0, 0, 0.5)) == 2


@pytest.mark.parametrize("args, words", [
    (("3:4",), "unknown pattern"), (("2:4",), "fixes the sparsity"),
])
def test_bad_patterns_are_input_errors(args, words):
    with pytest.raises(InputError, match=words):
        onnxprune.sparsify(matmul_model(), *args, sparsity=0.3)


def test_data_aware_criteria_need_calibration_data():
    with pytest.raises(InputError, match="needs calibration data"):
        onnxprune.sparsify(matmul_model(), "2:4", criterion="wanda")


def test_wanda_weighs_each_weight_by_its_input_norm():
    weights = np.array([[1.0, 2.0, 3.0, 4.0]])
    column_sq = np.array([100.0, 100.0, 0.01, 0.01])
    assert (wanda(weights, parse_pattern("2:4"), column_sq) == [[1, 2, 0, 0]]).all()
    assert (keep_mask(np.abs(weights), parse_pattern("2:4")) == [[0, 0, 1, 1]]).all()


def reconstruction_error(weights, pruned, inputs):
    return np.linalg.norm(inputs @ (weights - pruned).T) / np.linalg.norm(inputs @ weights.T)


@pytest.mark.parametrize("pattern, bound", [("2:4", 0.85), ("unstructured", 0.7)])
def test_sparsegpt_compensates_pruned_weights_through_correlated_inputs(pattern, bound):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4000, 16)) * np.linspace(0.2, 3, 16)
    inputs = np.concatenate([base, base + 0.1 * rng.standard_normal(base.shape)], 1)
    weights = rng.standard_normal((16, 32))
    spec = parse_pattern(pattern)
    pruned = sparsegpt(weights, inputs.T @ inputs / len(inputs), spec, block=32)
    assert violations(pruned, spec) == 0
    magnitude = np.where(keep_mask(np.abs(weights), spec), weights, 0)
    assert reconstruction_error(weights, pruned, inputs) < \
        bound * reconstruction_error(weights, magnitude, inputs)
    # blocks only batch the updates: the result does not depend on the block size
    if spec.structured:
        np.testing.assert_allclose(sparsegpt(weights, inputs.T @ inputs / len(inputs), spec,
                                             block=8), pruned, atol=1e-9)


def chain_model():
    """x → MatMul → Relu → (MatMul, MatMul) two readers of one activation → Add."""
    b = GraphBuilder(seed=8)
    x = b.input("x", ["n", 16])
    h = b.op("Relu", [b.op("MatMul", [x, b.weight(16, 16)])])
    left = b.op("MatMul", [h, b.weight(16, 16)])
    right = b.op("MatMul", [h, b.weight(16, 16)])
    return b.build(b.op("MatMul", [b.op("Add", [left, right]), b.weight(16, 8)]))


def test_layers_are_measured_in_waves_after_the_layers_they_depend_on():
    model = chain_model()
    sizes = [[layer.node for layer in wave] for wave in waves(find_layers(model), model)]
    names = [node.name for node in model.graph.node if node.op_type == "MatMul"]
    assert sizes == [[names[0]], [names[1], names[2]], [names[3]]]


SCALES = np.linspace(0.05, 4, 16).astype(np.float32)  # input features of unequal size


def calibration(count=16):
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((8, 16)).astype(np.float32) * SCALES}
            for _ in range(count)]


def two_products():
    b = GraphBuilder(seed=8)
    x = b.input("x", ["n", 16])
    return b.build(b.op("MatMul", [b.op("MatMul", [x, b.weight(16, 32)]), b.weight(32, 8)]))


def test_data_aware_criteria_rank_sparsegpt_then_wanda_then_magnitude():
    model = two_products()
    evaluation = {"x": np.random.default_rng(2).standard_normal((64, 16)).astype(np.float32)
                  * SCALES}
    name = model.graph.output[0].name
    dense = run(model, evaluation)[name]
    errors = {}
    for rule in ("magnitude", "wanda", "sparsegpt"):
        out, report = sparsify(model, criterion=rule,
                               calib=None if rule == "magnitude" else calibration())
        assert [layer.criterion for layer in report.layers] == [rule] * 2
        assert "2:4 pattern on 2 weights" in report.checks
        errors[rule] = np.linalg.norm(run(out, evaluation)[name] - dense)
    assert errors["sparsegpt"] < 0.9 * errors["wanda"] < 0.9 * 0.95 * errors["magnitude"]


def test_fp16_stores_the_sparsified_weights_behind_a_cast():
    model = matmul_model()
    w = model.graph.node[0].input[1]
    out, report = sparsify(model, fp16=True)
    assert const_values(out, w).dtype == np.float16
    cast = next(node for node in out.graph.node if node.op_type == "Cast")
    assert cast.input[0] == w and out.graph.node[-1].input[1] == cast.output[0]
    assert report.output_error[out.graph.output[0].name] < 0.8  # 2:4 of random weights
    assert violations(const_values(out, w).T, parse_pattern("2:4")) == 0


def test_sparse_storage_with_int64_indices_is_used_only_where_smaller():
    model = matmul_model(k=64, n=32)
    w = model.graph.node[0].input[1]
    half, report = sparsify(model, "unstructured", storage="sparse")
    assert not half.graph.sparse_initializer
    assert "would not be smaller" in layer_report(report, "MatMul").storage
    out, report = sparsify(model, "unstructured", sparsity=0.9, storage="sparse")
    assert [sp.values.name for sp in out.graph.sparse_initializer] == [w]
    assert report.checks[-1] == "sparse file: onnxruntime outputs equal the dense twin's"
    onnx.checker.check_model(out)


def single_layer(op: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One Conv, Gemm (transB=1) or MatMul with a weight of 4608, 2048 or 2048 entries,
    and seeded inputs for it."""
    b = GraphBuilder(seed=11)
    if op == "Conv":
        x = b.input("x", [2, 16, 6, 6])
        y = b.op("Conv", [x, b.weight(32, 16, 3, 3), b.weight(32)], pads=[1, 1, 1, 1])
    elif op == "Gemm":
        x = b.input("x", [2, 64])
        y = b.op("Gemm", [x, b.weight(32, 64), b.weight(32)], transB=1)
    else:
        x = b.input("x", [2, 3, 64])
        y = b.op("MatMul", [x, b.weight(64, 32)])
    model = b.build(y)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = {"x": np.random.default_rng(12).standard_normal(shape).astype(np.float32)}
    return model, feeds


@pytest.mark.parametrize("op", ["Conv", "Gemm", "MatMul"])
def test_sparse_int64_storage_runs_like_its_dense_twin(op):
    model, feeds = single_layer(op)
    weight = model.graph.node[0].input[1]
    out, report = sparsify(model, "unstructured", sparsity=0.8, storage="sparse")
    twin, _ = sparsify(model, "unstructured", sparsity=0.8)
    dense = const_values(twin, weight)
    assert np.mean(dense == 0) == pytest.approx(0.8, abs=0.02)
    (stored,) = out.graph.sparse_initializer
    assert stored.values.name == weight and list(stored.dims) == list(dense.shape)
    assert stored.indices.data_type == TensorProto.INT64
    assert weight not in {t.name for t in out.graph.initializer}
    where = numpy_helper.to_array(stored.indices)  # linearized, as written
    np.testing.assert_array_equal(where, np.flatnonzero(dense))
    np.testing.assert_array_equal(numpy_helper.to_array(stored.values),
                                  dense.reshape(-1)[where])
    onnx.checker.check_model(out)
    assert out.ByteSize() < 0.8 * twin.ByteSize()
    assert layer_report(report, op).storage == "sparse (int64 indices)"
    name = model.graph.output[0].name
    got, want = run(out.SerializeToString(), feeds)[name], run(twin, feeds)[name]
    np.testing.assert_array_equal(got, want)
    assert np.abs(want).max() > 0


def test_int16_indices_chunk_large_weights_and_run_in_onnxruntime():
    b = GraphBuilder(seed=9)
    x = b.input("x", [2, 256])
    model = b.build(b.op("MatMul", [x, b.weight(256, 160)]))  # 40960 entries > 32767
    out, report = sparsify(model, "unstructured", storage="sparse", sparse_indices="int16")
    sparse = out.graph.sparse_initializer
    assert len(sparse) == 2 and {sp.indices.data_type for sp in sparse} == {TensorProto.INT16}
    assert [n.op_type for n in out.graph.node] == ["Concat", "Reshape", "MatMul"]
    assert out.ByteSize() < 0.8 * model.ByteSize()
    dense, _ = sparsify(model, "unstructured")
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 256)).astype(np.float32)}
    name = model.graph.output[0].name
    np.testing.assert_array_equal(run(out.SerializeToString(), feeds)[name],
                                  run(dense, feeds)[name])
    assert any("onnx.checker fails" in check for check in report.checks)


def test_report_lists_counts_and_every_candidate():
    model = chain_model()
    _, report = onnxprune.sparsify(model, "2:4")
    data = report.to_dict()
    assert data["counts"] == {"candidates": 4, "eligible": 0, "sparsified": 0}
    assert all("too small" in layer["reason"] for layer in data["layers"])
    assert data["min_size"] == 256
