"""Small random graphs covering every op family the JAX translation handles, for the
parity (onnxruntime) and gradient (finite differences) tests of `onnxprune.train`."""

from __future__ import annotations

import os

import numpy as np
import onnx
from helpers import GraphBuilder
from onnx import TensorProto, helper

MS = "com.microsoft"

# The tests compile many small programs: XLA's CPU backend without LLVM optimizations
# compiles them about three times faster, to the same values.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()


def finish(b: GraphBuilder, outputs, contrib: bool = False) -> onnx.ModelProto:
    """The model (onnxruntime, not the ONNX checker, judges these graphs: some ops here
    have no ONNX shape inference, some are onnxruntime's own)."""
    outputs = [outputs] if isinstance(outputs, str) else outputs
    graph = helper.make_graph(b.nodes, "contrib", b.inputs, [
        helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], b.inits)
    opsets = [helper.make_opsetid("", b.opset)] + ([helper.make_opsetid(MS, 1)] if contrib
                                                   else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def ms(b: GraphBuilder, op: str, inputs, n_out: int = 1, **attrs):
    out = b.op(op, inputs, n_out, **attrs)
    b.nodes[-1].domain = MS
    return out


def ints(b: GraphBuilder, *values: int) -> str:
    return b.const(np.array(values, np.int64))


def conv(b: GraphBuilder) -> str:
    x = b.input("x", [2, 4, 9, 10])
    y = b.op("Conv", [x, b.weight(6, 4, 3, 3), b.weight(6)], strides=[2, 1],
             pads=[1, 0, 0, 2])
    y = b.op("Relu", [y])
    y = b.op("Conv", [y, b.weight(12, 1, 3, 3), b.weight(12)], group=6, dilations=[2, 1],
             pads=[2, 1, 2, 1])
    y = b.op("HardSwish", [b.bn(y, 12)])
    y = b.op("Conv", [y, b.weight(6, 6, 2, 3)], group=2, auto_pad="SAME_UPPER", strides=[2, 2])
    y = b.op("Conv", [y, b.weight(6, 1, 3, 3)], group=6, strides=[2, 1], pads=[1, 1, 1, 1])
    return b.op("LeakyRelu", [y], alpha=0.1)


def conv_other_ranks(b: GraphBuilder) -> list[str]:
    x = b.input("x", [2, 3, 11])
    y = b.op("Conv", [x, b.weight(4, 3, 3), b.weight(4)], dilations=[2], pads=[1, 2])
    y = b.op("Conv", [y, b.weight(4, 1, 5)], group=4, strides=[2], pads=[2, 2])
    v = b.input("v", [1, 2, 4, 5, 6])
    z = b.op("Conv", [v, b.weight(3, 2, 2, 3, 3)], pads=[1, 1, 1, 0, 1, 1])
    return [y, z]


def conv_transpose(b: GraphBuilder) -> list[str]:
    x = b.input("x", [2, 4, 5, 6])
    y = b.op("ConvTranspose", [x, b.weight(4, 3, 3, 3), b.weight(6)], group=2,
             strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0])
    z = b.op("ConvTranspose", [x, b.weight(4, 2, 2, 2)], strides=[2, 2])
    return [y, z]


def matmul(b: GraphBuilder) -> str:
    x = b.input("x", [2, 3, 5])
    y = b.op("MatMul", [x, b.weight(5, 4)])
    y = b.op("Einsum", [y, b.weight(2, 4, 6)], equation="bij,bjk->bik")
    y = b.op("Softmax", [b.op("Tanh", [y])], axis=1)
    flat = b.op("Flatten", [y], axis=1)
    y = b.op("Gemm", [flat, b.weight(4, 18), b.weight(4)], transB=1, alpha=0.5, beta=2.0)
    return b.op("LogSoftmax", [y])


