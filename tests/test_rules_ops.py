"""Every op rule on a small graph: the groups it forms (unit counts, blocked reasons), the
rewrite it performs (weight shapes, attributes, shape constants) and mask equivalence."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import (
    GraphBuilder,
    analyze,
    assert_mask_equivalent,
    build_typed,
    groups_on,
    node_attr,
    node_input_values,
    prunable,
    prune_all,
    prune_units,
    weight_shapes,
)
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.depgraph import Role, Slot
from onnxprune.shapes import sample_shapes
from onnxprune.verify import (
    check_pruned,
    check_written,
    reference_model,
    relative_error,
    run,
    sample_feeds,
)


def only_group(dep, tensor: str, axis: int = 1):
    groups = groups_on(dep, tensor, axis)
    assert len(groups) == 1, [(g.id, g.units) for g in groups]
    return groups[0]


def conv(b: GraphBuilder, x: str, c_in: int, c_out: int, k: int = 3, group: int = 1,
         dims: int = 2):
    """A conv returning (output, weight name, bias name)."""
    w = b.weight(c_out, c_in // group, *([k] * dims))
    bias = b.weight(c_out)
    y = b.op("Conv", [x, w, bias], pads=[k // 2] * (2 * dims), group=group)
    return y, w, bias


def chain(b: GraphBuilder, op_type: str, c: int = 8, inputs=(), **attrs):
    """x[1,3,8,8] → conv(3→c) → op → conv(c→4); returns (model, hidden, w1, w2)."""
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, c)
    a = b.op(op_type, [h, *inputs], **attrs)
    y, w2, _ = conv(b, a, c, 4)
    return b.build(y), h, w1, w2


# --------------------------------------------------------------------------- Conv


@pytest.mark.parametrize("dims, spatial", [(1, [16]), (2, [8, 8]), (3, [4, 4, 4])])
def test_conv_nd_chain(dims, spatial):
    b = GraphBuilder()
    x = b.input("x", [1, 3, *spatial])
    h, w1, b1 = conv(b, x, 3, 8, dims=dims)
    y, w2, _ = conv(b, b.op("Relu", [h]), 8, 4, dims=dims)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.units == 8 and group.prunable and group.kind == "channel"
    assert group.roles[Slot(w1, 0)] == Role.OUT
    assert group.roles[Slot(b1, 0)] == Role.PARAM
    assert group.roles[Slot(w2, 1)] == Role.IN
    assert prunable(dep) == [group]
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 2, 6]})
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (5, 3, *[3] * dims)
    assert shapes[b1] == (5,)
    assert shapes[w2] == (4, 5, *[3] * dims)


def test_grouped_conv_removes_whole_groups_and_rewrites_group():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 16)
    g, wg, bg = conv(b, b.op("Relu", [h]), 16, 8, group=4)  # 4 in / 2 out per group
    y, w3, _ = conv(b, b.op("Relu", [g]), 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, g)
    assert group.units == 4 and group.prunable
    assert np.array_equal(group.members[Slot(h, 1)], np.repeat(np.arange(4), 4))
    assert np.array_equal(group.members[Slot(g, 1)], np.repeat(np.arange(4), 2))
    assert len(prunable(dep)) == 1
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 3]})
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (8, 3, 3, 3)
    assert shapes[wg] == (4, 4, 3, 3)
    assert shapes[bg] == (4,)
    assert shapes[w3] == (4, 4, 3, 3)
    assert node_attr(pruned, "Conv", "group", 1) == 2


def test_depthwise_conv_couples_input_and_output_channel():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 8)
    d, wd, _ = conv(b, h, 8, 8, group=8)
    y, w3, _ = conv(b, b.op("Relu", [d]), 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, d) and group.units == 8
    assert [g.units for g in prunable(dep)] == [8]
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 5, 7]})
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (5, 3, 3, 3) and shapes[wd] == (5, 1, 3, 3)
    assert shapes[w3] == (4, 5, 3, 3)
    assert node_attr(pruned, "Conv", "group", 1) == 5


def test_conv_transpose_plain():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 8)
    wt, bt = b.weight(8, 6, 2, 2), b.weight(6)
    t = b.op("ConvTranspose", [b.op("Relu", [h]), wt, bt], strides=[2, 2])
    y, w3, _ = conv(b, b.op("Relu", [t]), 6, 4)
    model = b.build(y)
    dep = analyze(model)
    first, second = only_group(dep, h), only_group(dep, t)
    assert (first.units, second.units) == (8, 6)
    assert first.roles[Slot(wt, 0)] == Role.IN and second.roles[Slot(wt, 1)] == Role.OUT
    _, pruned = assert_mask_equivalent(model, {first.id: [2, 3], second.id: [0]})
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (6, 3, 3, 3) and shapes[wt] == (6, 5, 2, 2) and shapes[bt] == (5,)
    assert shapes[w3] == (4, 5, 3, 3)


def test_conv_transpose_depthwise():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 8)
    wt, bt = b.weight(8, 1, 2, 2), b.weight(8)
    t = b.op("ConvTranspose", [h, wt, bt], strides=[2, 2], group=8)
    y, w3, _ = conv(b, b.op("Relu", [t]), 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, t) and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 4, 6]})
    shapes = weight_shapes(pruned)
    assert shapes[wt] == (5, 1, 2, 2) and shapes[bt] == (5,) and shapes[w3] == (4, 5, 3, 3)
    assert node_attr(pruned, "ConvTranspose", "group") == 5


# --------------------------------------------------------------------------- Normalization


def test_batchnorm_statistics_are_sliced():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 8)
    params = [b.weight(8), b.weight(8), b.weight(8), b.weight(8, positive=True)]
    n = b.op("BatchNormalization", [h, *params])
    y, w2, _ = conv(b, b.op("Relu", [n]), 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, n) and group.units == 8
    assert all(group.roles[Slot(p, 0)] == Role.PARAM for p in params)
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 1, 2, 3, 4]})
    shapes = weight_shapes(pruned)
    assert [shapes[p] for p in params] == [(3,)] * 4
    assert shapes[w1] == (3, 3, 3, 3) and shapes[w2] == (4, 3, 3, 3)


def test_instancenorm_scale_and_bias_are_sliced():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    scale, bias = b.weight(8), b.weight(8)
    n = b.op("InstanceNormalization", [h, scale, bias], epsilon=1e-3)
    y, w2, _ = conv(b, b.op("Relu", [n]), 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, n)
    assert group.units == 8 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [7]})
    shapes = weight_shapes(pruned)
    assert shapes[scale] == shapes[bias] == (7,) and shapes[w2] == (4, 7, 3, 3)


def test_instancenorm_over_the_neurons_of_a_matmul_makes_them_approximate():
    """[N, S, D] through InstanceNorm: S is its channel axis, D is normalized."""
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8])
    h = b.op("MatMul", [x, b.weight(8, 6)])
    n = b.op("InstanceNormalization", [h, b.weight(3), b.weight(3)])
    model = b.build(b.op("MatMul", [n, b.weight(6, 4)]))
    group = only_group(analyze(model), h, 2)
    assert group.prunable and group.units == 6 and group.kind == "hidden"
    assert any("InstanceNormalization" in r for r in group.approximate), group.approximate
    _, pruned, _ = prune_units(model, {group.id: np.array([1, 4])})
    check_written(pruned, sample_feeds(pruned, {"x": (1, 3, 8)}))


def test_layernorm_over_channels_makes_an_approximate_hidden_group():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    scale, bias = b.weight(8, 8, 8), b.weight(8, 8, 8)
    n = b.op("LayerNormalization", [h, scale, bias], axis=1)
    y, w2, _ = conv(b, n, 8, 4)
    model = b.build(y)
    group = only_group(analyze(model), h)
    assert group.kind == "hidden" and group.prunable
    assert any("LayerNormalization" in r for r in group.approximate)
    dep, pruned, _ = prune_units(model, {group.id: np.array([2, 5])})
    shapes = weight_shapes(pruned)
    assert shapes[scale] == shapes[bias] == (6, 8, 8) and shapes[w2] == (4, 6, 3, 3)
    check_written(pruned, sample_feeds(pruned, {"x": (1, 3, 8, 8)}))


@pytest.mark.parametrize("op_type, opset, make_inputs, attrs", [
    ("LRN", 17, lambda b: [], {"size": 3}),
    ("GroupNormalization", 21, lambda b: [b.weight(8), b.weight(8)], {"num_groups": 2}),
])
def test_channel_mixing_norm_blocks(op_type, opset, make_inputs, attrs):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    n = b.op(op_type, [h, *make_inputs(b)], **attrs)
    y, _, _ = conv(b, n, 8, 4)
    model = build_typed(b, y, ir_version=10 if opset >= 21 else 8, output_shape=[1, 4, 8, 8])
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.units == 8 and not group.prunable
    assert any(op_type in r and "channel-mixing" in r for r in group.blocked), group.blocked
    assert prunable(dep) == []


def test_a_model_with_group_normalization_prunes_its_other_groups():
    b = GraphBuilder(opset=21)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    n, _, _ = conv(b, b.op("Relu", [h]), 8, 8)
    g = b.op("GroupNormalization", [n, b.weight(8), b.weight(8)], num_groups=2)
    model = build_typed(b, b.op("GlobalAveragePool", [g]), ir_version=10,
                        output_shape=[1, 8, 1, 1])
    group = only_group(analyze(model), h)
    assert group.prunable and group.units == 8
    assert_mask_equivalent(model, {group.id: [1, 6]})
    _, report = onnxprune.prune(model, 0.5, round_to=1)  # strict inference fails the input too
    assert [g.kept for g in report.groups if g.id == group.id] == [4]


def test_layernorm_over_last_axis_lets_channels_pass():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    n = b.op("LayerNormalization", [h, b.weight(8), b.weight(8)], axis=-1)
    y, w2, _ = conv(b, n, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, n)
    assert group.prunable and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [2, 5]})
    assert weight_shapes(pruned)[w2] == (4, 6, 3, 3)


# --------------------------------------------------------------------------- Unary


UNARY_CASES = [
    ("Relu", [], {}, 17),
    ("Sigmoid", [], {}, 17),
    ("HardSigmoid", [], {"alpha": 0.3, "beta": 0.4}, 17),
    ("HardSwish", [], {}, 17),
    ("Tanh", [], {}, 17),
    ("LeakyRelu", [], {"alpha": 0.2}, 17),
    ("Elu", [], {"alpha": 0.7}, 17),
    ("Selu", [], {}, 17),
    ("Softplus", [], {}, 17),
    ("Erf", [], {}, 17),
    ("Gelu", [], {}, 20),
    ("Gelu", [], {"approximate": "tanh"}, 20),
    ("Identity", [], {}, 17),
    ("Dropout", [], {}, 17),
    ("Cast", [], {"to": TensorProto.FLOAT}, 17),
    ("Clip", ["lo", "hi"], {}, 17),
    ("Clip", [], {"min": -0.5, "max": 0.5}, 6),
]


@pytest.mark.parametrize("op_type, side, attrs, opset", UNARY_CASES,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(UNARY_CASES)])
def test_unary_ops_pass_channels(op_type, side, attrs, opset):
    b = GraphBuilder(opset=opset)
    inputs = [b.const(np.float32(v)) for v in (-0.5, 0.5)] if side else []
    model, h, w1, w2 = chain(b, op_type, 8, inputs, **attrs)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.prunable and group.units == 8
    assert [g.units for g in prunable(dep)] == [8]
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 3, 4]})
    shapes = weight_shapes(pruned)
    assert shapes[w1][0] == 5 and shapes[w2][1] == 5


def test_dropout_with_mask_output_used_couples_mask():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    d, mask = b.op("Dropout", [h], n_out=2)
    m = b.op("Mul", [d, b.op("Cast", [mask], to=TensorProto.FLOAT)])
    y, w2, _ = conv(b, m, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert Slot(mask, 1) in group.members and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [6]})
    assert weight_shapes(pruned)[w2] == (4, 7, 3, 3)


def test_prelu_per_channel_slope_is_sliced():
    b = GraphBuilder()
    slope = b.weight(8, 1, 1)
    model, h, _, w2 = chain(b, "PRelu", 8, [slope])
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.roles[Slot(slope, 0)] == Role.PARAM and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 2]})
    assert weight_shapes(pruned)[slope] == (6, 1, 1)
    assert weight_shapes(pruned)[w2] == (4, 6, 3, 3)


# --------------------------------------------------------------------------- Broadcasting


@pytest.mark.parametrize("op_type", ["Add", "Mul", "Sub", "Div"])
def test_binary_per_channel_constant_is_sliced(op_type):
    b = GraphBuilder()
    c = b.weight(8, 1, 1, positive=True)
    model, h, _, w2 = chain(b, op_type, 8, [c])
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.roles[Slot(c, 0)] == Role.PARAM and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 7]})
    assert weight_shapes(pruned)[c] == (6, 1, 1)


def test_binary_scalar_and_full_shape_broadcast_constants():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    scalar, spatial = b.const(np.float32(1.5)), b.weight(1, 8, 8)
    m = b.op("Add", [b.op("Mul", [scalar, h]), spatial])
    y, w2, _ = conv(b, m, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert Slot(scalar, 0) not in group.members and Slot(spatial, 0) not in group.members
    _, pruned = assert_mask_equivalent(model, {group.id: [3]})
    shapes = weight_shapes(pruned)
    assert shapes[scalar] == () and shapes[spatial] == (1, 8, 8)
    assert shapes[w2] == (4, 7, 3, 3)


def test_one_channel_gate_broadcast_over_channels_leaves_them_prunable():
    """h[1,8,H,W] · sigmoid(conv(x)[1,1,H,W]): the gate's single channel is broadcast,
    not coupled with h's eight."""
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    gate, wg, _ = conv(b, x, 3, 1)
    s = b.op("Sigmoid", [gate])
    y, w2, _ = conv(b, b.op("Mul", [h, s]), 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.prunable and group.units == 8, group.blocked
    assert only_group(dep, gate).blocked == [f"Mul {b.nodes[-2].name} broadcasts axis 1 of {s}"]
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 3, 4]})
    shapes = weight_shapes(pruned)
    assert shapes[w2] == (4, 5, 3, 3) and shapes[wg] == (1, 3, 3, 3)


