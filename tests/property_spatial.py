"""Blocks that change or work along the spatial axes of NCHW activations: pooling,
ConvTranspose, Resize, Pad, Tile, and concatenation along a spatial axis."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from property_graphs import MAX_C, Net


def block_pool(net: Net) -> None:
    op = net.pick(["MaxPool", "AveragePool", "LpPool"], "pool")
    if net.hw >= 4 and net.flag("strided pool"):
        net.x, net.hw = net.b.op(op, [net.x], kernel_shape=[2, 2], strides=[2, 2]), net.hw // 2
    else:
        net.x = net.b.op(op, [net.x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])


def block_conv_transpose(net: Net) -> None:
    """ConvTranspose: a 2x upsampling (k=2, stride 2) or a same-size k=3, plain, grouped
    or depthwise."""
    up = net.hw <= 8 and net.flag("upsample")
    group = net.pick([g for g in range(1, net.c + 1) if net.c % g == 0], "transpose groups")
    c = group * net.draw(st.integers(1, MAX_C // group), "transpose out per group")
    k = 2 if up else 3
    w = net.weight(net.c, c // group, k, k, fan_in=net.c // group * k * k)
    inputs = [net.x, w] + ([net.bias(c)] if net.flag("bias") else [])
    attrs = {"strides": [2, 2]} if up else {"pads": [1, 1, 1, 1]}
    y = net.b.op("ConvTranspose", inputs, kernel_shape=[k, k], group=group, **attrs)
    net.x, net.c, net.hw = net.act(y), c, net.hw * (2 if up else 1)


def block_resize(net: Net) -> None:
    """Nearest-neighbour Resize by scales (2x or 0.5x) or by explicit sizes (whose
    channel entry is rewritten)."""
    factor = 2 if net.hw <= 8 and (net.hw % 2 or net.flag("up")) else 0.5
    size = int(net.hw * factor)
    roi = ""
    if net.flag("resize by sizes"):
        inputs = [net.x, roi, "", net.ints(1, net.c, size, size)]
    else:
        inputs = [net.x, roi, net.const(np.array([1, 1, factor, factor], np.float32))]
    net.x, net.hw = net.b.op("Resize", inputs, mode="nearest"), size


def block_pad(net: Net) -> None:
    """Spatial Pad (constant, reflect or edge), or constant padding of the channels,
    which blocks the channels before it."""
    mode = net.pick(["constant", "reflect", "edge"] if net.hw > 1 else ["constant", "edge"],
                    "pad mode")
    if mode == "constant" and net.c + 2 <= MAX_C and net.flag("pad channels"):
        net.expect(net.x, 1, "blocked")
        net.x = net.b.op("Pad", [net.x, net.ints(0, 1, 0, 0, 0, 1, 0, 0)], mode=mode)
        net.c += 2
        return
    if net.hw >= 14:
        return block_pool(net)
    if net.opset >= 18 and net.flag("pad axes"):
        pads = [net.ints(1, 1, 1, 1), "", net.ints(2, 3)]
    else:
        pads = [net.ints(0, 0, 1, 1, 0, 0, 1, 1)]
    net.x = net.b.op("Pad", [net.x, *pads], mode=mode)
    net.hw += 2


def block_tile(net: Net) -> None:
    """Tile the spatial axes (then pool back), or the channels (which blocks them)."""
    if net.c * 2 <= 16 and net.flag("tile channels"):
        net.expect(net.x, 1, "blocked")
        net.x, net.c = net.b.op("Tile", [net.x, net.ints(1, 2, 1, 1)]), net.c * 2
        return
    tiled = net.b.op("Tile", [net.x, net.ints(1, 1, 2, 2)])
    net.x = net.b.op("MaxPool", [tiled], kernel_shape=[2, 2], strides=[2, 2])


def block_spatial_concat(net: Net) -> None:
    """Two conv branches joined along H (their channels coupled), pooled back to HxW."""
    c = net.channels("spatial concat out")
    joined = net.b.op("Concat", [net.conv(net.x, net.c, c), net.conv(net.x, net.c, c)], axis=2)
    net.x = net.b.op("MaxPool", [joined], kernel_shape=[2, 1], strides=[2, 1])
    net.c = c


SPATIAL_BLOCKS = {name[len("block_"):]: fn for name, fn in dict(globals()).items()
                  if name.startswith("block_")}
