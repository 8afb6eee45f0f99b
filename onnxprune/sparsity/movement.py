"""`movement` for sparsify (the `train` extra): movement pruning (Sanh et al. 2020,
"Movement Pruning: Adaptive Sparsity by Fine-Tuning"), its hard variant with the
scores accumulated over a fixed number of distillation steps.

1. The magnitude pattern gives the student (the dense model needs no step: distilled
   toward itself, its loss and gradients are zero).
2. The student is distilled toward the dense model on the calibration data
   (`train/finetune.py`, `steps` steps, 100 by default) while, for every weight of the
   sparsified layers, S = −Σ_t w̃_t · ∂L/∂w_t accumulates: w̃_t is the student's value
   at step t, or the dense value where the start pattern holds the weight at zero
   (there the weight stays frozen and its gradient passes straight through).
3. Each layer's pattern is chosen from S instead of |w|: the weights moving away from
   zero are kept. The kept weights take their fine-tuned values (the literature
   keeps the fine-tuned weights), or their dense value where the start pattern had
   zeroed them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jax.numpy as jnp
import numpy as np
import optax
from onnx import ModelProto, numpy_helper

from ..train.finetune import FinetuneOptions, finetune_tracked
from .layers import Layer, WeightStore, effective, from_matrix, store_effective, to_matrix
from .pattern import Pattern, keep_mask
from .weight_criteria import magnitude

DEFAULT_STEPS = 100


def tracker(dense: dict[str, np.ndarray]) -> optax.GradientTransformation:
    """Gradients pass unchanged; the state accumulates −w̃·∂L/∂w per weight of
    `dense` (w̃: the current value, or the dense one where the current is zero)."""
    values = {name: jnp.asarray(value, jnp.float32) for name, value in dense.items()}

    def init(params):
        return {n: jnp.zeros_like(params[n]) for n in values if n in params}

    def update(grads, state, params=None):
        moved = {n: s - jnp.where(params[n] != 0, params[n], values[n]) * grads[n]
                 for n, s in state.items()}
        return grads, moved

    return optax.GradientTransformation(init, update)


def movement(weights: np.ndarray, pattern: Pattern, scores: np.ndarray) -> np.ndarray:
    """Zero the lowest movement scores of every group (row)."""
    return np.where(keep_mask(scores, pattern), weights, 0).astype(weights.dtype)


def _arrays(stream: Callable[[], Iterator[dict]]) -> dict[str, np.ndarray]:
    batches = list(stream())
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def _replaced(model: ModelProto, values: dict[str, np.ndarray]) -> ModelProto:
    """A copy of `model` with the initializers named in `values` replaced."""
    result = ModelProto()
    result.CopyFrom(model)
    for tensor in result.graph.initializer:
        if tensor.name in values:
            shape = tuple(tensor.dims)
            tensor.CopyFrom(numpy_helper.from_array(
                np.asarray(values[tensor.name]).reshape(shape), tensor.name))
    return result


def movement_scores(student: ModelProto, dense: ModelProto, layers: list[Layer],
                    stream: Callable[[], Iterator[dict]], steps: int | None,
                    minutes: float | None, seed: int
                    ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict]:
    """Per layer (by id) its movement scores and the weights to keep from, both in
    the layer's matrix view (layers whose weight does not train are left out), and
    the fine-tuning report."""
    stored = {t.name: numpy_helper.to_array(t) for t in dense.graph.initializer}
    names = {layer.weight for layer in layers if layer.weight in stored}
    options = FinetuneOptions(steps=steps if steps or minutes else DEFAULT_STEPS,
                              minutes=minutes, seed=seed)
    tuned, report, state = finetune_tracked(student, dense, _arrays(stream), options,
                                            tracker({n: stored[n] for n in names}))
    scored = _replaced(dense, {n: np.asarray(v) for n, v in state.items()})
    tuned_values = {t.name: numpy_helper.to_array(t) for t in tuned.graph.initializer}
    kept = _replaced(dense, {n: np.where(tuned_values[n] != 0, tuned_values[n], stored[n])
                             for n in state})
    score_store, kept_store = WeightStore(scored), WeightStore(kept)
    scores, values = {}, {}
    for layer in layers:
        if layer.weight in state:
            scores[id(layer)] = to_matrix(effective(layer, score_store), layer.axis)
            values[id(layer)] = to_matrix(effective(layer, kept_store), layer.axis)
    return scores, values, report.to_dict()


def by_movement(work: ModelProto, layers: list[Layer], pattern: Pattern,
                stream: Callable[[], Iterator[dict]],
                budget: tuple[int | None, float | None], seed: int
                ) -> tuple[dict[int, str], dict]:
    """Sparsify `work`'s layers by movement (module docstring), in place; returns the
    criterion used per layer and the fine-tuning report."""
    dense = ModelProto()
    dense.CopyFrom(work)
    store = WeightStore(work)
    for layer in layers:
        values = effective(layer, store)
        store_effective(layer, store, from_matrix(
            magnitude(to_matrix(values, layer.axis), pattern), values.shape, layer.axis))
    scores, kept, report = movement_scores(work, dense, layers, stream, *budget, seed)
    used = {}
    for layer in layers:
        if id(layer) not in scores:
            used[id(layer)] = "magnitude (its weight does not train)"
            continue
        shape = effective(layer, store).shape
        chosen = movement(kept[id(layer)], pattern, scores[id(layer)])
        store_effective(layer, store, from_matrix(chosen, shape, layer.axis))
        used[id(layer)] = "movement"
    return used, report