def test_squeeze_excitation_gate_is_coupled():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 8)
    a = b.op("Relu", [h])
    pooled = b.op("GlobalAveragePool", [a])
    s, ws, _ = conv(b, pooled, 8, 2, k=1)
    e, we, be = conv(b, b.op("Relu", [s]), 2, 8, k=1)
    gated = b.op("Mul", [a, b.op("Sigmoid", [e])])
    y, w3, _ = conv(b, gated, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    main, squeeze = only_group(dep, h), only_group(dep, s)
    assert main is only_group(dep, e), "the gate [N,C,1,1] must join the trunk's group"
    assert (main.units, squeeze.units) == (8, 2)
    assert main.roles[Slot(we, 0)] == Role.OUT and main.roles[Slot(ws, 1)] == Role.IN
    _, pruned = assert_mask_equivalent(model, {main.id: [1, 4, 5], squeeze.id: [0]})
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (5, 3, 3, 3) and shapes[ws] == (1, 5, 1, 1)
    assert shapes[we] == (5, 1, 1, 1) and shapes[be] == (5,) and shapes[w3] == (4, 5, 3, 3)


@pytest.mark.parametrize("op_type", ["Sum", "Mean", "Max", "Min"])
def test_variadic_ops_couple_every_operand(op_type):
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    branches = [conv(b, x, 3, 8) for _ in range(3)]
    s = b.op(op_type, [h for h, _, _ in branches])
    y, w2, _ = conv(b, s, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, s)
    assert all(only_group(dep, h) is group for h, _, _ in branches)
    assert [g.units for g in prunable(dep)] == [8]
    _, pruned = assert_mask_equivalent(model, {group.id: [2, 3, 6]})
    shapes = weight_shapes(pruned)
    assert all(shapes[w] == (5, 3, 3, 3) for _, w, _ in branches)
    assert shapes[w2] == (4, 5, 3, 3)


# --------------------------------------------------------------------------- Pooling, Pad, Resize


@pytest.mark.parametrize("op_type, attrs", [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("LpPool", {"kernel_shape": [2, 2], "p": 2}),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
])
def test_pools_pass_channels(op_type, attrs):
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 8)
    p = b.op(op_type, [h], **attrs)
    y, w2, _ = conv(b, p, 8, 4, k=1)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, p) and group.units == 8 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 1, 7]})
    assert weight_shapes(pruned)[w2] == (4, 5, 1, 1)


