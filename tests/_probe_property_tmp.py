"""Random CNN-like graphs: any choice of units from any prunable groups must leave the
pruned model equal to the original with those channels masked at their consumers."""

from __future__ import annotations

import numpy as np
from helpers import GraphBuilder, analyze, assert_mask_equivalent, prunable, weight_shapes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_C = 16
ACTIVATIONS = ["Relu", "Sigmoid", "HardSwish", "LeakyRelu", "Clip", "Identity", "Tanh"]
BLOCKS = ["conv", "residual", "concat", "split", "depthwise", "grouped", "se", "pool",
          "nhwc_mlp", "inception", "slice"]
HEADS = ["conv", "gap_gemm", "flatten_gemm", "reshape_gemm"]


class Net:
    """A GraphBuilder plus the running activation and its channel count."""

    def __init__(self, data: st.DataObject, opset: int):
        self.data = data
        self.opset = opset
        self.b = GraphBuilder(opset=opset, seed=data.draw(st.integers(0, 1000), "seed"))
        self.x = self.b.input("x", [1, 3, 8, 8])
        self.c = 3

    def draw(self, strategy, label: str):
        return self.data.draw(strategy, label)

    def channels(self, label: str, low: int = 2, high: int = MAX_C) -> int:
        return self.draw(st.integers(low, high), label)

    def two_channels(self, label: str) -> tuple[int, int]:
        """Channel counts of two parts whose sum stays within MAX_C."""
        first = self.channels(label + " a", 1, MAX_C - 1)
        return first, self.channels(label + " b", 1, MAX_C - first)

    def act(self, x: str) -> str:
        choices = [a for a in ACTIVATIONS if self.opset >= 14 or a != "HardSwish"]
        op = self.draw(st.sampled_from(choices), "activation")
        if op == "Clip":
            return self.b.op("Clip", [x, self.b.const(np.float32(-1)),
                                      self.b.const(np.float32(1))])
        if op == "LeakyRelu":
            return self.b.op(op, [x], alpha=0.1)
        return self.b.op(op, [x])

    def conv(self, x: str, c_in: int, c_out: int, group: int = 1, k: int | None = None) -> str:
        k = self.draw(st.sampled_from([1, 3]), "kernel") if k is None else k
        y = self.b.conv(x, c_in, c_out, k=k, group=group,
                        bias=self.draw(st.booleans(), "bias"))
        if self.draw(st.booleans(), "batchnorm"):
            y = self.b.bn(y, c_out)
        return self.act(y)

    # -- blocks: each maps (self.x, self.c) to a new activation and channel count

    def block_conv(self) -> None:
        c = self.channels("conv out")
        self.x, self.c = self.conv(self.x, self.c, c), c

    def block_residual(self) -> None:
        mid = self.channels("residual mid")
        branch = self.conv(self.conv(self.x, self.c, mid), mid, self.c)
        self.x = self.b.op("Add", [self.x, branch])

    def block_concat(self) -> None:
        c1, c2 = self.two_channels("concat")
        parts = [self.conv(self.x, self.c, c1), self.conv(self.x, self.c, c2)]
        if self.draw(st.booleans(), "concat input too") and self.c + c1 + c2 <= MAX_C:
            parts.append(self.x)
            c2 += self.c
        self.x, self.c = self.b.op("Concat", parts, axis=1), c1 + c2

    def block_split(self) -> None:
        if self.c < 2:
            return self.block_conv()
        first = self.draw(st.integers(1, self.c - 1), "split at")
        sizes = self.b.const(np.array([first, self.c - first], np.int64))
        a, b = self.b.op("Split", [self.x, sizes], n_out=2, axis=1)
        if self.draw(st.booleans(), "split joined by concat"):
            c1, c2 = self.two_channels("split")
            self.x = self.b.op("Concat", [self.conv(a, first, c1),
                                          self.conv(b, self.c - first, c2)], axis=1)
            self.c = c1 + c2
        else:
            c = self.channels("split out")
            self.x = self.b.op("Add", [self.conv(a, first, c), self.conv(b, self.c - first, c)])
            self.c = c

    def block_depthwise(self) -> None:
        self.x = self.conv(self.x, self.c, self.c, group=self.c, k=3)

    def block_grouped(self) -> None:
        divisors = [g for g in range(2, self.c + 1) if self.c % g == 0]
        if not divisors:
            return self.block_conv()
        group = self.draw(st.sampled_from(divisors), "groups")
        per_group = self.draw(st.integers(1, MAX_C // group), "out per group")
        c = group * per_group
        self.x, self.c = self.conv(self.x, self.c, c, group=group), c

    def block_se(self) -> None:
        squeeze = self.channels("se squeeze", 1)
        pooled = self.b.op("GlobalAveragePool", [self.x])
        s = self.b.op("Relu", [self.b.conv(pooled, self.c, squeeze, k=1)])
        gate = self.b.op("Sigmoid", [self.b.conv(s, squeeze, self.c, k=1)])
        self.x = self.b.op("Mul", [self.x, gate])

    def block_pool(self) -> None:
        op = self.draw(st.sampled_from(["MaxPool", "AveragePool"]), "pool")
        self.x = self.b.op(op, [self.x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    def block_nhwc_mlp(self) -> None:
        """Channels-last MLP with a residual (ConvNeXt-like, without the LayerNorm)."""
        hidden = self.channels("mlp hidden")
        t = self.b.op("Transpose", [self.x], perm=[0, 2, 3, 1])
        h = self.act(self.b.op("Add", [self.b.op("MatMul", [t, self.b.weight(self.c, hidden)]),
                                       self.b.weight(hidden)]))
        back = self.b.op("MatMul", [h, self.b.weight(hidden, self.c)])
        self.x = self.b.op("Add", [self.x, self.b.op("Transpose", [back], perm=[0, 3, 1, 2])])

    def block_inception(self) -> None:
        """A pooled copy of the input concatenated with a conv branch."""
        if self.c >= MAX_C:
            return self.block_conv()
        c = self.channels("inception conv", 1, MAX_C - self.c)
        pooled = self.b.op("MaxPool", [self.x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        self.x = self.b.op("Concat", [self.conv(self.x, self.c, c), pooled], axis=1)
        self.c += c

    def block_slice(self) -> None:
        if self.c < 3:
            return self.block_conv()
        start = self.draw(st.integers(0, self.c - 2), "slice start")
        stop = self.draw(st.integers(start + 2, self.c), "slice stop")
        self.x = self.b.op("Slice", [self.x, self.b.const(np.array([start], np.int64)),
                                     self.b.const(np.array([stop], np.int64)),
                                     self.b.const(np.array([1], np.int64))])
        self.c = stop - start

    def head(self) -> str:
        kind = self.draw(st.sampled_from(HEADS), "head")
        if kind == "conv":
            return self.b.conv(self.x, self.c, 2, k=1)
        if kind == "gap_gemm":
            flat = self.b.op("Flatten", [self.b.op("GlobalAveragePool", [self.x])])
            return self.b.op("Gemm", [flat, self.b.weight(3, self.c), self.b.weight(3)],
                             transB=1)
        pooled = self.b.op("MaxPool", [self.x], kernel_shape=[4, 4], strides=[4, 4])  # 2x2
        if kind == "flatten_gemm":
            flat = self.b.op("Flatten", [pooled])
        else:
            flat = self.b.op("Reshape", [pooled, self.b.const(np.array([1, -1], np.int64))])
        return self.b.op("Gemm", [flat, self.b.weight(self.c * 4, 3)])


@settings(max_examples=1500, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_cnn_prunes_mask_equivalently(data):
    net = Net(data, opset=data.draw(st.sampled_from([13, 17]), "opset"))
    net.block_conv()
    for _ in range(data.draw(st.integers(2, 6), "depth")):
        getattr(net, "block_" + data.draw(st.sampled_from(BLOCKS), "block"))()
    model = net.b.build(net.head())

    dep = analyze(model)
    candidates = [g for g in prunable(dep) if g.units > 1]
    if not candidates:
        return
    chosen = data.draw(st.lists(st.sampled_from(candidates), min_size=1, unique_by=id),
                       "groups")
    removed = {}
    for group in chosen:
        count = data.draw(st.integers(1, group.units - 1), "count")
        units = data.draw(st.lists(st.integers(0, group.units - 1), min_size=count,
                                   max_size=count, unique=True), "units")
        removed[group.id] = np.sort(units)

    _, pruned = assert_mask_equivalent(model, removed, tol=1e-4)
    before, after = weight_shapes(model), weight_shapes(pruned)
    assert sum(np.prod(s) for s in after.values()) < sum(np.prod(s) for s in before.values())
