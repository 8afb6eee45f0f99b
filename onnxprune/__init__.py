"""onnxprune: structural pruning and sparsity for ONNX models."""

from __future__ import annotations

import importlib

from .errors import InputError, ModelError, OnnxPruneError, VerificationError

__version__ = "0.1.0"

_API = {"PruneOptions", "Report", "SparsifyReport", "finetune", "inspect", "prune",
        "prune_with", "sensitivity", "sparsify"}

__all__ = ["InputError", "ModelError", "OnnxPruneError", "PruneOptions", "Report",
           "VerificationError", "SparsifyReport", "__version__", "finetune", "inspect", "prune",
           "prune_with", "sensitivity", "sparsify"]


def __getattr__(name: str):
    """The API and the submodules load on first use, so that the command line starts
    (and answers Ctrl-C) before onnx and onnxruntime are imported."""
    if name in _API:
        return getattr(importlib.import_module(".api", __name__), name)
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