def test_maxpool_indices_output_blocks_channels():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    p, idx = b.op("MaxPool", [h], n_out=2, kernel_shape=[2, 2], strides=[2, 2])
    f = b.op("Cast", [idx], to=TensorProto.FLOAT)
    y, _, _ = conv(b, b.op("Add", [p, f]), 8, 4)
    dep = analyze(b.build(y))
    group = only_group(dep, h)
    assert not group.prunable
    assert any("MaxPool" in r and "axis 1" in r for r in group.blocked), group.blocked


@pytest.mark.parametrize("opset", [11, 18])
def test_pad_spatial_passes_channels(opset):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    if opset >= 18:
        p = b.op("Pad", [h, b.const(np.array([1, 2, 1, 2], np.int64)), "",
                         b.const(np.array([2, 3], np.int64))])
    else:
        p = b.op("Pad", [h, b.const(np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64))])
    y, w2, _ = conv(b, p, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, p)
    assert group.units == 8 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [4]})
    assert weight_shapes(pruned)[w2] == (4, 7, 3, 3)


def test_pad_on_channel_axis_blocks():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    p = b.op("Pad", [h, b.const(np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64))])
    y, _, _ = conv(b, p, 10, 4)
    dep = analyze(b.build(y))
    group = only_group(dep, h)
    assert not group.prunable
    assert any("Pad" in r and "axis 1" in r for r in group.blocked), group.blocked


def test_resize_with_scales_passes_channels():
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    scales = b.const(np.array([1, 1, 2, 2], np.float32))
    r = b.op("Resize", [h, "", scales], mode="nearest")
    y, w2, _ = conv(b, r, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, r)
    assert group is only_group(dep, h) and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 6]})
    assert weight_shapes(pruned)[w2] == (4, 6, 3, 3)
    assert np.array_equal(node_input_values(pruned, "Resize", 2), [1, 1, 2, 2])


def test_resize_with_sizes_rewrites_the_channel_entry():
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    sizes = b.const(np.array([1, 8, 12, 12], np.int64))
    r = b.op("Resize", [h, "", "", sizes], mode="linear")
    y, w2, _ = conv(b, r, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, r)
    assert group.units == 8 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 2, 4]})
    assert np.array_equal(node_input_values(pruned, "Resize", 3), [1, 5, 12, 12])
    assert weight_shapes(pruned)[w2] == (4, 5, 3, 3)


def test_resize_scaling_channels_blocks():
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    scales = b.const(np.array([1, 2, 1, 1], np.float32))
    r = b.op("Resize", [h, "", scales], mode="nearest")
    y, _, _ = conv(b, r, 16, 4)
    dep = analyze(b.build(y))
    group = only_group(dep, h)
    assert any("Resize" in r and "axis 1" in r for r in group.blocked), group.blocked


def test_upsample_opset9():
    b = GraphBuilder(opset=9)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    u = b.op("Upsample", [h, b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    y, w2, _ = conv(b, u, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, u)
    assert group is only_group(dep, h) and group.units == 8 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [3]})
    assert weight_shapes(pruned)[w2] == (4, 7, 3, 3)


# --------------------------------------------------------------------------- Concat, Split, Slice


def test_concat_offsets_map_parts_to_consumer_columns():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    a, wa, _ = conv(b, x, 3, 8)
    c, wc, _ = conv(b, x, 3, 6)
    cat = b.op("Concat", [a, c], axis=1)
    y, w2, _ = conv(b, cat, 14, 4)
    model = b.build(y)
    dep = analyze(model)
    ga, gc = only_group(dep, a), only_group(dep, c)
    assert (ga.units, gc.units) == (8, 6) and ga.prunable and gc.prunable
    assert np.array_equal(ga.members[Slot(w2, 1)], np.r_[np.arange(8), -np.ones(6, int)])
    assert np.array_equal(gc.members[Slot(w2, 1)], np.r_[-np.ones(8, int), np.arange(6)])
    _, pruned = assert_mask_equivalent(model, {ga.id: [0, 7], gc.id: [1, 2, 5]})
    shapes = weight_shapes(pruned)
    assert shapes[wa] == (6, 3, 3, 3) and shapes[wc] == (3, 3, 3, 3)
    assert shapes[w2] == (4, 9, 3, 3)
    # the kept consumer columns are exactly the surviving channels, in order
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[w2]
    kept = [k for k in range(14) if k not in (0, 7, 8 + 1, 8 + 2, 8 + 5)]
    got = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}[w2]
    assert np.array_equal(got, original[:, kept])


def test_split_opset13_input_sizes_are_rewritten():
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 12)
    s0, s1 = b.op("Split", [h, b.const(np.array([4, 8], np.int64))], n_out=2, axis=1)
    y0, w0, _ = conv(b, s0, 4, 5)
    y1, w1b, _ = conv(b, s1, 8, 5)
    model = b.build(b.op("Add", [y0, y1]))
    dep = analyze(model)
    g0, g1 = only_group(dep, s0), only_group(dep, s1)
    assert groups_on(dep, h) == sorted([g0, g1], key=lambda g: g.id)
    assert (g0.units, g1.units) == (4, 8)
    _, pruned = assert_mask_equivalent(model, {g0.id: [1], g1.id: [0, 3, 7]})
    assert np.array_equal(node_input_values(pruned, "Split", 1), [3, 5])
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (8, 3, 3, 3) and shapes[w0] == (5, 3, 3, 3)
    assert shapes[w1b] == (5, 5, 3, 3)


def test_split_opset18_num_outputs_becomes_explicit_sizes():
    b = GraphBuilder(opset=18)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 12)
    parts = b.op("Split", [h], n_out=3, axis=1, num_outputs=3)
    ys = [conv(b, p, 4, 5)[0] for p in parts]
    model = b.build(b.op("Sum", ys))
    dep = analyze(model)
    groups = [only_group(dep, p) for p in parts]
    assert [g.units for g in groups] == [4, 4, 4]
    _, pruned = assert_mask_equivalent(model, {groups[0].id: [0], groups[2].id: [1, 2]})
    assert node_attr(pruned, "Split", "num_outputs") is None
    assert np.array_equal(node_input_values(pruned, "Split", 1), [3, 4, 2])


def test_split_opset11_attribute_is_rewritten():
    b = GraphBuilder(opset=11)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 6)
    s0, s1 = b.op("Split", [h], n_out=2, axis=1, split=[2, 4])
    model = b.build(b.op("Add", [conv(b, s0, 2, 3)[0], conv(b, s1, 4, 3)[0]]))
    dep = analyze(model)
    g1 = only_group(dep, s1)
    _, pruned = assert_mask_equivalent(model, {g1.id: [2]})
    assert node_attr(pruned, "Split", "split") == [2, 3]


