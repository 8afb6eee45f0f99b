"""Blocks that normalize, reduce or reshape NCHW activations: some mix channels (the
groups through them must be blocked or approximate), others only move axes."""

from __future__ import annotations

import numpy as np
from property_graphs import Net


def block_norm(net: Net) -> None:
    """InstanceNorm (per channel), LayerNorm over W (channels pass), GroupNorm fused or
    as exporters decompose it (mixes channels: blocked), LayerNorm over C,H,W, over C or
    channels-last, fused or decomposed (mixes channels: approximate)."""
    kinds = ["instance", "layer_nhwc", "layer_decomposed", "group_decomposed"]
    kinds += ["layer_nchw", "layer_last"] if net.opset >= 17 else []
    kinds += ["group_fused"] if net.opset >= 21 else []
    kind = net.pick(kinds, "norm")
    x, c = net.x, net.c
    scale, bias = net.const(net.values(c, fan_in=1) + 1), net.bias(c)
    if kind == "instance":
        net.x = net.b.op("InstanceNormalization", [x, scale, bias])
        return
    if kind == "layer_last":  # over W only: the channels pass
        params = [net.const(net.values(net.hw, fan_in=1) + 1), net.bias(net.hw)]
        net.x = net.b.op("LayerNormalization", [x, *params], axis=-1)
        return
    net.expect(x, 1, "blocked" if kind.startswith("group") else "inexact")
    if kind == "group_decomposed":  # as torch exports group_norm
        groups = _divisor(net)
        flat = net.b.op("Reshape", [x, net.ints(0, groups, -1)])
        ones = net.const(np.ones(groups, np.float32))
        zeros = net.const(np.zeros(groups, np.float32))
        normed = net.b.op("InstanceNormalization", [flat, ones, zeros])
        back = net.b.op("Reshape", [normed, net.b.op("Shape", [x])])
        net.x = _scale_shift(net, back, scale, bias, [c, 1, 1])
    elif kind == "group_fused":
        net.x = net.b.op("GroupNormalization", [x, scale, bias], num_groups=_divisor(net))
    elif kind == "layer_nchw":
        shape = (c, net.hw, net.hw)
        net.x = net.b.op("LayerNormalization", [x, net.const(net.values(*shape, fan_in=1) + 1),
                                                net.const(net.values(*shape, fan_in=4))],
                         axis=1)
    elif kind == "layer_nhwc":
        t = net.b.op("Transpose", [x], perm=[0, 2, 3, 1])
        normed = layer_norm(net, t, scale, bias, axis=3)
        net.x = net.b.op("Transpose", [normed], perm=[0, 3, 1, 2])
    else:
        net.x = _scale_shift(net, _normalize(net, x, axis=1), scale, bias, [c, 1, 1])


def layer_norm(net: Net, x: str, scale: str, bias: str, axis: int) -> str:
    """LayerNormalization over the last axis (decomposed before opset 17)."""
    if net.opset >= 17 and net.flag("fused layernorm"):
        return net.b.op("LayerNormalization", [x, scale, bias], axis=-1)
    return net.b.op("Add", [net.b.op("Mul", [_normalize(net, x, axis), scale]), bias])


def _normalize(net: Net, x: str, axis: int) -> str:
    """(x - mean) / sqrt(var + eps) over one axis, as exporters decompose LayerNorm."""
    centered = net.b.op("Sub", [x, net.reduce("ReduceMean", x, [axis])])
    var = net.reduce("ReduceMean", net.b.op("Mul", [centered, centered]), [axis])
    eps = net.const(np.float32(1e-5))
    return net.b.op("Div", [centered, net.b.op("Sqrt", [net.b.op("Add", [var, eps])])])


def _scale_shift(net: Net, x: str, scale: str, bias: str, shape) -> str:
    scale = net.b.op("Reshape", [scale, net.ints(*shape)])
    bias = net.b.op("Reshape", [bias, net.ints(*shape)])
    return net.b.op("Add", [net.b.op("Mul", [x, scale]), bias])


