"""Matrix products: MatMul (numpy semantics, batched and 1-D), Gemm, Einsum."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp

from ..registry import register

if TYPE_CHECKING:
    from ..registry import Array, Node

PRECISION = "highest"  # float32 products in float32 on every backend (no TF32)


@register("MatMul")
def matmul(node: Node, a: Array, b: Array) -> Array:
    return jnp.matmul(a, b, precision=PRECISION)


@register("Gemm")
def gemm(node: Node, a: Array, b: Array, c: Array | None = None) -> Array:
    """Y = alpha · A' · B' + beta · C, A' and B' transposed when asked."""
    a = a.T if node.attr("transA", 0) else a
    b = b.T if node.attr("transB", 0) else b
    y = node.attr("alpha", 1.0) * jnp.matmul(a, b, precision=PRECISION)
    return y if c is None else y + node.attr("beta", 1.0) * c


@register("Einsum")
def einsum(node: Node, *operands: Array) -> Array:
    return jnp.einsum(node.attr("equation"), *operands, precision=PRECISION)