def test_slice_on_channel_axis_rewrites_start_and_end():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 12)
    s = b.op("Slice", [h, b.const(np.array([2], np.int64)), b.const(np.array([10], np.int64)),
                       b.const(np.array([1], np.int64))])
    y, w2, _ = conv(b, s, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    inside = only_group(dep, s)
    outside = [g for g in groups_on(dep, h) if g is not inside]
    assert inside.units == 8 and [g.units for g in outside] == [4]
    dead = outside[0]
    assert np.array_equal(np.flatnonzero(dead.members[Slot(h, 1)] >= 0), [0, 1, 10, 11])
    assert not dead.slots(Role.IN), "channels the Slice drops have no consumer"
    # remove channel 1 (before the window) and window index 3 (channel 5)
    _, pruned = assert_mask_equivalent(model, {dead.id: [1], inside.id: [3]})
    assert node_input_values(pruned, "Slice", 1).tolist() == [1]
    assert node_input_values(pruned, "Slice", 2).tolist() == [8]
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (10, 3, 3, 3) and shapes[w2] == (4, 7, 3, 3)


def test_slice_on_spatial_axis_passes_channels():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    s = b.op("Slice", [h, b.const(np.array([1, 2], np.int64)), b.const(np.array([7, 8], np.int64)),
                       b.const(np.array([2, 3], np.int64))])
    y, w2, _ = conv(b, s, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, s)
    assert group is only_group(dep, h) and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 1]})
    assert node_input_values(pruned, "Slice", 1).tolist() == [1, 2]
    assert node_input_values(pruned, "Slice", 2).tolist() == [7, 8]
    assert weight_shapes(pruned)[w2] == (4, 6, 3, 3)


def test_slice_with_step_on_channel_axis_blocks():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    s = b.op("Slice", [h, b.const(np.array([0], np.int64)), b.const(np.array([8], np.int64)),
                       b.const(np.array([1], np.int64)), b.const(np.array([2], np.int64))])
    y, _, _ = conv(b, s, 4, 4)
    dep = analyze(b.build(y))
    assert any("Slice" in r and "step" in r for r in only_group(dep, h).blocked)


# --------------------------------------------------------------------------- Reshape, Flatten, ...


def initializer(model, name: str) -> np.ndarray:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[name]


def test_flatten_to_gemm_maps_a_channel_to_a_block_of_inputs():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 4, 4])
    h, w1, _ = conv(b, x, 3, 4)
    f = b.op("Flatten", [b.op("Relu", [h])], axis=1)
    wg = b.weight(10, 64)
    y = b.op("Gemm", [f, wg, b.weight(10)], transB=1)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.units == 4 and group.prunable and group.kind == "channel"
    assert np.array_equal(group.members[Slot(wg, 1)], np.repeat(np.arange(4), 16))
    assert group.roles[Slot(wg, 1)] == Role.IN
    _, pruned = assert_mask_equivalent(model, {group.id: [1]})
    assert weight_shapes(pruned)[w1] == (3, 3, 3, 3)
    assert np.array_equal(initializer(pruned, wg),
                          np.delete(initializer(model, wg), np.arange(16, 32), axis=1))


def test_reshape_nc11_to_nc_rewrites_the_target():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    r = b.op("Reshape", [b.op("GlobalAveragePool", [h]), b.const(np.array([1, 8], np.int64))])
    wg = b.weight(8, 5)
    model = b.build(b.op("Gemm", [r, wg]))
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, r, 1) and group.units == 8 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 2, 3]})
    assert node_input_values(pruned, "Reshape", 1).tolist() == [1, 5]
    assert weight_shapes(pruned)[wg] == (5, 5)


@pytest.mark.parametrize("target", [[1, 64], [1, -1], [0, 64]])
def test_reshape_nchw_to_flat_with_constant_target(target):
    b = GraphBuilder()
    x = b.input("x", [1, 3, 4, 4])
    h, _, _ = conv(b, x, 3, 4)
    r = b.op("Reshape", [h, b.const(np.array(target, np.int64))])
    wg = b.weight(64, 6)
    model = b.build(b.op("MatMul", [r, wg]))
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.units == 4 and group.prunable
    assert np.array_equal(group.members[Slot(wg, 0)], np.repeat(np.arange(4), 16))
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 3]})
    new = node_input_values(pruned, "Reshape", 1).tolist()
    assert new == [target[0], 32 if target[1] > 0 else -1]
    assert weight_shapes(pruned)[wg] == (32, 6)


def test_reshape_with_runtime_target_and_constant_minus_one_passes():
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    h, _, _ = conv(b, x, 3, 4)
    a = b.op("Relu", [h])
    batch = b.op("Gather", [b.op("Shape", [a]), b.const(np.array(0, np.int64))], axis=0)
    target = b.op("Concat", [b.op("Unsqueeze", [batch, b.const(np.array([0], np.int64))]),
                             b.const(np.array([-1], np.int64))], axis=0)
    r = b.op("Reshape", [a, target])
    wg = b.weight(64, 6)
    model = build_typed(b, b.op("MatMul", [r, wg]), output_shape=[1, 6])
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.units == 4 and group.prunable, group.blocked
    _, pruned = assert_mask_equivalent(model, {group.id: [2]})
    assert weight_shapes(pruned)[wg] == (48, 6)
    assert [n.op_type for n in pruned.graph.node].count("Shape") == 1


def test_reshape_with_channel_entry_from_another_tensor_blocks():
    """The channel entry comes from another input's shape: it would not follow a prune."""
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, 4, 4])
    z = b.input("z", [1, 4])
    h, _, _ = conv(b, x, 3, 4)
    a = b.op("Relu", [h])
    shape = b.op("Shape", [z])
    channels = b.op("Slice", [shape, b.const(np.array([1], np.int64)),
                              b.const(np.array([2], np.int64))])
    target = b.op("Concat", [b.const(np.array([1], np.int64)), channels,
                             b.const(np.array([-1], np.int64))], axis=0)
    r = b.op("Reshape", [a, target])
    y, _, _ = conv(b, b.op("Unsqueeze", [r, b.const(np.array([3], np.int64))]), 4, 2, k=1)
    dep = analyze(build_typed(b, y, output_shape=[1, 2, 16, 1]))
    group = only_group(dep, h)
    assert group.units == 4 and not group.prunable
    assert any("computed at run time" in r for r in group.blocked), group.blocked


def test_transpose_to_nhwc_then_matmul_with_constant():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 8)
    t = b.op("Transpose", [b.op("Relu", [h])], perm=[0, 2, 3, 1])
    wm = b.weight(8, 5)
    model = b.build(b.op("MatMul", [t, wm]))
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, t, 3) and group.units == 8 and group.prunable
    assert group.roles[Slot(wm, 0)] == Role.IN
    out_group = only_group(dep, wm, 1)
    assert any("graph output" in r for r in out_group.blocked)
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 2, 3]})
    assert weight_shapes(pruned)[wm] == (5, 5) and weight_shapes(pruned)[w1] == (5, 3, 3, 3)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_chain(trans_b):
    b = GraphBuilder()
    x = b.input("x", [2, 12])
    w1 = b.weight(16, 12) if trans_b else b.weight(12, 16)
    b1 = b.weight(16)
    h = b.op("Relu", [b.op("Gemm", [x, w1, b1], transB=trans_b)])
    w2 = b.weight(4, 16) if trans_b else b.weight(16, 4)
    model = b.build(b.op("Gemm", [h, w2, b.weight(4)], transB=trans_b))
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.units == 16 and [g.units for g in prunable(dep)] == [16]
    out_axis = 0 if trans_b else 1
    assert group.roles[Slot(w1, out_axis)] == Role.OUT
    assert group.roles[Slot(b1, 0)] == Role.PARAM
    assert group.roles[Slot(w2, 1 - out_axis)] == Role.IN
    _, pruned = assert_mask_equivalent(model, {group.id: np.arange(0, 16, 3)})
    shapes = weight_shapes(pruned)
    assert shapes[w1] == ((10, 12) if trans_b else (12, 10)) and shapes[b1] == (10,)
    assert shapes[w2] == ((4, 10) if trans_b else (10, 4))


