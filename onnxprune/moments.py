"""Running statistics of the values entering a layer: the one class that every pass
measuring activations fills (the calibration criteria and bias compensation, the
least-squares refit, Wanda and SparseGPT).

The values are seen as a matrix X with one row per sample and position and one column
per channel (or per column of a layer's matrix view). Each pass adds batches in the
order of the calibration stream; sums across batches are kept in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Moments:
    """Running sums over the rows of X: per column Σx, Σ|x|, Σx² and the count of zeros;
    the Gram matrix XᵀX, and XᵀX_d against the dense model's rows X_d, when asked for."""

    count: int = 0
    total: np.ndarray | None = None
    total_abs: np.ndarray | None = None
    total_sq: np.ndarray | None = None  # per column, or per entry [rows, columns]
    zeros: np.ndarray | None = None
    gram: np.ndarray | None = None
    cross: np.ndarray | None = None
    held_out: Moments | None = None  # the same sums over held-out batches only

    def add_channels(self, values: np.ndarray, axis: int) -> None:
        """One batch of a tensor whose channels lie on `axis`: per-channel sums, in
        float64 throughout."""
        data = np.moveaxis(np.asarray(values, np.float64), axis, 0).reshape(
            values.shape[axis], -1)
        sums = (data.sum(1), np.abs(data).sum(1), (data * data).sum(1), (data == 0).sum(1))
        if self.total is None:
            self.total, self.total_abs, self.total_sq, self.zeros = sums
        else:
            self.total = self.total + sums[0]
            self.total_abs = self.total_abs + sums[1]
            self.total_sq = self.total_sq + sums[2]
            self.zeros = self.zeros + sums[3]
        self.count += data.shape[1]

    def add_rows(self, rows: np.ndarray, gram: bool = False,
                 dense_rows: np.ndarray | None = None, dense_first: bool = False) -> None:
        """One batch of rows: Σx² per column, and the Gram matrix when `gram` and the
        cross products with `dense_rows` when given (products in float32).
        `dense_first`: the cross products are computed as (X_dᵀX)ᵀ, which rounds
        differently from XᵀX_d (each caller keeps the order its results were made in)."""
        rows = np.asarray(rows, np.float32)
        self.add_sq(np.square(rows, dtype=np.float64).sum(0), len(rows))
        if gram:
            self.gram = _summed(self.gram, rows.T @ rows)
        if dense_rows is not None:
            dense_rows = np.asarray(dense_rows, np.float32)
            self.cross = _summed(self.cross, (dense_rows.T @ rows).T if dense_first
                                 else rows.T @ dense_rows)

    def add_sq(self, total_sq: np.ndarray, count: int) -> None:
        """One batch given as its Σx² (per column or per entry) over `count` rows."""
        self.total_sq = total_sq if self.total_sq is None else self.total_sq + total_sq
        self.count += count

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def mean_abs(self) -> np.ndarray:
        return self.total_abs / max(self.count, 1)

    @property
    def mean_sq(self) -> np.ndarray:
        return self.total_sq / max(self.count, 1)

    @property
    def variance(self) -> np.ndarray:
        return np.maximum(self.mean_sq - self.mean ** 2, 0.0)

    @property
    def apoz(self) -> np.ndarray:
        """Average percentage of zeros, per channel."""
        return self.zeros / max(self.count, 1)

    @property
    def hessian(self) -> np.ndarray:
        """XᵀX / n."""
        return self.gram / max(self.count, 1)

    @property
    def cross_hessian(self) -> np.ndarray | None:
        """XᵀX_d / n (None without dense rows)."""
        return None if self.cross is None else self.cross / max(self.count, 1)


def _summed(total: np.ndarray | None, product: np.ndarray) -> np.ndarray:
    """A float32 product added to a float64 sum."""
    product = product.astype(np.float64)
    return product if total is None else total + product
