"""Every op rule on a small graph: the groups it forms (unit counts, blocked reasons), the
rewrite it performs (weight shapes, attributes, shape constants) and mask equivalence."""

from __future__ import annotations

import numpy as np
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
    weight_shapes,
)
from onnx import TensorProto, helper, numpy_helper

from onnxprune.depgraph import Role, Slot


def reasons(dep) -> list[str]:
    return [r for g in dep.groups for r in g.blocked]


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


@pytest.mark.parametrize("op_type, opset, make_inputs, attrs", [
    ("LayerNormalization", 17, lambda b: [b.weight(8, 8, 8), b.weight(8, 8, 8)], {"axis": 1}),
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
