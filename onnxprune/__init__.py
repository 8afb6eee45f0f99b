"""onnxprune: structural pruning and sparsity for ONNX models."""

from .api import Report, SparsifyReport, inspect, prune, sensitivity, sparsify
from .errors import InputError, ModelError, OnnxPruneError, VerificationError

__version__ = "0.1.0"

__all__ = ["InputError", "ModelError", "OnnxPruneError", "Report", "VerificationError",
           "SparsifyReport", "__version__", "inspect", "prune", "sensitivity", "sparsify"]