def test_gemm_with_row_bias_blocks_nothing_and_full_bias_couples():
    b = GraphBuilder()
    x = b.input("x", [2, 12])
    c = b.weight(2, 16)
    h = b.op("Relu", [b.op("Gemm", [x, b.weight(12, 16), c])])
    model = b.build(b.op("Gemm", [h, b.weight(16, 4)]))
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.roles[Slot(c, 1)] == Role.PARAM and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 5]})
    assert weight_shapes(pruned)[c] == (2, 14)


def test_matmul_with_constant_b_on_3d_activations():
    b = GraphBuilder()
    x = b.input("x", [2, 5, 6])
    w1, bias = b.weight(6, 12), b.weight(12)
    h = b.op("Relu", [b.op("Add", [b.op("MatMul", [x, w1]), bias])])
    w2 = b.weight(12, 4)
    model = b.build(b.op("MatMul", [h, w2]))
    dep = analyze(model)
    group = only_group(dep, h, 2)
    assert group.units == 12 and [g.units for g in prunable(dep)] == [12]
    assert group.roles[Slot(w1, 1)] == Role.OUT and group.roles[Slot(bias, 0)] == Role.PARAM
    assert group.roles[Slot(w2, 0)] == Role.IN
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 1, 2, 3, 11]})
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (6, 7) and shapes[bias] == (7,) and shapes[w2] == (7, 4)


def test_matmul_with_an_int8_weight_makes_a_neuron_group():
    b = GraphBuilder()
    x = b.input("x", [1, 5, 6])
    q = b.const(b.rng.integers(-100, 100, (6, 12)).astype(np.int8))
    w1 = b.op("DequantizeLinear", [q, b.const(np.full(12, 0.01, np.float32)),
                                   b.const(np.zeros(12, np.int8))], axis=1)
    h = b.op("Relu", [b.op("MatMul", [x, w1])])
    model = b.build(b.op("MatMul", [h, b.weight(12, 4)]))
    group = only_group(analyze(model), h, 2)
    assert group.prunable and group.units == 12
    assert group.kind == "neuron", group.producers


def test_squeeze_and_unsqueeze_renumber_the_channel_axis():
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    axes = b.const(np.array([2, 3], np.int64))
    s = b.op("Squeeze", [b.op("GlobalAveragePool", [h]), axes])
    u = b.op("Unsqueeze", [b.op("Relu", [s]), axes])
    y1, w2, _ = conv(b, u, 8, 4, k=1)
    wg = b.weight(8, 3)
    model = b.build([y1, b.op("MatMul", [s, wg])])
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, s, 1) and group is only_group(dep, u, 1)
    assert group.units == 8 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [2, 5]})
    assert weight_shapes(pruned)[w2] == (4, 6, 1, 1) and weight_shapes(pruned)[wg] == (6, 3)


def test_squeeze_unsqueeze_opset11_attributes():
    b = GraphBuilder(opset=11)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    s = b.op("Squeeze", [b.op("GlobalMaxPool", [h])], axes=[3, 2])
    u = b.op("Unsqueeze", [s], axes=[-1, 2])
    y, w2, _ = conv(b, u, 8, 4, k=1)
    model = b.build(y)
    group = only_group(analyze(model), h)
    assert group.prunable and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [7]})
    assert weight_shapes(pruned)[w2] == (4, 7, 1, 1)


def test_expand_sets_the_channel_entry_of_its_shape_to_broadcast():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    e = b.op("Expand", [b.op("GlobalAveragePool", [h]),
                        b.const(np.array([1, 8, 4, 4], np.int64))])
    y, w2, _ = conv(b, e, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, e)
    assert group is only_group(dep, h) and group.prunable and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 4, 6]})
    assert node_input_values(pruned, "Expand", 1).tolist() == [1, 1, 4, 4]
    assert weight_shapes(pruned)[w2] == (4, 5, 3, 3)


def test_expand_with_broadcast_channel_entry_keeps_it():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    e = b.op("Expand", [b.op("GlobalAveragePool", [h]), b.const(np.array([4, 4], np.int64))])
    y, _, _ = conv(b, e, 8, 4)
    model = b.build(y)
    group = only_group(analyze(model), h)
    assert group.prunable and group.units == 8, group.blocked
    _, pruned = assert_mask_equivalent(model, {group.id: [1]})
    assert node_input_values(pruned, "Expand", 1).tolist() == [4, 4]


def test_tile_on_spatial_axes_passes_and_on_channels_blocks():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 4, 4])
    h, _, _ = conv(b, x, 3, 8)
    t = b.op("Tile", [h, b.const(np.array([1, 1, 2, 2], np.int64))])
    y, w2, _ = conv(b, t, 8, 4)
    model = b.build(y)
    group = only_group(analyze(model), t)
    assert group.prunable and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [3, 4]})
    assert weight_shapes(pruned)[w2] == (4, 6, 3, 3)

    b = GraphBuilder()
    x = b.input("x", [1, 3, 4, 4])
    h, _, _ = conv(b, x, 3, 8)
    t = b.op("Tile", [h, b.const(np.array([1, 2, 1, 1], np.int64))])
    y, _, _ = conv(b, t, 16, 4)
    group = only_group(analyze(b.build(y)), h)
    assert any("Tile" in r and "repeats axis 1" in r for r in group.blocked), group.blocked


# --------------------------------------------------------------------------- Reduce, Softmax


@pytest.mark.parametrize("opset, keepdims", [(13, 1), (13, 0), (18, 1), (18, 0)])
def test_reduce_mean_over_spatial_axes_passes(opset, keepdims):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 8)
    if opset >= 18:
        r = b.op("ReduceMean", [h, b.const(np.array([2, 3], np.int64))], keepdims=keepdims)
    else:
        r = b.op("ReduceMean", [h], axes=[-2, -1], keepdims=keepdims)
    if keepdims:
        wc = b.weight(5, 8, 1, 1)
        y = b.op("Conv", [r, wc])
    else:
        wc = b.weight(8, 5)
        y = b.op("MatMul", [r, wc])
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, r) and group.units == 8 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 6]})
    assert weight_shapes(pruned)[wc] == ((5, 6, 1, 1) if keepdims else (6, 5))
    assert weight_shapes(pruned)[w1] == (6, 3, 3, 3)


@pytest.mark.parametrize("op_type", ["ReduceMean", "ReduceSum", "ReduceMax"])
def test_reduce_over_channel_axis_blocks(op_type):
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    if op_type == "ReduceSum":  # axes became an input of ReduceSum at opset 13
        r = b.op(op_type, [h, b.const(np.array([1], np.int64))], keepdims=1)
    else:
        r = b.op(op_type, [h], axes=[1], keepdims=1)
    y, _, _ = conv(b, r, 1, 2)
    dep = analyze(b.build(y))
    group = only_group(dep, h)
    if op_type == "ReduceMax":
        assert not group.prunable
        assert any(op_type in r and "channel-mixing" in r for r in group.blocked), group.blocked
    else:  # a statistic, as in a decomposed LayerNorm: approximate, cut only when asked
        assert group.prunable and group.kind == "hidden"
        assert any(op_type in r for r in group.approximate)


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
def test_softmax_over_channels_blocks(op_type):
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    y, _, _ = conv(b, b.op(op_type, [h], axis=1), 8, 4)
    dep = analyze(b.build(y))
    group = only_group(dep, h)
    assert not group.prunable and prunable(dep) == []
    assert any(op_type in r and "channel-mixing" in r for r in group.blocked), group.blocked


def test_softmax_over_last_axis_passes_channels():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    y, w2, _ = conv(b, b.op("Softmax", [h], axis=-1), 8, 4)
    model = b.build(y)
    group = only_group(analyze(model), h)
    assert group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [5]})
    assert weight_shapes(pruned)[w2] == (4, 7, 3, 3)


