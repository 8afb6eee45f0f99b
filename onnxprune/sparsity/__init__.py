"""N:M and unstructured weight sparsity for Conv, MatMul, Gemm and Einsum layers."""

from __future__ import annotations

from .pattern import PATTERNS, Pattern, parse_pattern
from .pipeline import LayerReport, SparsifyReport, sparsify

__all__ = ["PATTERNS", "LayerReport", "Pattern", "SparsifyReport", "parse_pattern", "sparsify"]
