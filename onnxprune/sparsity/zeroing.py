"""Zeroing the chosen layers' weights by a criterion: magnitude on the weights alone,
Wanda and SparseGPT on input statistics gathered wave by wave (their solves as tasks
of an executor), SNIP and movement on gradients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import ModelProto

from .. import calibrate
from ..distributed import InProcess
from ..errors import ModelError
from ..layerwise import solve_level
from ..moments import Moments
from ..threads import fixed_blas
from .layers import Layer, WeightStore, effective, from_matrix, store_effective, to_matrix
from .pattern import Pattern
from .statistics import measurable, measure
from .weight_criteria import magnitude, snip, sparsegpt, wanda

if TYPE_CHECKING:
    from ..distributed import Executor


def zero_weights(work: ModelProto, layers: list[Layer], pattern: Pattern, criterion: str,
                  calib, samples, batch_size, images, seeding: tuple, damp: float,
                  progress, executor: Executor | None = None) -> dict[int, str]:
    """Apply the criterion to every layer; returns the criterion used per layer
    (`seeding`: the seed and movement's fine-tuning budget; the Wanda or SparseGPT
    solves of a wave as tasks of `executor`)."""
    store, (seed, budget) = WeightStore(work), seeding
    used = {}
    if criterion == "magnitude":
        for layer in layers:
            rewrite(layer, store, lambda w: magnitude(w, pattern))
            used[id(layer)] = "magnitude"
        return used
    stream = calibrate.batches(calib, work, samples, batch_size, images)
    if criterion == "movement":
        from .movement import by_movement
        return by_movement(work, layers, pattern, stream, budget, seed)[0]
    if criterion == "snip":
        labels = calibrate.labels(calib, work, samples, images)
        return _snip(work, layers, pattern, (stream, labels), seed, store)
    gram = criterion == "sparsegpt"
    dense = ModelProto()
    dense.CopyFrom(work)
    for layer in layers:
        why = measurable(layer, gram)
        if why:
            rewrite(layer, store, lambda w: magnitude(w, pattern))
            used[id(layer)] = f"magnitude ({why})"
    data = [layer for layer in layers if id(layer) not in used]

    def update(wave: list[Layer], stats: dict) -> None:
        solved = solve_level(executor or InProcess(), _data_rule, wave, stats,
                             lambda layer: (to_matrix(effective(layer, store), layer.axis),
                                            layer.node), (criterion, pattern, damp))
        for layer, matrix in zip(wave, solved, strict=True):
            store_effective(layer, store, from_matrix(matrix, layer.shape, layer.axis))
            used[id(layer)] = criterion

    measure(work, data, stream, gram, update, seed, progress, dense)
    return used


def _snip(work: ModelProto, layers: list[Layer], pattern: Pattern, data, seed: int,
          store: WeightStore) -> dict[int, str]:
    """Zero by |w·∂L/∂w|, every layer's gradient from one pass over `data` (the
    stream and the labels)."""
    from .gradients import weight_gradients
    grads = weight_gradients(work, layers, data[0], seed, data[1])
    for layer in layers:
        matrix = to_matrix(grads[id(layer)], layer.axis)
        rewrite(layer, store, lambda w, g=matrix: snip(w, pattern, g))
    return {id(layer): "snip" for layer in layers}


def _data_rule(settings: tuple[str, Pattern, float], stats: Moments,
               task: tuple[np.ndarray, str]) -> np.ndarray:
    """One layer's Wanda mask or SparseGPT update of its matrix view (a task of the
    wave)."""
    criterion, pattern, damp = settings
    weights, node = task
    if criterion == "wanda":
        return wanda(weights, pattern, stats.total_sq)
    try:
        with fixed_blas():
            return sparsegpt(weights, stats.hessian, pattern, damp=damp,
                             cross=stats.cross_hessian)
    except np.linalg.LinAlgError as exc:
        raise ModelError(f"{node}: {exc}") from None


def rewrite(layer: Layer, store: WeightStore, rule) -> None:
    values = effective(layer, store)
    matrix = rule(to_matrix(values, layer.axis))
    store_effective(layer, store, from_matrix(matrix, values.shape, layer.axis))