# --------------------------------------------------------------------------- LSTM


def test_lstm_absorbs_input_features_from_a_conv1d():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 10])  # [N, C, L]
    h, w1, b1 = conv(b, x, 3, 12, dims=1)
    seq = b.op("Transpose", [b.op("Relu", [h])], perm=[2, 0, 1])  # [L, N, C]
    hidden = 5
    w, r, bias = b.weight(1, 4 * hidden, 12), b.weight(1, 4 * hidden, hidden), b.weight(
        1, 8 * hidden)
    y = b.op("LSTM", [seq, w, r, bias], n_out=3, hidden_size=hidden)[0]
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.units == 12 and group.prunable, group.blocked
    assert group.roles[Slot(w, 2)] == Role.IN
    assert [g.units for g in prunable(dep)] == [12]
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 4, 5, 11]})
    shapes = weight_shapes(pruned)
    assert shapes[w] == (1, 4 * hidden, 8) and shapes[r] == (1, 4 * hidden, hidden)
    assert shapes[w1] == (8, 3, 3) and shapes[b1] == (8,)


def test_lstm_output_blocks_the_group_it_joins():
    b = GraphBuilder()
    x = b.input("x", [7, 1, 6])  # [L, N, C]
    hidden = 4
    wx = b.weight(6, 10)
    feats = b.op("Relu", [b.op("MatMul", [x, wx])])
    w, r = b.weight(1, 4 * hidden, 10), b.weight(1, 4 * hidden, hidden)
    out = b.op("LSTM", [feats, w, r], n_out=3, hidden_size=hidden)[0]  # [L, 1, N, H]
    seq = b.op("Squeeze", [out, b.const(np.array([1], np.int64))])
    wa = b.weight(6, hidden)
    s = b.op("Add", [seq, b.op("MatMul", [x, wa])])
    model = b.build(b.op("MatMul", [s, b.weight(hidden, 3)]))
    dep = analyze(model)
    feature_group = only_group(dep, feats, 2)
    assert feature_group.prunable and feature_group.units == 10
    hidden_group = only_group(dep, wa, 1)
    assert hidden_group.units == hidden and not hidden_group.prunable
    assert any("LSTM" in r and "hidden size" in r for r in hidden_group.blocked)
    _, pruned = assert_mask_equivalent(model, {feature_group.id: [1, 2, 3]})
    assert weight_shapes(pruned)[w] == (1, 4 * hidden, 7)
    assert weight_shapes(pruned)[wx] == (6, 7)


# --------------------------------------------------------------------------- Blocking patterns


def test_an_if_subgraph_reading_a_conv_output_blocks_its_group():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    cond = b.input("cond", [], TensorProto.BOOL)
    h, _, _ = conv(b, x, 3, 8)
    other, _, _ = conv(b, x, 3, 6)
    branch_out = helper.make_tensor_value_info("branch_y", TensorProto.FLOAT, None)
    then_branch = helper.make_graph([helper.make_node("Relu", [h], ["branch_y"])], "then", [],
                                    [branch_out])
    else_branch = helper.make_graph([helper.make_node("Neg", [h], ["branch_y"])], "else", [],
                                    [branch_out])
    chosen = b.op("If", [cond], then_branch=then_branch, else_branch=else_branch)
    y1, _, _ = conv(b, b.op("Add", [h, chosen]), 8, 4)
    y2, w2, _ = conv(b, other, 6, 4)
    model = b.build(b.op("Add", [y1, y2]))
    dep = analyze(model)
    group = only_group(dep, h)
    assert not group.prunable
    assert any("If" in r and "subgraph" in r for r in group.blocked), group.blocked
    free = only_group(dep, other)
    assert prunable(dep) == [free] and free.units == 6
    _, pruned = assert_mask_equivalent(model, {free.id: [0, 1]})
    assert weight_shapes(pruned)[w2] == (4, 4, 3, 3)


# --------------------------------------------------------------------------- Weights and opsets


def test_float16_conv_chain():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8], TensorProto.FLOAT16)

    def half(*shape, positive=False):
        values = b.rng.standard_normal(shape).astype(np.float16)
        return b.const(np.abs(values) + np.float16(0.5) if positive else values)

    w1, b1 = half(8, 3, 3, 3), half(8)
    h = b.op("Conv", [x, w1, b1], pads=[1, 1, 1, 1])
    bn = b.op("BatchNormalization", [h, half(8), half(8), half(8), half(8, positive=True)])
    w2 = half(4, 8, 3, 3)
    y = b.op("Conv", [b.op("Relu", [bn]), w2], pads=[1, 1, 1, 1])
    model = build_typed(b, y, TensorProto.FLOAT16)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.units == 8 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 3, 6]}, tol=1e-2)
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (5, 3, 3, 3) and shapes[w2] == (4, 5, 3, 3)
    assert all(t.data_type == TensorProto.FLOAT16 for t in pruned.graph.initializer)


def test_weights_from_constant_nodes_identity_and_constant_of_shape():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    w1 = b.op("Constant", [], value=numpy_helper.from_array(
        b.rng.standard_normal((8, 3, 3, 3)).astype(np.float32)))
    bias = b.op("ConstantOfShape", [b.const(np.array([8], np.int64))],
                value=numpy_helper.from_array(np.array([0.25], np.float32)))
    h = b.op("Conv", [x, w1, bias], pads=[1, 1, 1, 1])
    w2 = b.op("Identity", [b.weight(4, 8, 3, 3)])
    y = b.op("Conv", [b.op("Relu", [h]), w2], pads=[1, 1, 1, 1])
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.units == 8 and group.prunable
    assert group.roles[Slot(w1, 0)] == Role.OUT and group.roles[Slot(bias, 0)] == Role.PARAM
    assert group.roles[Slot(w2, 1)] == Role.IN
    _, pruned = assert_mask_equivalent(model, {group.id: [2, 3]})
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (6, 3, 3, 3) and shapes[bias] == (6,) and shapes[w2] == (4, 6, 3, 3)


@pytest.mark.parametrize("opset", [11, 21])
def test_simple_chain_across_opsets(opset):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 8)
    a = b.op("Relu", [b.bn(h, 8)])
    p = b.op("MaxPool", [a], kernel_shape=[2, 2], strides=[2, 2])
    g, w2, _ = conv(b, p, 8, 6)
    f = b.op("Flatten", [b.op("GlobalAveragePool", [b.op("Sigmoid", [g])])])
    wg = b.weight(3, 6)
    model = build_typed(b, b.op("Gemm", [f, wg], transB=1),
                        ir_version=10 if opset >= 21 else 8)
    dep = analyze(model)
    first, second = only_group(dep, h), only_group(dep, g)
    assert sorted(g.units for g in prunable(dep)) == [6, 8]
    _, pruned = prune_all(model)
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (4, 3, 3, 3) and shapes[w2] == (3, 4, 3, 3) and shapes[wg] == (3, 3)
    assert first.prunable and second.prunable
    assert pruned.opset_import[0].version == opset


# --------------------------------------------------------------------------- More structure


def test_grouped_conv_transpose():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    wt, bt = b.weight(8, 3, 2, 2), b.weight(6)  # group=2: 4 in / 3 out per group
    t = b.op("ConvTranspose", [h, wt, bt], strides=[2, 2], group=2)
    y, w3, _ = conv(b, b.op("Relu", [t]), 6, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, t) and group.units == 2 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [0]})
    shapes = weight_shapes(pruned)
    assert shapes[wt] == (4, 3, 2, 2) and shapes[bt] == (3,) and shapes[w3] == (4, 3, 3, 3)
    assert node_attr(pruned, "ConvTranspose", "group") == 1