def _divisor(net: Net) -> int:
    divisors = [g for g in range(2, net.c) if net.c % g == 0] or [1]
    return net.pick(divisors, "norm groups")


def block_reduce(net: Net) -> None:
    """A gate from a reduction: over H, W (channels pass; kept or dropped axes) or over
    the channels (CBAM-like spatial attention: a mean mixes them approximately, a max
    blocks them)."""
    if net.flag("reduce channels"):
        op = net.pick(["ReduceMean", "ReduceMax"], "reduce op")
        net.expect(net.x, 1, "inexact" if op == "ReduceMean" else "blocked")
        pooled = net.reduce(op, net.x, [1])
        gate = net.conv_raw(pooled, 1, 1, k=3)
    else:
        op = net.pick(["ReduceMean", "ReduceMax", "ReduceSum", "ReduceL2"], "reduce op")
        if net.flag("keepdims"):
            pooled = net.reduce(op, net.x, [2, 3])
        else:
            pooled = net.squeeze("Unsqueeze", net.reduce(op, net.x, [2, 3], 0), [2, 3])
        gate = net.conv_raw(pooled, net.c, net.c)
    net.x = net.b.op("Mul", [net.x, net.b.op("Sigmoid", [gate])])


def block_softmax(net: Net) -> None:
    """Softmax over the channels (mixes them: blocked) or over the last spatial axis."""
    over_channels = net.flag("softmax over channels")
    if over_channels:
        net.expect(net.x, 1, "blocked")
    y = net.b.op(net.pick(["Softmax", "LogSoftmax"], "softmax"), [net.x],
                 axis=1 if over_channels else -1)
    if over_channels:
        net.expect(y, 1, "blocked")
    net.x = y


def block_squeeze(net: Net) -> None:
    """Unsqueeze a new axis (before or after the channels), an activation, Squeeze it."""
    axis = net.pick([0, 2, 4], "new axis")
    wide = net.squeeze("Unsqueeze", net.x, [axis])
    net.x = net.squeeze("Squeeze", net.act(wide), [axis])


def block_expand(net: Net) -> None:
    """A pooled [N, C, 1, 1] vector broadcast back to [N, C, H, W] by Expand, with the
    target's channel entry equal to C or 1, a constant or built at run time."""
    pooled = net.b.op("GlobalAveragePool", [net.x])
    channel = net.pick([net.c, 1], "expand channel entry")
    if net.flag("expand target at run time"):
        target = net.target(net.x, [("shape", 0), channel, net.hw, net.hw])
    else:
        target = net.ints(1, channel, net.hw, net.hw)
    expanded = net.b.op("Expand", [pooled, target])
    net.x = net.b.op("Mul", [net.x, net.b.op("Sigmoid", [expanded])])


def block_reshape(net: Net) -> None:
    """[N, C, H, W] -> [N, C, H·W] -> op over H·W -> [N, C, H, W], with targets that are
    constants or built at run time from Shape -> Gather -> Concat."""
    hw = net.hw * net.hw
    if net.flag("flatten target at run time"):
        spatial = net.pick([-1, hw], "flattened entry")
        channel = net.pick([("shape", 1), net.c], "channel entry")
        flat = net.b.op("Reshape", [net.x, net.target(net.x, [("shape", 0), channel, spatial])])
    else:
        flat = net.b.op("Reshape", [net.x, net.ints(1, net.c, hw)])
    mixed = net.b.op("Softmax", [flat], axis=-1) if net.flag("softmax") else net.act(flat)
    back = net.pick(["constant", "run time", "shape of input"], "unflatten target")
    if back == "constant":
        target = net.ints(1, net.c, net.hw, net.hw)
    elif back == "run time":
        target = net.target(flat, [("shape", 0), ("shape", 1), net.hw, net.hw])
    else:
        target = net.b.op("Shape", [net.x])
    net.x = net.b.op("Reshape", [mixed, target])


MIXING_BLOCKS = {name[len("block_"):]: fn for name, fn in dict(globals()).items()
                 if name.startswith("block_")}
