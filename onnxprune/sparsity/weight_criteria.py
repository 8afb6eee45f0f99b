"""Which single weights `sparsify` zeroes: magnitude, Wanda and SparseGPT on a matrix
view (the pruning criteria, which score whole units of a group, are `criteria/`).

- magnitude: |W|.
- wanda: |W| · ‖X_j‖, the weight times the norm of the input column it multiplies
  (compared within each output row, or each group of m).
- sparsegpt: the optimal-brain-surgeon update of the remaining weights from the
  calibration Hessian H = XᵀX/n (dampened), processed block by block from the
  first column on, choosing each group's (or block's) zeros by w² / [H⁻¹]ᵢᵢ².
- snip: |W · ∂L/∂W| (connection sensitivity, Lee et al. 2019), the gradient of the
  loss of `train/saliency.py` summed over the calibration samples (`gradients.py`).
- movement: −Σ_t w_t·∂L/∂w_t over distillation steps (`movement.py`).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ..errors import InputError
from ..threads import fixed_blas
from .pattern import Pattern, keep_mask

CRITERIA = ("magnitude", "wanda", "sparsegpt", "snip", "movement")
DATA_AWARE = ("wanda", "sparsegpt", "snip", "movement")
NEEDS_JAX = ("snip", "movement")


def check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise InputError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if criterion in NEEDS_JAX and importlib.util.find_spec("jax") is None:
        raise InputError(f"criterion {criterion!r} needs JAX: pip install 'onnxprune[train]'")


def magnitude(weights: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Zero the smallest |w| of every group (row)."""
    return np.where(keep_mask(np.abs(weights), pattern), weights, 0).astype(weights.dtype)


def wanda(weights: np.ndarray, pattern: Pattern, column_sq: np.ndarray) -> np.ndarray:
    """Zero the smallest |w|·‖x‖ of every group (row); `column_sq` = Σx² per column
    (or per entry, when rows see different inputs)."""
    norms = np.sqrt(np.maximum(column_sq, 0))
    scores = np.abs(weights.astype(np.float64)) * (norms if norms.ndim == 2 else norms[None, :])
    return np.where(keep_mask(scores, pattern), weights, 0).astype(weights.dtype)


def snip(weights: np.ndarray, pattern: Pattern, grads: np.ndarray) -> np.ndarray:
    """Zero the smallest |w·∂L/∂w| of every group (row)."""
    scores = np.abs(weights.astype(np.float64) * grads)
    return np.where(keep_mask(scores, pattern), weights, 0).astype(weights.dtype)


def sparsegpt(weights: np.ndarray, hessian: np.ndarray, pattern: Pattern, block: int = 128,
              damp: float = 0.01, cross: np.ndarray | None = None) -> np.ndarray:
    """SparseGPT on one layer: rows are outputs, columns the reduction (groups of m
    consecutive columns); `hessian` is X̃ᵀX̃/n over the columns of the layer's inputs X̃.
    With `cross` = X̃ᵀX/n against the dense model's inputs X, the target is the dense
    layer's output W·X (errors of earlier sparsified layers are compensated): the
    weights are first refit to W' = W·crossᵀ·H⁻¹, then pruned."""
    work = weights.astype(np.float64)
    hinv, dead, inverse = _inverse_factor(hessian, damp)
    if cross is not None:
        work = (inverse @ cross @ work.T).T
    work[:, dead] = 0
    block = max(pattern.m, block - block % pattern.m) if pattern.structured else block
    cols = work.shape[1]
    for start in range(0, cols, block):
        end = min(start + block, cols)
        quantized, errors = _sparsify_block(work[:, start:end], hinv[start:end, start:end],
                                            pattern, start, end)
        work[:, start:end] = quantized
        work[:, end:] -= errors @ hinv[start:end, end:]
    return work.astype(weights.dtype)


def _inverse_factor(hessian: np.ndarray, damp: float):
    """Upper Cholesky factor of the dampened inverse Hessian (more damping if needed),
    the dead columns, and the inverse itself."""
    h = np.array(hessian, np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    mean = float(np.mean(np.diag(h)))
    for attempt in range(4):
        try:
            with fixed_blas():
                inverse = np.linalg.inv(h + np.eye(len(h)) * damp * 10 ** attempt * mean)
                return np.linalg.cholesky(inverse).T, dead, inverse
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("calibration Hessian is not positive definite")


def _sparsify_block(w: np.ndarray, hinv: np.ndarray, pattern: Pattern, start: int, end: int):
    """Prune one column block in order, spreading each column's error over the rest."""
    w = w.copy()
    diag = np.diag(hinv)
    drop = np.zeros(w.shape, bool)
    if not pattern.structured:
        per_row = int(np.floor(pattern.sparsity * end)) - int(np.floor(pattern.sparsity * start))
        drop = ~_keep_lowest_dropped(w ** 2 / diag[None, :] ** 2, per_row)
    quantized = np.zeros_like(w)
    errors = np.zeros_like(w)
    for i in range(w.shape[1]):
        if pattern.structured and i % pattern.m == 0:
            scores = w[:, i:i + pattern.m] ** 2 / diag[None, i:i + pattern.m] ** 2
            drop[:, i:i + pattern.m] = ~keep_mask(scores, Pattern(pattern.n, pattern.m, 0))
        column = np.where(drop[:, i], 0.0, w[:, i])
        quantized[:, i] = column
        error = (w[:, i] - column) / diag[i]
        w[:, i:] -= np.outer(error, hinv[i, i:])
        errors[:, i] = error
    return quantized, errors


def _keep_lowest_dropped(scores: np.ndarray, count: int) -> np.ndarray:
    """Keep mask that drops the `count` lowest scores of every row."""
    keep = np.ones(scores.shape, bool)
    if count > 0:
        order = np.argsort(scores, axis=1, kind="stable")
        np.put_along_axis(keep, order[:, :count], False, axis=1)
    return keep