def elementwise(b: GraphBuilder) -> str:
    x, z = b.input("x", [2, 3, 4]), b.input("z", [3, 1])
    pos = b.op("Add", [b.op("Abs", [x]), b.const(np.float32(1.0))])
    terms = [
        b.op("Sub", [b.op("Mul", [x, z]), b.op("Div", [x, pos])]),
        b.op("Pow", [x, b.const(np.float32(2.0))]), b.op("Sqrt", [pos]),
        b.op("Log", [pos]), b.op("Exp", [b.op("Neg", [b.op("Abs", [z])])]),
        b.op("Reciprocal", [pos]), b.op("Max", [x, z, b.weight(4)]),
        b.op("Mean", [x, z]), b.op("Min", [x, z]),
        b.op("Clip", [x, b.const(np.float32(-0.5)), b.const(np.float32(0.7))]),
        b.op("Where", [b.op("Greater", [x, z]), x, b.op("Erf", [x])]),
        b.op("Sigmoid", [x]), b.op("HardSigmoid", [x], alpha=0.3), b.op("Softplus", [x]),
        b.op("Elu", [x], alpha=0.7), b.op("Selu", [x]), b.op("Celu", [x], alpha=1.3),
        b.op("Mish", [x]), b.op("Softsign", [x]), b.op("PRelu", [x, b.weight(4)]),
        b.op("Sin", [x]), b.op("Cos", [x]), b.op("Atan", [x]),
    ]
    return b.op("Sum", terms)


def norm(b: GraphBuilder) -> list[str]:
    x = b.input("x", [2, 6, 4, 5])
    ln = b.op("LayerNormalization", [x, b.weight(4, 5), b.weight(4, 5)], axis=2, epsilon=1e-3)
    inst = b.op("InstanceNormalization", [x, b.weight(6), b.weight(6)])
    group = b.op("GroupNormalization", [x, b.weight(3), b.weight(3)], num_groups=3)
    lp = b.op("LpNormalization", [x], axis=1, p=2)
    return [ln, inst, group, b.op("Add", [b.bn(x, 6), lp])]


def pool(b: GraphBuilder) -> list[str]:
    x = b.input("x", [2, 3, 9, 8])
    return [
        b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1],
             ceil_mode=1),
        b.op("MaxPool", [x], kernel_shape=[2, 2], dilations=[2, 1]),
        b.op("AveragePool", [x], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1],
             count_include_pad=1, ceil_mode=1),
        b.op("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 3], pads=[1, 1, 1, 1]),
        b.op("GlobalAveragePool", [x]), b.op("GlobalMaxPool", [x]),
        b.op("LpPool", [x], kernel_shape=[2, 2], p=2),
    ]


def shape(b: GraphBuilder) -> str:
    """A Reshape target, an Expand shape and a Range computed from the input's shape."""
    x = b.input("x", [2, 3, 4, 5])
    dims = b.op("Shape", [x])
    batch = b.op("Gather", [dims, ints(b, 0)])
    rest = b.op("ReduceProd", [b.op("Slice", [dims, ints(b, 1), ints(b, 4)])], keepdims=1)
    flat = b.op("Reshape", [x, b.op("Concat", [batch, rest], axis=0)])
    count = b.op("Cast", [b.op("Gather", [dims, b.const(np.int64(3))])], to=TensorProto.FLOAT)
    steps = b.op("Range", [b.const(np.float32(0)), count, b.const(np.float32(1))])
    y = b.op("Mul", [b.op("Reshape", [flat, b.op("Shape", [x])]), steps])
    fill = b.op("ConstantOfShape", [b.op("Shape", [y])],
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]))
    y = b.op("Add", [y, fill])
    y = b.op("Transpose", [y], perm=[0, 2, 1, 3])
    y = b.op("Unsqueeze", [b.op("Squeeze", [b.op("Unsqueeze", [y, ints(b, 0)]), ints(b, 0)]),
                           ints(b, 2)])
    y = b.op("Expand", [y, ints(b, 2, 4, 2, 3, 5)])
    y = b.op("Tile", [y, ints(b, 1, 1, 1, 2, 1)])
    y = b.op("Reshape", [y, ints(b, 0, -1, 6, 10)])
    return b.op("DepthToSpace", [b.op("SpaceToDepth", [y], blocksize=2)], blocksize=2, mode="CRD")


