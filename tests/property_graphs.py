"""A random-graph builder for the property tests: a GraphBuilder whose structure is drawn
by hypothesis, and which records what the channel analysis must conclude about it.

Blocks live in `property_cnn.py`, `property_mixing.py`, `property_spatial.py` (NCHW
tensors) and `property_seq.py` ([N, S, D] tensors); each maps the running activation
`net.x` with `net.c` channels (and `net.hw` or `net.seq`) to a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from helpers import GraphBuilder
from hypothesis import strategies as st
from onnx import TensorProto, helper

MAX_C = 16
ACTIVATIONS = ["Relu", "Sigmoid", "HardSwish", "LeakyRelu", "Clip", "Identity", "Tanh"]
# How a weight is stored: float32, float16 behind a Cast, float32 through
# QuantizeLinear -> DequantizeLinear, int8 (zero point 0) or uint8 (zero point 128)
# with a per-channel DequantizeLinear.
STORAGE = ["float", "float", "float", "fp16", "qdq", "int8", "uint8"]


@dataclass(frozen=True)
class Expect:
    """What the analysis must say about every group that holds (tensor, axis):
    `blocked`, `inexact` (blocked or approximate: the op mixes the axis), or `exact`
    (prunable, not approximate, of `units` units and kind `kind`)."""

    tensor: str
    axis: int
    status: str
    units: int | None = None
    kind: str | None = None


class Net:
    """A GraphBuilder plus the running activation, its channels and spatial size."""

    def __init__(self, data: st.DataObject, opset: int):
        self.data = data
        self.opset = opset
        self.b = GraphBuilder(opset=opset, seed=data.draw(st.integers(0, 1000), "seed"))
        self.x, self.c, self.hw, self.seq, self.mask = "", 0, 0, 0, ""
        self.outputs: list[tuple[str, list[int]]] = []
        self.expects: list[Expect] = []
        self.used: list[str] = []

    # -- drawing

    def draw(self, strategy, label: str):
        return self.data.draw(strategy, label)

    def flag(self, label: str) -> bool:
        return self.draw(st.booleans(), label)

    def pick(self, options, label: str):
        return self.draw(st.sampled_from(list(options)), label)

    def channels(self, label: str, low: int = 2, high: int = MAX_C) -> int:
        return self.draw(st.integers(low, high), label)

    def two_channels(self, label: str) -> tuple[int, int]:
        """Channel counts of two parts whose sum stays within MAX_C."""
        first = self.channels(label + " a", 1, MAX_C - 1)
        return first, self.channels(label + " b", 1, MAX_C - first)

    # -- expectations

    def expect(self, tensor: str, axis: int, status: str, units: int | None = None,
               kind: str | None = None) -> None:
        self.expects.append(Expect(tensor, axis, status, units, kind))

    # -- constants and weights

    def values(self, *shape: int, fan_in: int | None = None) -> np.ndarray:
        """Random float32 values scaled so that activations stay near unit size."""
        fan_in = fan_in or (int(np.prod(shape[1:])) if len(shape) > 1 else 1)
        scale = 1.0 / np.sqrt(max(fan_in, 1))
        return (self.b.rng.standard_normal(shape) * scale).astype(np.float32)

    def const(self, values) -> str:
        return self.b.const(values)

    def ints(self, *values: int) -> str:
        return self.b.const(np.array(values, np.int64))

    def weight(self, *shape: int, fan_in: int | None = None, out_axis: int = 0) -> str:
        """A weight in a drawn storage; `out_axis` carries the per-channel int8 scales."""
        values = self.values(*shape, fan_in=fan_in)
        storage = self.pick(STORAGE, "storage")
        if storage == "fp16":
            return self.b.op("Cast", [self.const(values.astype(np.float16))],
                             to=TensorProto.FLOAT)
        if storage == "qdq":
            scale = self.const(np.float32(np.abs(values).max() / 100 + 1e-3))
            zero = self.const(np.int8(0))
            q = self.b.op("QuantizeLinear", [self.const(values), scale, zero])
            return self.b.op("DequantizeLinear", [q, scale, zero])
        if storage in ("int8", "uint8"):
            others = tuple(a for a in range(values.ndim) if a != out_axis)
            step = np.abs(values).max(axis=others) / 127 + 1e-6
            shape_of_step = [1] * values.ndim
            shape_of_step[out_axis] = -1
            dtype, zero = (np.int8, 0) if storage == "int8" else (np.uint8, 128)
            q = (np.round(values / step.reshape(shape_of_step)) + zero).astype(dtype)
            return self.b.op("DequantizeLinear", [
                self.const(q), self.const(step.astype(np.float32)),
                self.const(np.full(step.shape, zero, dtype))], axis=out_axis)
        return self.const(values)

    def bias(self, c: int) -> str:
        return self.const(self.values(c, fan_in=4))

    # -- ops whose form depends on the opset

    def reduce(self, op: str, x: str, axes, keepdims: int = 1) -> str:
        if self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13):
            return self.b.op(op, [x, self.ints(*axes)], keepdims=keepdims)
        return self.b.op(op, [x], axes=list(axes), keepdims=keepdims)

    def squeeze(self, op: str, x: str, axes) -> str:
        """Squeeze or Unsqueeze (axes as an input from opset 13)."""
        return self.b.op(op, [x, self.ints(*axes)])

    def shape_entry(self, shape: str, index: int) -> str:
        """One entry of a Shape output as a 1-D tensor: Gather of a scalar + Unsqueeze."""
        scalar = self.b.op("Gather", [shape, self.b.const(np.array(index, np.int64))], axis=0)
        return self.squeeze("Unsqueeze", scalar, [0])

    def target(self, x: str, entries) -> str:
        """A Reshape/Expand target built at run time: each entry is an int (a constant
        piece) or ("shape", k) for entry k of x's shape (Shape -> Gather -> Unsqueeze);
        the pieces are joined by a Concat."""
        shape = self.b.op("Shape", [x])
        pieces = [self.shape_entry(shape, e[1]) if isinstance(e, tuple) else self.ints(e)
                  for e in entries]
        return self.b.op("Concat", pieces, axis=0)

    # -- layers

    def act(self, x: str) -> str:
        choices = [a for a in ACTIVATIONS if self.opset >= 14 or a != "HardSwish"]
        op = self.pick(choices, "activation")
        if op == "Clip":
            return self.b.op("Clip", [x, self.const(np.float32(-1)), self.const(np.float32(1))])
        if op == "LeakyRelu":
            return self.b.op(op, [x], alpha=0.1)
        return self.b.op(op, [x])

    def conv_raw(self, x: str, c_in: int, c_out: int, k: int = 1, group: int = 1,
                 stride: int = 1, dilation: int = 1, bias: bool = True) -> str:
        """Conv with 'same' padding: spatial size (hw - 1) // stride + 1."""
        w = self.weight(c_out, c_in // group, k, k)
        inputs = [x, w] + ([self.bias(c_out)] if bias else [])
        auto = dilation == 1 and self.flag("auto pad")  # onnxruntime: not with dilations
        same = {"auto_pad": "SAME_UPPER"} if auto else {
            "pads": [dilation * (k // 2)] * 4}
        return self.b.op("Conv", inputs, group=group, strides=[stride] * 2,
                         dilations=[dilation] * 2, **same)

    def conv(self, x: str, c_in: int, c_out: int, group: int = 1, k: int | None = None,
             stride: int = 1) -> str:
        """Conv (drawn kernel, dilation, bias, BatchNorm) and an activation."""
        k = self.pick([1, 3], "kernel") if k is None else k
        dilation = self.pick([1, 1, 2], "dilation") if k == 3 and stride == 1 else 1
        y = self.conv_raw(x, c_in, c_out, k, group, stride, dilation, self.flag("bias"))
        if self.flag("batchnorm"):
            y = self.b.op("BatchNormalization", [
                y, self.const(self.values(c_out, fan_in=1) + 1), self.bias(c_out),
                self.bias(c_out), self.const(np.abs(self.values(c_out, fan_in=1)) + 0.5)])
        return self.act(y)

    def matmul(self, x: str, d_in: int, d_out: int, bias: bool | None = None) -> str:
        """x[..., d_in] @ W[d_in, d_out] (+ b)."""
        y = self.b.op("MatMul", [x, self.weight(d_in, d_out, fan_in=d_in, out_axis=1)])
        if self.flag("matmul bias") if bias is None else bias:
            y = self.b.op("Add", [y, self.bias(d_out)])
        return y

    def output(self, name: str, shape: list[int]) -> None:
        """Make a tensor a graph output (its shape given: run-time targets hide it)."""
        self.outputs.append((name, shape))

    def finish(self) -> onnx.ModelProto:
        """The checked model with every output gathered so far."""
        outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
                   for name, shape in self.outputs]
        graph = helper.make_graph(self.b.nodes, "random", self.b.inputs, outputs, self.b.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 10 if self.opset >= 21 else 8
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model, full_check=True)
        return model
