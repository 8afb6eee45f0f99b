"""Convolutional blocks for the random graphs: each maps (net.x, net.c, net.hw) of an
NCHW activation to new ones, and records what the analysis must say where it knows."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from property_graphs import MAX_C, Net


def block_conv(net: Net) -> None:
    """A conv, strided when the map is large enough."""
    c = net.channels("conv out")
    stride = net.pick([1, 2], "stride") if net.hw >= 4 else 1
    net.x, net.c, net.hw = net.conv(net.x, net.c, c, stride=stride), c, (net.hw - 1) // stride + 1


def block_residual(net: Net) -> None:
    mid = net.channels("residual mid")
    inner = net.conv_raw(net.x, net.c, mid, k=net.pick([1, 3], "kernel"))
    net.expect(inner, 1, "exact", units=mid, kind="channel")
    branch = net.conv(net.act(inner), mid, net.c)
    net.x = net.b.op("Add", [net.x, branch])


def block_concat(net: Net) -> None:
    c1, c2 = net.two_channels("concat")
    parts = [net.conv(net.x, net.c, c1), net.conv(net.x, net.c, c2)]
    if net.flag("concat input too") and net.c + c1 + c2 <= MAX_C:
        parts.append(net.x)
        c2 += net.c
    net.x, net.c = net.b.op("Concat", parts, axis=1), c1 + c2


def block_split(net: Net) -> None:
    if net.c < 2:
        return block_conv(net)
    if net.opset >= 18 and net.c % 2 == 0 and net.flag("split in halves"):
        first = net.c // 2
        a, b = net.b.op("Split", [net.x], n_out=2, axis=1, num_outputs=2)
    else:
        first = net.draw(st.integers(1, net.c - 1), "split at")
        a, b = net.b.op("Split", [net.x, net.ints(first, net.c - first)], n_out=2, axis=1)
    if net.flag("split joined by concat"):
        c1, c2 = net.two_channels("split")
        net.x = net.b.op("Concat", [net.conv(a, first, c1), net.conv(b, net.c - first, c2)],
                         axis=1)
        net.c = c1 + c2
    else:
        c = net.channels("split out")
        net.x = net.b.op("Add", [net.conv(a, first, c), net.conv(b, net.c - first, c)])
        net.c = c


def block_depthwise(net: Net) -> None:
    """Depthwise conv, maybe strided, maybe with a channel multiplier of 2."""
    stride = net.pick([1, 2], "stride") if net.hw >= 4 else 1
    c = net.c * (2 if net.c * 2 <= MAX_C and net.flag("multiplier") else 1)
    net.x = net.conv(net.x, net.c, c, group=net.c, k=3, stride=stride)
    net.c, net.hw = c, (net.hw - 1) // stride + 1


def block_grouped(net: Net) -> None:
    divisors = [g for g in range(2, net.c + 1) if net.c % g == 0]
    if not divisors:
        return block_conv(net)
    group = net.pick(divisors, "groups")
    per_group = net.draw(st.integers(1, MAX_C // group), "out per group")
    c = group * per_group
    net.x, net.c = net.conv(net.x, net.c, c, group=group), c


def block_se(net: Net) -> None:
    """Squeeze-excitation; the pooled vector may go through Squeeze/Unsqueeze and
    MatMuls instead of 1x1 convs."""
    squeeze = net.channels("se squeeze", 1)
    if net.flag("se as matmuls"):
        pooled = net.reduce(net.pick(["ReduceMean", "ReduceMax"], "pool"), net.x, [2, 3], 0)
        s = net.b.op("Relu", [net.matmul(pooled, net.c, squeeze)])
        gate = net.squeeze("Unsqueeze", net.matmul(s, squeeze, net.c), [2, 3])
    else:
        s = net.b.op("Relu", [net.conv_raw(net.b.op("GlobalAveragePool", [net.x]), net.c,
                                           squeeze)])
        gate = net.conv_raw(s, squeeze, net.c)
    if squeeze > 1:
        net.expect(s, 1, "exact", units=squeeze)
    net.x = net.b.op("Mul", [net.x, net.b.op("Sigmoid", [gate])])


def block_nhwc_mlp(net: Net) -> None:
    """Channels-last MLP with a residual (ConvNeXt-like, without the LayerNorm)."""
    hidden = net.channels("mlp hidden")
    t = net.b.op("Transpose", [net.x], perm=[0, 2, 3, 1])
    h = net.matmul(t, net.c, hidden)
    net.expect(h, 3, "exact", units=hidden, kind="neuron")
    back = net.matmul(net.act(h), hidden, net.c)
    net.x = net.b.op("Add", [net.x, net.b.op("Transpose", [back], perm=[0, 3, 1, 2])])


def block_inception(net: Net) -> None:
    """A pooled copy of the input concatenated with a conv branch."""
    if net.c >= MAX_C:
        return block_conv(net)
    c = net.channels("inception conv", 1, MAX_C - net.c)
    pooled = net.b.op("MaxPool", [net.x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    net.x = net.b.op("Concat", [net.conv(net.x, net.c, c), pooled], axis=1)
    net.c += c


def block_slice(net: Net) -> None:
    """A window of the channels: bounds from the front, from the back (negative, or an
    end past the last index) or with a step of 2 (which blocks the channels)."""
    if net.c < 3:
        return block_conv(net)
    start = net.draw(st.integers(0, net.c - 2), "slice start")
    stop = net.draw(st.integers(start + 2, net.c), "slice stop")
    form = net.pick(["plain", "negative", "open end", "step 2"], "slice bounds")
    step = 2 if form == "step 2" else 1
    if form == "negative":
        bounds = (start - net.c, stop - net.c if stop < net.c else 2 ** 62)
    elif form == "open end" and stop == net.c:
        bounds = (start, 2 ** 63 - 1)
    else:
        bounds = (start, stop)
    if step == 2:
        net.expect(net.x, 1, "blocked")
    net.x = net.b.op("Slice", [net.x, net.ints(bounds[0]), net.ints(bounds[1]), net.ints(1),
                               net.ints(step)])
    net.c = len(range(start, stop, step))


def block_shared(net: Net) -> None:
    """One weight (and bias) used by two convs: of the activation and of a pooled copy."""
    c, k = net.channels("shared out"), net.pick([1, 3], "kernel")
    w = net.weight(c, net.c, k, k)
    inputs = [w, net.bias(c)] if net.flag("bias") else [w]
    pooled = net.b.op("MaxPool", [net.x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y1, y2 = (net.b.op("Conv", [x, *inputs], pads=[k // 2] * 4) for x in (net.x, pooled))
    net.x, net.c = net.act(net.b.op("Add", [y1, y2])), c


def block_variadic(net: Net) -> None:
    """Sum, Max, Min or Mean of two or three conv branches (and the input, when it fits,
    or a per-channel constant)."""
    c = net.channels("variadic out")
    parts = [net.conv(net.x, net.c, c) for _ in range(net.draw(st.integers(2, 3), "branches"))]
    if c == net.c and net.flag("variadic input too"):
        parts.append(net.x)
    if net.flag("per-channel constant operand"):
        parts.append(net.const(net.values(c, 1, 1, fan_in=1)))
    net.x, net.c = net.b.op(net.pick(["Sum", "Max", "Min", "Mean"], "variadic"), parts), c


def block_gate(net: Net) -> None:
    """A one-channel spatial gate from a conv of the activation, broadcast over it."""
    gate = net.b.op("Sigmoid", [net.conv_raw(net.x, net.c, 1, k=net.pick([1, 3], "kernel"))])
    net.x = net.b.op("Mul", [net.x, gate])


def block_prelu(net: Net) -> None:
    """PRelu with a per-channel [C, 1, 1] or a shared [1] slope."""
    shape = (net.c, 1, 1) if net.flag("per-channel slope") else (1,)
    slope = net.const(np.abs(net.values(*shape, fan_in=1)) * 0.2)
    net.x = net.b.op("PRelu", [net.x, slope])


def stem(net: Net) -> None:
    """x [1, 3, 8, 8] through a conv; maybe a second input joined by Add or Concat."""
    x = net.b.input("x", [1, 3, 8, 8])
    net.hw, net.c = 8, net.channels("stem out")
    net.x = net.conv(x, 3, net.c)
    if net.flag("second input"):
        other = net.b.input("x2", [1, 3, 8, 8])
        if net.c < MAX_C and net.flag("join by concat"):
            c = net.channels("second stem out", 1, MAX_C - net.c)
            net.x = net.b.op("Concat", [net.x, net.conv(other, 3, c)], axis=1)
            net.c += c
        else:
            net.x = net.b.op("Add", [net.x, net.conv(other, 3, net.c)])


def head(net: Net) -> None:
    """A classifier or dense head on an NCHW activation, made a graph output."""
    kind = net.pick(["conv", "gap_gemm", "gap_mlp", "flatten_gemm", "reshape_gemm",
                     "runtime_flatten", "reduce_matmul"], "head")
    if kind == "conv":
        return net.output(net.conv_raw(net.x, net.c, 2), [1, 2, net.hw, net.hw])
    if kind == "reduce_matmul":
        return net.output(net.matmul(net.reduce("ReduceMean", net.x, [2, 3], 0), net.c, 3),
                          [1, 3])
    if kind in ("gap_gemm", "gap_mlp"):
        flat, features = net.b.op("Flatten", [net.b.op("GlobalAveragePool", [net.x])]), net.c
    elif kind == "flatten_gemm":
        flat, features = net.b.op("Flatten", [net.x]), net.c * net.hw * net.hw
    else:
        target = net.ints(1, -1) if kind == "reshape_gemm" else net.target(
            net.x, [("shape", 0), -1])
        flat = net.b.op("Reshape", [net.x, target])
        features = net.c * net.hw * net.hw
    if kind == "gap_mlp":
        hidden = net.channels("head hidden")
        h = net.b.op("Gemm", [flat, net.weight(hidden, features, out_axis=0),
                              net.bias(hidden)], transB=1)
        net.expect(h, 1, "exact", units=hidden, kind="neuron")
        flat, features = net.act(h), hidden
    net.output(net.b.op("Gemm", [flat, net.weight(features, 3, fan_in=features, out_axis=1)]),
               [1, 3])


def tap(net: Net) -> None:
    """A second graph output here: a head on the activation, or the activation itself
    (whose channels then must stay: a graph output is blocked)."""
    if net.flag("raw output"):
        net.expect(net.x, 1, "blocked")
        net.output(net.x, [1, net.c, net.hw, net.hw])
    else:
        head(net)


CNN_BLOCKS = {name[len("block_"):]: fn for name, fn in dict(globals()).items()
              if name.startswith("block_")}
