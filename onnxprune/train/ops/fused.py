"""onnxruntime's fused transformer ops (com.microsoft), as its CPU kernels compute
them: Attention, MultiHeadAttention, SkipLayerNormalization,
SkipSimplifiedLayerNormalization, EmbedLayerNormalization, BiasGelu, FastGelu, Gelu,
QuickGelu, BiasAdd, FusedMatMul; and SimplifiedLayerNormalization (an onnxruntime op
in the default domain)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from ..registry import MS, register
from .matmul import PRECISION
from .norm import _wide, standardize

if TYPE_CHECKING:
    from ..registry import Array, Node


@register("Gelu", domain=MS)
def gelu(node: Node, x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)


@register("BiasGelu", domain=MS)
def bias_gelu(node: Node, x: Array, bias: Array) -> Array:
    return jax.nn.gelu(x + bias, approximate=False)


@register("FastGelu", domain=MS)
def fast_gelu(node: Node, x: Array, bias: Array | None = None) -> Array:
    """The tanh approximation of Gelu, after an optional bias."""
    return jax.nn.gelu(x if bias is None else x + bias, approximate=True)


@register("QuickGelu", domain=MS)
def quick_gelu(node: Node, x: Array) -> Array:
    return x * jax.nn.sigmoid(node.attr("alpha", 1.702) * x)


@register("BiasAdd", domain=MS)
def bias_add(node: Node, x: Array, bias: Array, skip: Array) -> Array:
    return x + bias + skip


@register("FusedMatMul", domain=MS)
def fused_matmul(node: Node, a: Array, b: Array) -> Array:
    """alpha · A' · B', the last two axes of A and B swapped when asked."""
    if node.attr("transBatchA", 0) or node.attr("transBatchB", 0):
        raise node.refuse("transBatchA and transBatchB are not translated")
    a = jnp.swapaxes(a, -1, -2) if node.attr("transA", 0) else a
    b = jnp.swapaxes(b, -1, -2) if node.attr("transB", 0) else b
    return node.attr("alpha", 1.0) * jnp.matmul(a, b, precision=PRECISION)


def _rms(x, epsilon, axes=(-1,)):
    wide = _wide(x)
    inv = lax.rsqrt((wide * wide).mean(axis=axes, keepdims=True) + epsilon)
    return (wide * inv).astype(x.dtype), inv


@register("SkipLayerNormalization", domain=MS)
def skip_layer_norm(node: Node, x: Array, skip: Array, gamma: Array, beta: Array | None = None,
                    bias: Array | None = None) -> tuple[Array, ...]:
    """LayerNorm(x + skip + bias) · gamma + beta over the last axis; outputs also the
    mean, 1/σ and the sum."""
    total = x + skip if bias is None else x + skip + bias
    y, mean, inv = standardize(total, (-1,), node.attr("epsilon", 1e-12))
    y = y * gamma if beta is None else y * gamma + beta
    return (y, mean, inv, total)[:node.outputs]


@register("SkipSimplifiedLayerNormalization", domain=MS)
def skip_simplified_layer_norm(node: Node, x: Array, skip: Array, gamma: Array,
                               bias: Array | None = None) -> tuple[Array | None, ...]:
    """RMSNorm(x + skip + bias) · gamma; outputs also (unused) mean, 1/rms, the sum."""
    total = x + skip if bias is None else x + skip + bias
    y, inv = _rms(total, node.attr("epsilon", 1e-12))
    return (y * gamma, None, inv, total)[:node.outputs]


@register("SimplifiedLayerNormalization")
def simplified_layer_norm(node: Node, x: Array, scale: Array) -> tuple[Array, ...]:
    axis = node.attr("axis", -1) % x.ndim
    y, inv = _rms(x, node.attr("epsilon", 1e-5), tuple(range(axis, x.ndim)))
    return (y * scale, inv)[:node.outputs]


@register("EmbedLayerNormalization", domain=MS)
def embed_layer_norm(node: Node, ids: Array, segments: Array | None, words: Array,
                     positions: Array, segment_table: Array | None, gamma: Array, beta: Array,
                     mask: Array | None = None, position_ids: Array | None = None
                     ) -> tuple[Array, ...]:
    """LayerNorm(word[ids] + position[position ids or 0..S−1] + segment[segment ids]);
    the mask index is the count of ones in each mask row (zeros without a mask)."""
    batch, length = ids.shape
    where = jnp.arange(length)[None] if position_ids is None else position_ids
    total = jnp.take(words, ids, axis=0) + jnp.take(positions, where, axis=0)
    if segments is not None and segment_table is not None:
        total = total + jnp.take(segment_table, segments, axis=0)
    y, _, _ = standardize(total, (-1,), node.attr("epsilon", 1e-12))
    y = y * gamma + beta
    index = jnp.zeros(batch, jnp.int32) if mask is None else \
        jnp.sum(mask == 1, axis=1).astype(jnp.int32)
    return (y, index, total)[:node.outputs]


def key_mask(mask: Array, batch: int, queries: int, keys: int, filter_value: float
             ) -> jax.Array:
    """onnxruntime's additive attention mask [B, 1, S, T] from a mask input: 1-D key
    lengths [B] (or ends then starts [2B]), or a raw 0/1 mask [B, T] or [B, S, T]."""
    position = jnp.arange(keys)
    if mask.ndim == 1:
        keep = position[None] < mask[:batch, None]
        if mask.shape[0] == 2 * batch:
            keep = keep & (position[None] >= mask[batch:, None])
        keep = keep[:, None, :]
    elif mask.ndim == 2:
        keep = (mask > 0)[:, None, :]
    elif mask.ndim == 3:
        keep = mask > 0
    else:
        raise ValueError(f"a {mask.ndim}-D mask is not translated")
    return jnp.where(keep, 0.0, filter_value)[:, None].astype(jnp.float32)


def attend(node: Node, q: Array, k: Array, v: Array, heads: int, bias: Array | None = None
           ) -> jax.Array:
    """softmax(scale · Q Kᵀ + bias) V per head; Q [B, S, N·H], K/V [B, T, N·H]."""
    (batch, queries, _), keys = q.shape, k.shape[1]

    def split(x):
        return x.reshape(batch, x.shape[1], heads, -1).transpose(0, 2, 1, 3)
    q, k, v = split(q), split(k), split(v)
    scale = node.attr("scale") or 1 / float(q.shape[-1]) ** 0.5
    scores = jnp.einsum("bnsh,bnth->bnst", q, k, precision=PRECISION) * scale
    if bias is not None:
        scores = scores + bias.astype(scores.dtype)
    if node.attr("unidirectional", 0):
        causal = jnp.arange(keys)[None] <= jnp.arange(queries)[:, None] + (keys - queries)
        scores = jnp.where(causal, scores, node.attr("mask_filter_value", -10000.0))
    wide = jnp.promote_types(scores.dtype, jnp.float32)
    weights = jax.nn.softmax(scores.astype(wide), axis=-1).astype(v.dtype)
    out = jnp.einsum("bnst,bnth->bnsh", weights, v, precision=PRECISION)
    return out.transpose(0, 2, 1, 3).reshape(batch, queries, -1)


def _biases(node, batch, queries, keys, mask, attention_bias):
    total = None
    if mask is not None:
        total = key_mask(mask, batch, queries, keys, node.attr("mask_filter_value", -10000.0))
    if attention_bias is not None:
        total = attention_bias if total is None else total + attention_bias
    return total


@register("Attention", domain=MS)
def attention(node: Node, x: Array, weights: Array, bias: Array | None = None,
              mask: Array | None = None, past: Array | None = None,
              attention_bias: Array | None = None, past_length: Array | None = None) -> Array:
    """Packed Q/K/V projection of x, then multi-head attention."""
    if past is not None or node.outputs > 1 or node.attr("do_rotary", 0):
        raise node.refuse("past/present key-value caches and rotary are not translated")
    qkv = jnp.matmul(x, weights, precision=PRECISION)
    qkv = qkv if bias is None else qkv + bias
    sizes = node.attr("qkv_hidden_sizes") or [weights.shape[1] // 3] * 3
    q, k, v = jnp.split(qkv, [sizes[0], sizes[0] + sizes[1]], axis=-1)
    extra = _biases(node, x.shape[0], x.shape[1], x.shape[1], mask, attention_bias)
    return attend(node, q, k, v, node.attr("num_heads"), extra)


@register("MultiHeadAttention", domain=MS)
def multi_head_attention(node: Node, query: Array, key: Array | None = None,
                         value: Array | None = None, bias: Array | None = None,
                         padding: Array | None = None, attention_bias: Array | None = None,
                         past_key: Array | None = None, past_value: Array | None = None) -> Array:
    """Attention over separate 3-D query, key and value (plus an optional packed bias)."""
    if key is None or value is None or key.ndim != 3 or past_key is not None \
            or node.outputs > 1:
        raise node.refuse("packed Q/K/V, key-value caches and present outputs are not "
                          "translated")
    if bias is not None:
        qs, ks = query.shape[-1], key.shape[-1]
        query, key, value = query + bias[:qs], key + bias[qs:qs + ks], value + bias[qs + ks:]
    extra = _biases(node, query.shape[0], query.shape[1], key.shape[1], padding,
                    attention_bias)
    return attend(node, query, key, value, node.attr("num_heads"), extra)
