"""Calibration statistics of the inputs each layer multiplies, in matrix-view
column order: Σx² per column (Wanda) and the Gram matrix XᵀX (SparseGPT).

Layers are measured in *waves*, the levels of the layer-wise walk (`layerwise.py`): a
wave holds the pending layers whose input does not depend on another pending layer, so
each layer is measured on the model with every layer before it already sparsified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from onnx import ModelProto

from ..layerwise import levels, model_prefixes, walk
from ..moments import Moments
from ..ops import SparseLayer, family_of
from .layers import Layer


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
    names = {layer.node for layer in layers}
    nodes = [(node.input, node.output, node.name in names) for node in model.graph.node]
    return levels(nodes, layers, lambda layer: [layer.activation])


def measure(model: ModelProto, layers: list[Layer], stream: Callable[[], Iterator[dict]],
            gram: bool, update: Callable[[list[Layer], dict[int, Moments]], None],
            seed: int = 0, progress: Callable[[int], None] | None = None,
            dense: ModelProto | None = None) -> None:
    """Measure the layers' inputs wave by wave on `model`, as `update` changes it after
    each wave: Σx² per column, with `gram` the Gram matrix and, given the `dense` model,
    the cross products of the inputs with the dense model's."""

    def add(stats: Moments, layer: Layer, values: dict, reference: dict | None,
            number: int) -> None:
        _accumulate(stats, layer, values[layer.activation], gram, seed + number,
                    reference[layer.activation] if reference else None)

    walk(waves(layers, model), stream, model_prefixes(model, dense if gram else None),
         lambda layer: layer.activation, _input_key, add, update, progress)


def _input_key(layer: Layer) -> tuple:
    """Layers with equal keys see the same input matrix."""
    return _sparse(layer).input_key(layer)


def _accumulate(stats: Moments, layer: Layer, value: np.ndarray, gram: bool, seed: int,
                dense_value: np.ndarray | None) -> None:
    entry_sq = _sparse(layer).entry_sq
    if entry_sq is not None and not gram:
        stats.add_sq(*entry_sq(layer, value))
        return
    dense_rows = None if dense_value is None else input_rows(layer, dense_value, seed)
    stats.add_rows(input_rows(layer, value, seed), gram, dense_rows)