def reduce(b: GraphBuilder) -> list[str]:
    x = b.input("x", [2, 3, 4, 5])
    pick = b.op("ArgMax", [x], axis=3, keepdims=1)
    return [
        b.op("ReduceMean", [x], axes=[1, -1], keepdims=1),
        b.op("ReduceSum", [x, ints(b, 2)], keepdims=0),
        b.op("ReduceMax", [x], axes=[2], keepdims=0), b.op("ReduceL2", [x], axes=[1]),
        b.op("ReduceLogSumExp", [x], axes=[3]), b.op("ReduceSumSquare", [x], axes=[0, 2]),
        b.op("ReduceMin", [x], keepdims=0), b.op("ReduceL1", [x], axes=[1]),
        b.op("GatherElements", [x, pick], axis=3),
        b.op("CumSum", [x, ints(b, 2)], exclusive=1, reverse=1),
    ]


def select(b: GraphBuilder) -> list[str]:
    x = b.input("x", [2, 6, 5])
    a, c, d = b.op("Split", [x, ints(b, 1, 2, 3)], n_out=3, axis=1)
    y = b.op("Concat", [d, a, c, b.weight(2, 1, 5)], axis=1)
    s = b.op("Slice", [y, ints(b, -1, 4), ints(b, -100, 0), ints(b, 1, 2), ints(b, -2, -1)])
    g = b.op("Gather", [x, b.const(np.array([[-1, 0], [2, 2]], np.int64))], axis=1)
    nd = b.op("GatherND", [x, b.const(np.array([[[1, -2]], [[0, 3]]], np.int64))])
    sc = b.op("ScatterND", [x, b.const(np.array([[1, 4], [0, 0]], np.int64)), b.weight(2, 5)])
    se = b.op("ScatterElements", [x, b.const(np.array([[[4, 0, 1, 2, 3]]], np.int64)),
                                  b.weight(1, 1, 5)], axis=1)
    padded = [b.op("Pad", [x, ints(b, 0, 2, 1, 0, 1, 2), b.const(np.float32(0.3))]),
              b.op("Pad", [x, ints(b, 0, 2, 1, 0, 1, -2)], mode="reflect"),
              b.op("Pad", [x, ints(b, 1, 0, 2, 0, 1, 0)], mode="edge")]
    values, _ = b.op("TopK", [x, ints(b, 3)], n_out=2, axis=1, largest=0)
    return [s, g, nd, sc, se, values, *padded]


