"""Sequence blocks for the random graphs: activations [N, S, D] with the channels (the
hidden size) last. MLPs make neuron groups, attention blocks head groups, LayerNorms
make the hidden size approximate."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from property_graphs import MAX_C, Net
from property_mixing import layer_norm


def seq_stem(net: Net) -> None:
    """tokens [1, S, F] projected to the hidden size; maybe a positional table, a second
    feature input and an additive attention mask input."""
    net.seq, features = net.draw(st.integers(2, 6), "sequence"), net.channels("features")
    net.c = net.channels("hidden")
    tokens = net.b.input("tokens", [1, net.seq, features])
    net.x = net.matmul(tokens, features, net.c)
    if net.flag("positions"):
        net.x = net.b.op("Add", [net.x, net.const(net.values(net.seq, net.c, fan_in=1))])
    if net.flag("second input"):
        extra = net.b.input("extra", [1, net.seq, 3])
        net.x = net.b.op("Add", [net.x, net.matmul(extra, 3, net.c)])
    net.mask = net.b.input("mask", [1, 1, 1, net.seq]) if net.flag("mask input") else ""


def to_sequence(net: Net) -> None:
    """NCHW -> [N, H·W, C] (pooled to at most 4x4 first), as vision transformers do."""
    while net.hw > 4:
        net.x = net.b.op("MaxPool", [net.x], kernel_shape=[2, 2], strides=[2, 2])
        net.hw //= 2
    net.seq = net.hw * net.hw
    if net.flag("sequence target at run time"):
        target = net.target(net.x, [("shape", 0), ("shape", 1), -1])
    else:
        target = net.ints(1, net.c, net.seq)
    flat = net.b.op("Reshape", [net.x, target])
    net.x = net.b.op("Transpose", [flat], perm=[0, 2, 1])
    net.mask = ""


def block_mlp(net: Net) -> None:
    """Residual MLP, plain or gated (SwiGLU-like): the hidden neurons are one group."""
    hidden = net.channels("mlp hidden")
    up = net.matmul(net.x, net.c, hidden)
    net.expect(up, 2, "exact", units=hidden, kind="neuron")
    if net.flag("gated"):
        gate = net.matmul(net.x, net.c, hidden)
        h = net.b.op("Mul", [net.b.op("Mul", [gate, net.b.op("Sigmoid", [gate])]), up])
    else:
        h = net.act(up)
    net.x = net.b.op("Add", [net.x, net.matmul(h, hidden, net.c)])


def block_attention(net: Net) -> None:
    """Multi-head self-attention with a residual: Q/K/V projections, head-split Reshape,
    Transpose, batched MatMuls, Softmax over the keys, merge, output projection."""
    heads, size = net.draw(st.integers(2, 4), "heads"), net.pick([2, 3, 4, 1], "head size")
    inner = heads * size
    q, k, v = (net.matmul(net.x, net.c, inner) for _ in range(3))
    # one-wide heads split nothing off: they read as neurons or heads alike
    net.expect(q, 2, "exact", units=heads, kind="head" if size > 1 else None)
    qh, vh = (_split_heads(net, t, heads, size, [0, 2, 1, 3]) for t in (q, v))
    kh = _split_heads(net, k, heads, size, [0, 2, 3, 1])
    scores = net.b.op("Mul", [net.b.op("MatMul", [qh, kh]),
                              net.const(np.float32(size ** -0.5))])
    if net.mask:
        scores = net.b.op("Add", [scores, net.mask])
    context = net.b.op("MatMul", [net.b.op("Softmax", [scores], axis=-1), vh])
    merged = net.b.op("Transpose", [context], perm=[0, 2, 1, 3])
    entries = net.pick([(1, net.seq, inner), (("shape", 0), ("shape", 1), -1),
                        (("shape", 0), -1, inner)], "merge target")
    merged = net.b.op("Reshape", [merged, _target(net, merged, entries)])
    net.x = net.b.op("Add", [net.x, net.matmul(merged, inner, net.c)])


def _split_heads(net: Net, x: str, heads: int, size: int, perm: list[int]) -> str:
    entries = net.pick([(1, net.seq, heads, size), (("shape", 0), ("shape", 1), heads, size),
                        (("shape", 0), -1, heads, size)], "split target")
    return net.b.op("Transpose", [net.b.op("Reshape", [x, _target(net, x, entries)])],
                    perm=perm)


def _target(net: Net, x: str, entries) -> str:
    if all(isinstance(e, int) for e in entries):
        return net.ints(*entries)
    return net.target(x, entries)


def block_layernorm(net: Net) -> None:
    """LayerNorm over the hidden size (fused or decomposed): approximate."""
    net.expect(net.x, 2, "inexact")
    scale, bias = net.const(net.values(net.c, fan_in=1) + 1), net.bias(net.c)
    net.x = layer_norm(net, net.x, scale, bias, axis=2)


def block_instance_norm(net: Net) -> None:
    """InstanceNormalization of [N, S, D]: S is its channel axis, the hidden size is
    normalized (approximate)."""
    net.expect(net.x, 2, "inexact")
    scale, bias = net.const(net.values(net.seq, fan_in=1) + 1), net.bias(net.seq)
    net.x = net.b.op("InstanceNormalization", [net.x, scale, bias])


def block_seq_conv(net: Net) -> None:
    """A depthwise 1-D conv over the sequence between two Transposes, with a residual."""
    t = net.b.op("Transpose", [net.x], perm=[0, 2, 1])
    w = net.weight(net.c, 1, 3, fan_in=3)
    y = net.b.op("Conv", [t, w, net.bias(net.c)], pads=[1, 1], group=net.c)
    net.x = net.b.op("Add", [net.x, net.b.op("Transpose", [net.act(y)], perm=[0, 2, 1])])


def block_token_mixing(net: Net) -> None:
    """An MLP-Mixer token mix: W[S, S] @ x mixes the positions, the channels pass."""
    mixed = net.b.op("MatMul", [net.weight(net.seq, net.seq, out_axis=0), net.x])
    net.x = net.b.op("Add", [net.x, net.act(mixed)])


def block_seq_resize(net: Net) -> None:
    """A projection to a new hidden size (no residual)."""
    c = net.channels("projection out", 2, MAX_C)
    net.x, net.c = net.act(net.matmul(net.x, net.c, c)), c


def seq_head(net: Net) -> None:
    """Mean over the sequence, the first token (Gather) or every token, then a MatMul:
    a graph output."""
    kind = net.pick(["mean", "first", "tokens"], "sequence head")
    if kind == "mean":
        x = net.reduce("ReduceMean", net.x, [1], keepdims=0)
    elif kind == "first":
        x = net.b.op("Gather", [net.x, net.b.const(np.array(0, np.int64))], axis=1)
    else:
        x = net.x
    net.output(net.matmul(x, net.c, 3), [1, 3] if kind != "tokens" else [1, net.seq, 3])


SEQ_BLOCKS = {name[len("block_"):]: fn for name, fn in dict(globals()).items()
              if name.startswith("block_")}