def test_depthwise_conv_with_channel_multiplier():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h, w1, _ = conv(b, x, 3, 4)
    d, wd, bd = conv(b, h, 4, 8, group=4)
    y, w3, _ = conv(b, b.op("Relu", [d]), 8, 2)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group is only_group(dep, d) and group.units == 4
    assert np.array_equal(group.members[Slot(d, 1)], [0, 0, 1, 1, 2, 2, 3, 3])
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 2]})
    shapes = weight_shapes(pruned)
    assert shapes[w1] == (2, 3, 3, 3) and shapes[wd] == (4, 1, 3, 3) and shapes[bd] == (4,)
    assert shapes[w3] == (2, 4, 3, 3) and node_attr(pruned, "Conv", "group", 1) == 2


def test_gemm_unflattened_to_channels_makes_block_units():
    b = GraphBuilder()
    x = b.input("x", [1, 10])
    wg, bg = b.weight(10, 16), b.weight(16)
    f = b.op("Gemm", [x, wg, bg])
    r = b.op("Reshape", [f, b.const(np.array([1, 4, 2, 2], np.int64))])
    y, w2, _ = conv(b, b.op("Relu", [r]), 4, 3, k=1)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, f)
    assert group is only_group(dep, r) and group.kind == "neuron"
    assert group.units == 4 and group.channels_per_unit == 4 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [2]})
    assert node_input_values(pruned, "Reshape", 1).tolist() == [1, 3, 2, 2]
    shapes = weight_shapes(pruned)
    assert shapes[wg] == (10, 12) and shapes[bg] == (12,) and shapes[w2] == (3, 3, 1, 1)


@pytest.mark.parametrize("op_type", ["Concat", "Split"])
def test_concat_and_split_on_a_spatial_axis_couple_channels(op_type):
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    a, wa, _ = conv(b, x, 3, 8)
    if op_type == "Concat":
        c, wc, _ = conv(b, x, 3, 8)
        joined = b.op("Concat", [a, c], axis=2)
        y, w2, _ = conv(b, joined, 8, 4)
    else:
        top, bottom = b.op("Split", [a, b.const(np.array([3, 5], np.int64))], n_out=2, axis=2)
        y = b.op("Concat", [conv(b, top, 8, 4)[0], conv(b, bottom, 8, 4)[0]], axis=2)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, a)
    assert [g.units for g in prunable(dep)] == [8]
    if op_type == "Concat":
        assert group is only_group(dep, c)
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 4]})
    assert weight_shapes(pruned)[wa] == (6, 3, 3, 3)


def test_concat_of_one_tensor_twice():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    a, wa, _ = conv(b, x, 3, 6)
    cat = b.op("Concat", [a, a], axis=1)
    y, w2, _ = conv(b, cat, 12, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, a)
    assert group.units == 6 and group.prunable
    assert np.array_equal(group.members[Slot(w2, 1)], np.r_[np.arange(6), np.arange(6)])
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 5]})
    assert weight_shapes(pruned)[wa] == (4, 3, 3, 3) and weight_shapes(pruned)[w2] == (
        4, 8, 3, 3)


def test_concat_with_a_constant_part():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    a, _, _ = conv(b, x, 3, 6)
    extra = b.weight(1, 2, 8, 8)
    cat = b.op("Concat", [a, extra], axis=1)
    y, w2, _ = conv(b, cat, 8, 4)
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, a)
    assert group.units == 6 and group.prunable
    _, pruned = assert_mask_equivalent(model, {group.id: [0]})
    shapes = weight_shapes(pruned)
    assert shapes[extra] == (1, 2, 8, 8) and shapes[w2] == (4, 7, 3, 3)


def test_an_asymmetric_uint8_consumer_weight_is_masked_at_its_zero_point():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h = b.op("Relu", [b.conv(x, 3, 8)])
    q = b.const(b.rng.integers(0, 255, (4, 8, 3, 3)).astype(np.uint8))
    w = b.op("DequantizeLinear", [q, b.const(np.full(4, 0.01, np.float32)),
                                  b.const(np.full(4, 128, np.uint8))], axis=0)
    model = b.build(b.op("Conv", [h, w], pads=[1, 1, 1, 1]))
    removed = {only_group(analyze(model), h).id: np.array([2, 5])}
    dep, pruned, _ = prune_units(model, removed)
    feeds = sample_feeds(model, {"x": (1, 3, 8, 8)}, seed=1)
    check_pruned(pruned, reference_model(dep, removed, model), feeds)


def test_shared_weight_couples_both_uses():
    b = GraphBuilder()
    x1, x2 = b.input("x", [1, 3, 8, 8]), b.input("x2", [1, 3, 8, 8])
    w, bias = b.weight(8, 3, 3, 3), b.weight(8)
    h1 = b.op("Conv", [x1, w, bias], pads=[1, 1, 1, 1])
    h2 = b.op("Conv", [x2, w, bias], pads=[1, 1, 1, 1])
    y1, w_a, _ = conv(b, b.op("Relu", [h1]), 8, 4)
    y2, w_b, _ = conv(b, b.op("Relu", [h2]), 8, 4)
    model = b.build([y1, y2])
    dep = analyze(model)
    group = only_group(dep, h1)
    assert group is only_group(dep, h2) and group.units == 8
    assert [g.units for g in prunable(dep)] == [8]
    _, pruned = assert_mask_equivalent(model, {group.id: [3, 4, 5]})
    shapes = weight_shapes(pruned)
    assert shapes[w] == (5, 3, 3, 3) and shapes[w_a] == shapes[w_b] == (4, 5, 3, 3)


def test_symbolic_batch_through_flatten_reshape_and_squeeze():
    b = GraphBuilder(opset=13)
    x = b.input("x", ["N", 3, 4, 4])
    h, _, _ = conv(b, x, 3, 4)
    a = b.op("Relu", [h])
    flat = b.op("Flatten", [a])
    g1 = b.weight(64, 5)
    reshaped = b.op("Reshape", [a, b.const(np.array([0, -1], np.int64))])
    g2 = b.weight(64, 5)
    squeezed = b.op("Squeeze", [b.op("GlobalAveragePool", [a]),
                                b.const(np.array([2, 3], np.int64))])
    g3 = b.weight(4, 5)
    y = b.op("Sum", [b.op("MatMul", [flat, g1]), b.op("MatMul", [reshaped, g2]),
                     b.op("MatMul", [squeezed, g3])])
    model = b.build(y)
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.units == 4 and group.prunable, group.blocked
    _, pruned = assert_mask_equivalent(model, {group.id: [1]}, input_shapes={"x": (2, 3, 4, 4)})
    shapes = weight_shapes(pruned)
    assert shapes[g1] == shapes[g2] == (48, 5) and shapes[g3] == (3, 5)


def test_slice_opset9_attributes_are_rewritten():
    b = GraphBuilder(opset=9)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 10)
    s = b.op("Slice", [h], starts=[0, 1], ends=[100, 9], axes=[2, 1])
    y, w2, _ = conv(b, s, 8, 4)
    model = build_typed(b, y, output_shape=[1, 4, 8, 8])
    dep = analyze(model)
    inside = only_group(dep, s)
    assert inside.units == 8 and inside.prunable
    _, pruned = assert_mask_equivalent(model, {inside.id: [0, 7]})
    assert node_attr(pruned, "Slice", "starts") == [0, 1]
    assert node_attr(pruned, "Slice", "ends") == [100, 7]
    assert weight_shapes(pruned)[w2] == (4, 6, 3, 3)


def test_split_opset13_equal_parts_gets_explicit_sizes():
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    s0, s1 = b.op("Split", [h], n_out=2, axis=1)
    model = b.build(b.op("Add", [conv(b, s0, 4, 3)[0], conv(b, s1, 4, 3)[0]]))
    dep = analyze(model)
    g0 = only_group(dep, s0)
    assert g0.units == 4 and g0.prunable
    _, pruned = assert_mask_equivalent(model, {g0.id: [0, 1, 2]})
    assert node_input_values(pruned, "Split", 1).tolist() == [1, 4]


