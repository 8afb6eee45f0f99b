"""Small dense models, their pruned and sparsified students and data for the
fine-tuning tests."""

from __future__ import annotations

import os

import numpy as np
import onnx
from helpers import GraphBuilder

import onnxprune

# Many small programs are compiled: XLA without LLVM optimizations compiles them
# faster, to the same values (see train_graphs.py).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()


def mlp(seed: int = 0, widths: tuple[int, int] = (32, 32)) -> onnx.ModelProto:
    """x[n, 16] -> Gemm widths[0] -> Relu -> Gemm widths[1] -> Relu -> Gemm 8."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", ["n", 16])
    (w1, w2) = widths
    h = b.op("Relu", [b.op("Gemm", [x, b.weight(16, w1), b.weight(w1)])])
    h = b.op("Relu", [b.op("Gemm", [h, b.weight(w1, w2), b.weight(w2)])])
    return b.build(b.op("Gemm", [h, b.weight(w2, 8), b.weight(8)]))


def convnet(seed: int = 0) -> onnx.ModelProto:
    """x[n, 3, 8, 8] -> Conv 8 -> BN -> Relu -> Conv 8 -> Relu -> GAP -> Gemm 4."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", ["n", 3, 8, 8])
    h = b.op("Relu", [b.bn(b.conv(x, 3, 8), 8)])
    h = b.op("Relu", [b.conv(h, 8, 8)])
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    return b.build(b.op("Gemm", [h, b.weight(8, 4), b.weight(4)]))


def attention_block(b: GraphBuilder, x: str) -> str:
    """Multi-head attention (4 heads of 2) then a ReLU FFN of 6 neurons; [4, 5, 8]."""
    def heads(t: str, perm) -> str:
        return b.op("Transpose", [b.op("Reshape", [t, b.const(np.array([0, 0, 4, 2]))])],
                    perm=perm)
    q = heads(b.op("MatMul", [x, b.weight(8, 8)]), [0, 2, 1, 3])
    k = heads(b.op("MatMul", [x, b.weight(8, 8)]), [0, 2, 3, 1])
    v = heads(b.op("MatMul", [x, b.weight(8, 8)]), [0, 2, 1, 3])
    p = b.op("Softmax", [b.op("Mul", [b.op("MatMul", [q, k]), b.const(np.float32(0.7))])],
             axis=-1)
    o = b.op("Transpose", [b.op("MatMul", [p, v])], perm=[0, 2, 1, 3])
    o = b.op("Reshape", [o, b.const(np.array([0, 0, 8]))])
    a = b.op("MatMul", [o, b.weight(8, 8)])
    return b.op("MatMul", [b.op("Relu", [b.op("MatMul", [a, b.weight(8, 6)])]),
                           b.weight(6, 8)])


def transformer(blocks: int = 1):
    b = GraphBuilder(seed=5)
    y = b.input("x", ["N", 5, 8])
    for _ in range(blocks):
        y = attention_block(b, y)
    return b.build(y)


def inputs(model: onnx.ModelProto, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard normal samples for the model's one float input."""
    spec = model.graph.input[0]
    shape = [d.dim_value for d in spec.type.tensor_type.shape.dim[1:]]
    return {spec.name: np.random.default_rng(seed).standard_normal((count, *shape),
                                                                   dtype=np.float32)}


def pruned(model: onnx.ModelProto, ratio: float = 0.5) -> onnx.ModelProto:
    return onnxprune.prune(model, ratio, round_to=1)[0]


def sparsified(model: onnx.ModelProto, pattern: str = "2:4", **keywords) -> onnx.ModelProto:
    return onnxprune.sparsify(model, pattern, all_layers=True, **keywords)[0]
