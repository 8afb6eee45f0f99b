"""Axes merged by a Reshape or Flatten where the channel axis is an inner factor: a
strided index map (unit c of [.., S, C] is every index s·C + c of [.., S·C]), exact
into linear ops, approximate under a LayerNorm, blocked when split again."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    GraphBuilder,
    analyze,
    assert_mask_equivalent,
    groups_on,
    node_input_values,
    prunable,
    prune_units,
    weight_shapes,
)
from onnx import numpy_helper

from onnxprune import prune
from onnxprune.depgraph import Role, Slot
from onnxprune.verify import check_written, sample_feeds

S, C = 3, 8  # positions and channels merged into S·C features


def only_group(dep, tensor: str, axis: int):
    groups = groups_on(dep, tensor, axis)
    assert len(groups) == 1, [(g.id, g.units) for g in groups]
    return groups[0]


def dense(b: GraphBuilder, x: str, c_in: int, c_out: int) -> tuple[str, str]:
    """MatMul by a weight [c_in, c_out] plus a bias: (output, weight)."""
    w = b.weight(c_in, c_out)
    return b.op("Add", [b.op("MatMul", [x, w]), b.weight(c_out)]), w


def merged(b: GraphBuilder, op: str = "Reshape") -> tuple[str, str, str]:
    """x[2, S, 5] → dense(5→C) → Relu → [2, S·C]: (merged, producer weight, activation)."""
    x = b.input("x", [2, S, 5])
    h, w1 = dense(b, x, 5, C)
    a = b.op("Relu", [h])
    if op == "Flatten":
        return b.op("Flatten", [a], axis=1), w1, a
    return b.op("Reshape", [a, b.const(np.array([2, S * C], np.int64))]), w1, a


def initializer(model, name: str) -> np.ndarray:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[name]


@pytest.mark.parametrize("op", ["Reshape", "Flatten"])
def test_inner_factor_into_matmul_is_a_strided_map_and_exact(op):
    b = GraphBuilder()
    flat, w1, a = merged(b, op)
    w2 = b.weight(S * C, 4)
    model = b.build(b.op("MatMul", [flat, w2]))
    dep = analyze(model)
    group = only_group(dep, a, 2)
    assert group.prunable and group.units == C and group.kind == "neuron"
    assert np.array_equal(group.members[Slot(w2, 0)], np.tile(np.arange(C), S))
    assert group.roles[Slot(w2, 0)] == Role.IN
    removed = [1, 4, 5]
    _, pruned = assert_mask_equivalent(model, {group.id: removed})
    rows = [s * C + c for s in range(S) for c in removed]
    assert np.array_equal(initializer(pruned, w2), np.delete(initializer(model, w2), rows, 0))
    assert weight_shapes(pruned)[w1] == (5, C - 3)
    if op == "Reshape":
        assert node_input_values(pruned, "Reshape", 1).tolist() == [2, S * (C - 3)]


def test_inner_factor_through_elementwise_into_conv_slices_the_strided_bias():
    b = GraphBuilder()
    flat, w1, a = merged(b)
    bias = b.weight(S * C)
    scaled = b.op("Mul", [b.op("Add", [flat, bias]), b.const(np.float32(0.5))])
    channels = b.op("Unsqueeze", [scaled, b.const(np.array([2], np.int64))])  # [2, S·C, 1]
    wc = b.weight(6, S * C, 1)
    model = b.build(b.op("Conv", [channels, wc]))
    dep = analyze(model)
    group = only_group(dep, a, 2)
    assert group.prunable and group.units == C
    assert group.roles[Slot(bias, 0)] == Role.PARAM
    assert np.array_equal(group.members[Slot(bias, 0)], np.tile(np.arange(C), S))
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 7]})
    assert weight_shapes(pruned)[bias] == (S * (C - 2),)
    assert weight_shapes(pruned)[wc] == (6, S * (C - 2), 1)


def test_two_axes_regrouped_as_magika_does_keep_the_channel_strided():
    """[N, 8, C] → [N, 2, 4·C]: four positions at a time become one channel axis."""
    b = GraphBuilder()
    x = b.input("x", [1, 8, 5])
    h, w1 = dense(b, x, 5, C)
    a = b.op("Relu", [h])
    r = b.op("Reshape", [a, b.const(np.array([1, 2, 4 * C], np.int64))])
    t = b.op("Transpose", [r], perm=[0, 2, 1])  # [1, 4·C, 2]: channels first for the conv
    wc = b.weight(3, 4 * C, 1)
    model = b.build(b.op("Conv", [t, wc]))
    dep = analyze(model)
    group = only_group(dep, a, 2)
    assert group.prunable and group.units == C
    assert np.array_equal(group.members[Slot(wc, 1)], np.tile(np.arange(C), 4))
    _, pruned = assert_mask_equivalent(model, {group.id: [2, 3, 6]})
    assert node_input_values(pruned, "Reshape", 1).tolist() == [1, 2, 4 * (C - 3)]
    assert weight_shapes(pruned)[wc] == (3, 4 * (C - 3), 1)


def test_inner_factor_under_a_layernorm_is_a_hidden_group():
    b = GraphBuilder()
    flat, _, a = merged(b)
    normed = b.op("LayerNormalization", [flat, b.weight(S * C), b.weight(S * C)], axis=-1)
    model = b.build(b.op("MatMul", [normed, b.weight(S * C, 4)]))
    group = only_group(analyze(model), a, 2)
    assert group.prunable and group.kind == "hidden" and group.approximate
    pruned, report = prune(model, 0.5, hidden_ratio=0.5, round_to=1)
    assert [len(g.removed) for g in report.groups if g.kind == "hidden"] == [C // 2]
    feeds = sample_feeds(model, {"x": (2, S, 5)}, seed=2)
    out = check_written(pruned, feeds)
    assert all(np.isfinite(v).all() and v.shape == (2, 4) for v in out.values())


def test_split_again_with_another_factorization_stays_blocked():
    b = GraphBuilder()
    flat, _, a = merged(b)
    shifted = b.op("Add", [flat, b.weight(S * C)])
    split = b.op("Reshape", [shifted, b.const(np.array([2, 4, S * C // 4], np.int64))])
    model = b.build(b.op("MatMul", [split, b.weight(S * C // 4, 3)]))
    dep = analyze(model)
    group = only_group(dep, a, 2)
    assert not group.prunable and prunable(dep) == []
    assert any("split again" in r for r in group.blocked), group.blocked


def test_of_two_factors_carrying_channels_the_outer_one_carries_the_merge():
    """[2, P, Q] from two matrix products (an outer product): merged, P carries the
    merged axis and Q, an inner factor of it, is blocked with the reason."""
    b = GraphBuilder()
    x = b.input("x", [2, 5])
    p, _ = dense(b, x, 5, 4)
    q, _ = dense(b, x, 5, 6)
    rows = b.op("Unsqueeze", [b.op("Relu", [p]), b.const(np.array([2], np.int64))])  # [2,4,1]
    cols = b.op("Unsqueeze", [b.op("Relu", [q]), b.const(np.array([1], np.int64))])  # [2,1,6]
    outer = b.op("Mul", [rows, cols])
    flat = b.op("Reshape", [outer, b.const(np.array([2, 24], np.int64))])
    model = b.build(b.op("MatMul", [flat, b.weight(24, 3)]))
    dep = analyze(model)
    outer_group, inner_group = only_group(dep, outer, 1), only_group(dep, outer, 2)
    assert outer_group.prunable and outer_group.units == 4
    assert not inner_group.prunable and inner_group.units == 6
    assert any("inner factor of an axis that carries other channels" in r
               for r in inner_group.blocked), inner_group.blocked
    assert_mask_equivalent(model, {outer_group.id: [1, 2]})


def test_a_folded_mean_counts_the_kept_features_after_a_hidden_cut():
    """A LayerNorm decomposed with ReduceSum × 1/F (as jax2tf folds it): once features
    go, the pruned model normalizes over the kept ones exactly."""
    b = GraphBuilder()
    x = b.input("x", [4, 5])
    w1, w2 = b.weight(5, 12), b.weight(12, 3)
    h = b.op("MatMul", [x, w1])
    inv = b.const(np.float32(1 / 12))
    axis = b.const(np.array([1], np.int64))
    mean = b.op("Mul", [b.op("ReduceSum", [h, axis], keepdims=0), inv])
    square = b.op("Mul", [b.op("ReduceSum", [b.op("Mul", [h, h]), axis], keepdims=0), inv])
    var = b.op("Sub", [square, b.op("Mul", [mean, mean])])
    centered = b.op("Sub", [h, b.op("Unsqueeze", [mean, axis])])
    scale = b.op("Sqrt", [b.op("Add", [var, b.const(np.float32(1e-5))])])
    normed = b.op("Div", [centered, b.op("Unsqueeze", [scale, axis])])
    model = b.build(b.op("MatMul", [normed, w2]))
    dep = analyze(model)
    group = only_group(dep, h, 1)
    assert group.kind == "hidden" and group.prunable
    removed = [0, 5, 6, 11]
    _, pruned, _ = prune_units(model, {group.id: np.array(removed)})
    feeds = sample_feeds(model, {"x": (4, 5)}, seed=4)
    kept = np.delete(np.arange(12), removed)
    features = feeds["x"] @ initializer(model, w1)[:, kept]
    mu, sigma = features.mean(1, keepdims=True), features.std(1, keepdims=True)
    want = (features - mu) / np.sqrt(sigma ** 2 + 1e-5) @ initializer(model, w2)[kept]
    (got,) = check_written(pruned, feeds).values()
    assert got.shape == (4, 3) and np.allclose(got, want, atol=1e-4)