def test_upsample_opset7_attribute_scales():
    b = GraphBuilder(opset=7)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    u = b.op("Upsample", [h], scales=[1.0, 1.0, 2.0, 2.0], mode="nearest")
    y, w2, _ = conv(b, u, 8, 4)
    model = b.build(y)
    group = only_group(analyze(model), u)
    assert group.prunable and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 1, 2, 3]})
    assert weight_shapes(pruned)[w2] == (4, 4, 3, 3)


def test_mean_variance_normalization_per_channel_passes_and_over_channels_blocks():
    def build(axes):
        b = GraphBuilder(opset=9)  # later opsets' MVN function body fails onnx inference
        x = b.input("x", [1, 3, 8, 8])
        h, _, _ = conv(b, x, 3, 8)
        n = b.op("MeanVarianceNormalization", [h], **({"axes": axes} if axes else {}))
        y, w2, _ = conv(b, n, 8, 4)
        return b.build(y), h, w2

    model, h, w2 = build(None)  # default axes [0, 2, 3]: statistics per channel
    group = only_group(analyze(model), h)
    assert group.prunable and group.units == 8, group.blocked
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 3]})
    assert weight_shapes(pruned)[w2] == (4, 6, 3, 3)

    model, h, _ = build([1, 2, 3])
    group = only_group(analyze(model), h)
    assert any("MeanVarianceNormalization" in r and "channel-mixing" in r
               for r in group.blocked), group.blocked


def test_size_of_a_pruned_tensor_blocks():
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    count = b.op("Cast", [b.op("Size", [h])], to=TensorProto.FLOAT)
    y, _, _ = conv(b, b.op("Div", [h, count]), 8, 4)
    dep = analyze(b.build(y))
    group = only_group(dep, h)
    assert not group.prunable and prunable(dep) == []
    assert any("Size" in r for r in group.blocked), group.blocked


def test_shape_of_a_pruned_tensor_feeding_batch_plumbing_passes():
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 3, 8, 8])
    h, _, _ = conv(b, x, 3, 8)
    n = b.op("Gather", [b.op("Shape", [h]), b.const(np.array([0], np.int64))], axis=0)
    target = b.op("Concat", [n, b.const(np.array([8, 64], np.int64))], axis=0)
    r = b.op("Reshape", [h, target])
    y = b.op("MatMul", [b.op("ReduceMean", [r], axes=[2], keepdims=0), b.weight(8, 3)])
    model = build_typed(b, y, output_shape=[1, 3])
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.prunable and group.units == 8, group.blocked
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 2, 3]})
    assert node_input_values(pruned, "Concat", 1).tolist() == [5, 64]


def test_matmul_between_activations_couples_both_contracted_axes():
    """Attention scores: Q·Kᵀ contracts the projections' output axes, so Wq's and Wk's
    columns go together; A·V then carries V's columns to the output projection."""
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 5, 8])
    wq, wk, wv, wo = b.weight(8, 6), b.weight(8, 6), b.weight(8, 6), b.weight(6, 8)
    q, k, v = (b.op("MatMul", [x, w]) for w in (wq, wk, wv))
    scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])])
    attn = b.op("Softmax", [scores], axis=-1)
    model = b.build(b.op("MatMul", [b.op("MatMul", [attn, v]), wo]))
    dep = analyze(model)
    qk, vo = only_group(dep, q, 2), only_group(dep, v, 2)
    assert qk is only_group(dep, k, 2) and qk.units == 6 and qk.prunable
    assert qk.slots(Role.IN) == [] and {s.tensor for s in qk.slots(Role.OUT)} == {wq, wk}
    assert vo.units == 6 and vo.prunable and vo.roles[Slot(wo, 0)] == Role.IN
    _, pruned = assert_mask_equivalent(model, {vo.id: [0, 5]})
    assert weight_shapes(pruned)[wv] == (8, 4) and weight_shapes(pruned)[wo] == (4, 8)
    # Q·Kᵀ has no weight sink: compare with Wq's removed columns zeroed instead
    _, pruned, _ = prune_units(model, {qk.id: [1, 2, 4]})
    assert weight_shapes(pruned)[wq] == weight_shapes(pruned)[wk] == (8, 3)
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    for init in reference.graph.initializer:
        if init.name == wq:
            values = numpy_helper.to_array(init).copy()
            values[:, [1, 2, 4]] = 0
            init.CopyFrom(numpy_helper.from_array(values, wq))
    feeds = sample_feeds(model, sample_shapes(model), seed=1)
    got, want = run(pruned, feeds), run(reference, feeds)
    for name, ref in want.items():
        assert relative_error(ref, got[name]) <= 1e-5


def test_shape_entry_of_the_pruned_axis_used_as_a_value_blocks():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h = b.op("Relu", [b.conv(x, 3, 8)])
    channels = b.op("Gather", [b.op("Shape", [h]), b.const(np.array(1, np.int64))])
    scale = b.op("Cast", [channels], to=onnx.TensorProto.FLOAT)
    y = b.conv(b.op("Mul", [h, scale]), 8, 4)
    dep = analyze(b.build(y))
    group = next(g for g in dep.groups if g.units == 8)
    assert group.blocked and "used as a value" in group.blocked[0]


def test_float16_weights_behind_cast_keep_their_precision():
    b = GraphBuilder()
    x = b.input("x", [1, 8, 8, 8])
    w1 = b.const(b.rng.standard_normal((16, 8, 3, 3)).astype(np.float16))
    w2 = b.const(b.rng.standard_normal((8, 16, 3, 3)).astype(np.float16))
    up1, up2 = (b.op("Cast", [w], to=TensorProto.FLOAT) for w in (w1, w2))
    h = b.op("Relu", [b.op("Conv", [x, up1], pads=[1, 1, 1, 1])])
    model = b.build(b.op("Conv", [h, up2], pads=[1, 1, 1, 1]))
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.prunable and group.roles[Slot(w1, 0)] == Role.OUT
    assert group.roles[Slot(w2, 1)] == Role.IN
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 4]})
    inits = {t.name: t for t in pruned.graph.initializer}
    assert tuple(inits[w1].dims) == (14, 8, 3, 3) and tuple(inits[w2].dims) == (8, 14, 3, 3)
    assert inits[w1].data_type == TensorProto.FLOAT16


def test_quantized_qdq_convolutions_prune_with_their_scales():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])

    def qdq(t):
        s, z = b.const(np.array(0.05, np.float32)), b.const(np.array(0, np.int8))
        return b.op("DequantizeLinear", [b.op("QuantizeLinear", [t, s, z]), s, z])

    def weight(k, c):
        q = b.const(b.rng.integers(-100, 100, (k, c, 3, 3)).astype(np.int8))
        scale = b.const((b.rng.random(k) * 0.01 + 0.001).astype(np.float32))
        zero = b.const(np.zeros(k, np.int8))
        return q, scale, b.op("DequantizeLinear", [q, scale, zero], axis=0)

    q1, s1, w1 = weight(8, 3)
    q2, _, w2 = weight(4, 8)
    h = b.op("Relu", [b.op("Conv", [qdq(x), w1, b.weight(8)], pads=[1, 1, 1, 1])])
    model = b.build(b.op("Conv", [qdq(h), w2], pads=[1, 1, 1, 1]))
    dep = analyze(model)
    group = only_group(dep, h)
    assert group.prunable and group.units == 8
    _, pruned = assert_mask_equivalent(model, {group.id: [0, 5, 7]})
    inits = {t.name: t for t in pruned.graph.initializer}
    assert tuple(inits[q1].dims) == (5, 3, 3, 3) and tuple(inits[s1].dims) == (5,)
    assert tuple(inits[q2].dims) == (4, 5, 3, 3) and inits[q1].data_type == TensorProto.INT8
    assert sum(n.op_type == "DequantizeLinear" for n in pruned.graph.node) == 4
