"""Calibration statistics of the inputs each layer multiplies, in matrix-view
column order: Σx² per column (Wanda) and the Gram matrix XᵀX (SparseGPT).

Layers are measured in *waves*: a wave holds the pending layers whose input does
not depend on another pending layer, so each layer is measured on the model with
every layer before it already sparsified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto

from ..errors import InputError, first_line
from ..ops import SparseLayer, family_of
from .layers import Layer


@dataclass
class InputStats:
    """Running sums over the rows of a layer's input matrix X."""

    count: int = 0
    column_sq: np.ndarray | None = None  # per column, or per entry [rows, columns]
    gram: np.ndarray | None = None
    cross: np.ndarray | None = None  # X̃ᵀX: these inputs against the dense model's

    def add_sq(self, column_sq: np.ndarray, count: int) -> None:
        self.column_sq = column_sq if self.column_sq is None else self.column_sq + column_sq
        self.count += count

    def add(self, rows: np.ndarray, gram: bool, dense_rows: np.ndarray | None = None) -> None:
        """Add one batch (products in float32, sums across batches in float64)."""
        rows = np.asarray(rows, np.float32)
        sq = np.square(rows, dtype=np.float64).sum(0)
        self.column_sq = sq if self.column_sq is None else self.column_sq + sq
        if gram:
            product = (rows.T @ rows).astype(np.float64)
            self.gram = product if self.gram is None else self.gram + product
        if dense_rows is not None:
            product = (rows.T @ np.asarray(dense_rows, np.float32)).astype(np.float64)
            self.cross = product if self.cross is None else self.cross + product
        self.count += len(rows)

    @property
    def hessian(self) -> np.ndarray:
        return self.gram / max(self.count, 1)

    @property
    def cross_hessian(self) -> np.ndarray | None:
        return None if self.cross is None else self.cross / max(self.count, 1)


def _sparse(layer: Layer) -> SparseLayer:
    return family_of(layer.op).sparse


def measurable(layer: Layer, gram: bool) -> str | None:
    """Why a layer's input cannot be measured (its criterion falls back to magnitude)."""
    return _sparse(layer).unmeasurable(layer, gram)


def input_rows(layer: Layer, value: np.ndarray, seed: int) -> np.ndarray:
    """The layer's input as rows of its matrix view's columns."""
    return _sparse(layer).input_rows(layer, value, seed)


def waves(layers: list[Layer], model: ModelProto) -> list[list[Layer]]:
    """Layers in waves: each wave depends only on layers of earlier waves."""
    producers = {o: n for n in model.graph.node for o in n.output}
    names = {layer.node for layer in layers}
    upstream = {id(layer): _upstream(layer.activation, producers, names) for layer in layers}
    pending, found = list(layers), []
    while pending:
        blocked = {layer.node for layer in pending}
        wave = [layer for layer in pending if not upstream[id(layer)] & blocked]
        found.append(wave)
        pending = [layer for layer in pending if layer not in wave]
    return found


def _upstream(tensor: str, producers: dict, names: set[str]) -> set[str]:
    """Names of the layer nodes the tensor is computed from."""
    seen, stack, found = set(), [tensor], set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.name in names:
            found.add(node.name)
        stack.extend(node.input)
    return found


def measure(model: ModelProto, wave: list[Layer], stream: Callable[[], Iterator[dict]],
            gram: bool, seed: int = 0, progress: Callable[[int], None] | None = None,
            dense: ModelProto | None = None) -> dict[int, InputStats]:
    """Statistics of every layer of a wave over the calibration stream; with `gram` and
    the `dense` model, also the cross products of its inputs with the dense model's."""
    names = sorted({layer.activation for layer in wave}
                   - {value.name for value in model.graph.input})
    fetch = _fetcher(model, names)
    fetch_dense = _fetcher(dense, names) if gram and dense is not None else None
    shared = {_input_key(layer): layer for layer in wave}  # e.g. Q, K, V read one input
    stats = {key: InputStats() for key in shared}
    for number, feeds in enumerate(stream()):
        values = fetch(feeds)
        reference = fetch_dense(feeds) if fetch_dense else None
        for key, layer in shared.items():
            _accumulate(stats[key], layer, values[layer.activation], gram, seed + number,
                        reference[layer.activation] if reference else None)
        if progress:
            progress(len(next(iter(feeds.values()))))
    return {id(layer): stats[_input_key(layer)] for layer in wave}


def _input_key(layer: Layer) -> tuple:
    """Layers with equal keys see the same input matrix."""
    return _sparse(layer).input_key(layer)


def _fetcher(model: ModelProto, names: list[str]) -> Callable[[dict], dict]:
    """feeds → the feeds and the named tensors of one run."""
    from ..targets.onnxruntime import session

    sess = session(model, outputs=names) if names else None

    def fetch(feeds: dict) -> dict:
        values = dict(feeds)
        try:
            values.update(zip(names, sess.run(names, feeds), strict=True) if sess else {})
        except Exception as exc:
            raise InputError(f"the model does not run on the calibration data: "
                             f"{first_line(exc)}") from None
        return values

    return fetch


def _accumulate(stats: InputStats, layer: Layer, value: np.ndarray, gram: bool, seed: int,
                dense_value: np.ndarray | None) -> None:
    entry_sq = _sparse(layer).entry_sq
    if entry_sq is not None and not gram:
        stats.add_sq(*entry_sq(layer, value))
        return
    dense_rows = None if dense_value is None else input_rows(layer, dense_value, seed)
    stats.add(input_rows(layer, value, seed), gram, dense_rows)
