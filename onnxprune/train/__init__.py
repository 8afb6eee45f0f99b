"""Gradients through ONNX graphs (the `train` extra): the graph translated into a pure
JAX function, checked against onnxruntime before use.

    from onnxprune.train import check_translation
    translated, parity = check_translation(model, feeds)   # InputError if it disagrees
    f = jax.jit(translated.function())
    outputs = f(translated.params, feeds)
"""

from __future__ import annotations

from ..errors import InputError

try:
    import jax  # noqa: F401
except ImportError:
    raise InputError("training needs JAX: pip install 'onnxprune[train]'") from None

from .parity import Parity, check_translation, tolerance  # noqa: E402
from .translate import Translated, translate  # noqa: E402

__all__ = ["Parity", "Translated", "check_translation", "tolerance", "translate"]