def resize(b: GraphBuilder) -> list[str]:
    x = b.input("x", [1, 2, 5, 6])
    empty = b.const(np.array([], np.float32))
    return [
        b.op("Resize", [x, "", b.const(np.array([1, 1, 2, 1.5], np.float32))],
             mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        b.op("Resize", [x, empty, empty, ints(b, 1, 2, 9, 4)], mode="linear"),
        b.op("Resize", [x, "", b.const(np.array([1, 1, 0.6, 2], np.float32))], mode="linear",
             coordinate_transformation_mode="align_corners"),
        b.op("Resize", [x, "", "", ints(b, 1, 2, 7, 8)], mode="nearest",
             coordinate_transformation_mode="pytorch_half_pixel"),
    ]


def attention(b: GraphBuilder) -> list[str]:
    """onnxruntime's fused ops: Attention (raw and key-length masks), MultiHeadAttention,
    SkipLayerNormalization, BiasGelu, FastGelu, Gelu, QuickGelu, FusedMatMul."""
    x = b.input("x", [2, 5, 8])
    mask = b.input("mask", [2, 5], TensorProto.INT32)
    lengths = b.input("lengths", [2], TensorProto.INT32)
    att = ms(b, "Attention", [x, b.weight(8, 24), b.weight(24), mask], num_heads=2)
    uni = ms(b, "Attention", [x, b.weight(8, 24), b.weight(24), lengths], num_heads=4,
             unidirectional=1)
    q, k, v = (b.op("MatMul", [x, b.weight(8, 8)]) for _ in range(3))
    mha = ms(b, "MultiHeadAttention", [q, k, v, b.weight(24), mask], num_heads=2)
    skip = ms(b, "SkipLayerNormalization", [att, x, b.weight(8), b.weight(8), b.weight(8)],
              epsilon=1e-5)
    h = ms(b, "BiasGelu", [ms(b, "FusedMatMul", [skip, b.weight(16, 8)], transB=1, alpha=0.5),
                           b.weight(16)])
    h = ms(b, "QuickGelu", [ms(b, "FastGelu", [h, b.weight(16)])])
    h = ms(b, "Gelu", [h])
    return [h, uni, mha]


def embed(b: GraphBuilder) -> list[str]:
    ids = b.input("ids", [2, 6], TensorProto.INT32)
    segments = b.input("segments", [2, 6], TensorProto.INT32)
    mask = b.input("mask", [2, 6], TensorProto.INT32)
    out, index = ms(b, "EmbedLayerNormalization", [
        ids, segments, b.weight(10, 8), b.weight(7, 8), b.weight(2, 8), b.weight(8),
        b.weight(8), mask], n_out=2, epsilon=1e-5)
    att = ms(b, "Attention", [out, b.weight(8, 24), b.weight(24), index], num_heads=2)
    return [ms(b, "SkipSimplifiedLayerNormalization", [att, out, b.weight(8)], epsilon=1e-6)]


def recurrent(b: GraphBuilder) -> list[str]:
    x = b.input("x", [4, 2, 3])
    h0, c0 = b.input("h0", [2, 2, 5]), b.input("c0", [2, 2, 5])
    y, yh, yc = b.op("LSTM", [x, b.weight(2, 20, 3), b.weight(2, 20, 5), b.weight(2, 40), "",
                              h0, c0, b.weight(2, 15)], n_out=3, hidden_size=5,
                     direction="bidirectional")
    g, gh = b.op("GRU", [x, b.weight(1, 15, 3), b.weight(1, 15, 5), b.weight(1, 30)], n_out=2,
                 hidden_size=5, linear_before_reset=1)
    r = b.op("RNN", [x, b.weight(1, 4, 3), b.weight(1, 4, 4)], hidden_size=4,
             direction="reverse")
    return [y, yh, yc, g, gh, r]


def qdq(b: GraphBuilder) -> str:
    """A QDQ convolution: int8 per-channel weight, uint8 activations."""
    x = b.input("x", [2, 3, 6, 6])
    scale_x, zero_x = b.const(np.float32(0.02)), b.const(np.uint8(128))
    xq = b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, scale_x, zero_x]), scale_x,
                                   zero_x])
    w = b.const(b.rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8))
    scale_w = b.const(np.abs(b.rng.standard_normal(4)).astype(np.float32) * 0.01 + 0.005)
    wq = b.op("DequantizeLinear", [w, scale_w, b.const(np.zeros(4, np.int8))], axis=0)
    return b.op("Conv", [xq, wq, b.weight(4)], pads=[1, 1, 1, 1])


CASES = {  # name: (builder, opset, contrib)
    "conv": (conv, 17, False), "conv_other_ranks": (conv_other_ranks, 17, False),
    "conv_transpose": (conv_transpose, 17, False), "matmul": (matmul, 17, False),
    "elementwise": (elementwise, 18, False), "norm": (norm, 18, False),
    "pool": (pool, 19, False), "shape": (shape, 17, False), "reduce": (reduce, 17, False),
    "select": (select, 18, False), "resize": (resize, 19, False),
    "attention": (attention, 17, True), "embed": (embed, 17, True),
    "recurrent": (recurrent, 17, False), "qdq": (qdq, 19, False),
}


def case(name: str, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A case's model and feeds (floats normal, masks 0/1 with a 1 first, ids small)."""
    builder, opset, contrib = CASES[name]
    b = GraphBuilder(opset=opset, seed=seed)
    model = finish(b, builder(b), contrib)
    rng = np.random.default_rng(seed + 1)
    feeds = {}
    for value in b.inputs:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
        elif value.name == "lengths":
            feeds[value.name] = np.array([3, 5], np.int32)
        else:
            high = 2 if value.name in ("mask", "segments") else 7
            feeds[value.name] = rng.integers(0, high, dims).astype(np.int32)
            feeds[value.name][..., 0] = 1
    return model, feeds
