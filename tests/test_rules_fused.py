"""onnxruntime's fused transformer ops on small graphs, against the head-mask oracle."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import GraphBuilder, analyze, assert_mask_equivalent, weight_shapes
from onnx import TensorProto, helper

MS = "com.microsoft"


def build_ms(b: GraphBuilder, output: str, shape) -> onnx.ModelProto:
    graph = helper.make_graph(b.nodes, "fused", b.inputs,
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)],
                              b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return model


def ms(b: GraphBuilder, op: str, inputs, n_out=1, **attrs):
    out = b.op(op, inputs, n_out, **attrs)
    b.nodes[-1].domain = MS
    return out


def head_group(dep):
    heads = [g for g in dep.groups if g.kind == "head"]
    assert len(heads) == 1 and heads[0].prunable, [(g.kind, g.blocked) for g in dep.groups]
    return heads[0]


def test_packed_attention_heads_and_num_heads():
    b = GraphBuilder()
    x = b.input("x", [2, 5, 8])
    w, bias = b.weight(8, 24), b.weight(24)
    ctx = ms(b, "Attention", [x, w, bias], num_heads=4)
    wo = b.weight(8, 6)
    model = build_ms(b, b.op("MatMul", [ctx, wo]), [2, 5, 6])
    group = head_group(analyze(model))
    assert group.units == 4 and group.channels_per_unit == 6  # q, k and v columns of one head
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 2]})
    assert weight_shapes(pruned)[w] == (8, 12) and weight_shapes(pruned)[bias] == (12,)
    assert weight_shapes(pruned)[wo] == (4, 6)
    node = next(n for n in pruned.graph.node if n.op_type == "Attention")
    assert helper.get_attribute_value(node.attribute[0]) == 2


def test_multi_head_attention_with_separate_projections():
    b = GraphBuilder()
    x = b.input("x", [1, 6, 8])
    wq, wk, wv = b.weight(8, 8), b.weight(8, 8), b.weight(8, 8)
    q, k, v = (b.op("MatMul", [x, w]) for w in (wq, wk, wv))
    ctx = ms(b, "MultiHeadAttention", [q, k, v], num_heads=2)
    wo = b.weight(8, 3)
    model = build_ms(b, b.op("MatMul", [ctx, wo]), [1, 6, 3])
    group = head_group(analyze(model))
    assert group.units == 2
    _, pruned = assert_mask_equivalent(model, {group.id: [0]})
    shapes = weight_shapes(pruned)
    assert shapes[wq] == shapes[wk] == shapes[wv] == (8, 4) and shapes[wo] == (4, 3)


def test_group_query_attention_keeps_query_heads_with_their_key_value_head():
    b = GraphBuilder()
    x = b.input("x", [1, 6, 8])
    wq, wk, wv = b.weight(8, 32), b.weight(8, 16), b.weight(8, 16)  # head size 8
    q, k, v = (b.op("MatMul", [x, w]) for w in (wq, wk, wv))
    seqlens = b.const(np.array([5], np.int32))
    total = b.const(np.array(6, np.int32))
    ctx = ms(b, "GroupQueryAttention", [q, k, v, "", "", seqlens, total], n_out=3,
             num_heads=4, kv_num_heads=2)[0]
    wo = b.weight(32, 3)
    model = build_ms(b, b.op("MatMul", [ctx, wo]), [1, 6, 3])
    group = head_group(analyze(model))
    assert group.units == 2 and group.channels_per_unit == 16  # two query heads of 8 per unit
    _, pruned = assert_mask_equivalent(model, {group.id: [1]})
    shapes = weight_shapes(pruned)
    assert shapes[wq] == (8, 16) and shapes[wk] == shapes[wv] == (8, 8)
    assert shapes[wo] == (16, 3)
    node = next(n for n in pruned.graph.node if n.op_type == "GroupQueryAttention")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"num_heads": 2, "kv_num_heads": 1}


def test_skip_layer_norm_and_bias_gelu_make_hidden_and_neuron_groups():
    b = GraphBuilder()
    x = b.input("x", [1, 4, 8])
    w1, b1, w2 = b.weight(8, 16), b.weight(16), b.weight(16, 8)
    h = ms(b, "BiasGelu", [b.op("MatMul", [x, w1]), b1])
    y = ms(b, "SkipLayerNormalization", [b.op("MatMul", [h, w2]), x, b.weight(8),
                                         b.weight(8), b.weight(8)])
    model = build_ms(b, b.op("MatMul", [y, b.weight(8, 2)]), [1, 4, 2])
    dep = analyze(model)
    neuron = next(g for g in dep.groups if g.kind == "neuron" and g.units == 16)
    _, pruned = assert_mask_equivalent(model, {neuron.id: [3, 7]})
    assert weight_shapes(pruned)[b1] == (14,)
    hidden = [g for g in dep.groups if g.kind == "hidden"]
    assert hidden and any("SkipLayerNormalization" in r for r in hidden[0].approximate)
