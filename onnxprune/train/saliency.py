"""Gradients that pruning criteria read, taken through the JAX translation: a loss per
sample from the model's own predictive distribution, differentiated with respect to
multiplicative masks or additive perturbations placed on chosen edges of the graph
(an edge is a tensor as one step reads it).

The loss of sample s (seeded by `seed` and the sample's index in the stream) adds, over
the float outputs y of the model:

- a classification-like output: of shape [N, C] with C ≥ 2, computed (through
  Identity, Reshape, Flatten, Squeeze) by Gemm, MatMul or Add (a linear head: y are
  logits z), LogSoftmax (z = y) or Softmax (z = log y): a pseudo-label c_s drawn from
  softmax(z) and the cross-entropy −log softmax(z)[c_s];
- any other float output: ⟨ε_s, y⟩ with ε_s ~ N(0, I) of y's shape, drawn per sample.
  Its gradient is that of ½‖y − stopgrad(y) − ε_s‖² (a unit-variance Gaussian
  likelihood with a label sampled from it), so E[(∂ℓ_s/∂θ)²] = ‖∂y/∂θ‖².
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import onnx

from .program import Edge, run
from .translate import Translated

if TYPE_CHECKING:
    from ..calibrate import Feeds


@dataclass(frozen=True)
class MaskTap:
    """A mask on one edge: the axes `axis … axis + span − 1` of the value read there
    (taken as one, row-major) are multiplied by the mask vector's entry `index[i]` at
    channel i (index `units`: an entry fixed at 1)."""

    edge: Edge
    axis: int
    span: int
    index: np.ndarray


LINEAR_HEADS = {"Gemm", "MatMul", "Add", "LogSoftmax"}
SHAPE_ONLY = {"Identity", "Reshape", "Flatten", "Squeeze"}


def output_kinds(translated: Translated) -> dict[str, str]:
    """Per graph output: "logits", "probabilities" (a Softmax) or "values"."""
    producer = {name: step for step in translated.program.steps for name in step.outputs}
    kinds = {}
    for name in translated.program.outputs:
        step = producer.get(name)
        while step is not None and step.op in SHAPE_ONLY:
            step = producer.get(step.inputs[0])
        op = step.op if step is not None else ""
        kinds[name] = ("probabilities" if op == "Softmax" else
                       "logits" if op in LINEAR_HEADS else "values")
    return kinds


def pseudo_loss(outputs: dict[str, jax.Array], key: jax.Array,
                kinds: dict[str, str] | None = None) -> jax.Array:
    """The loss of one sample from the model's own predictive distribution (module
    docstring); `kinds`: `output_kinds` (default: every output "values")."""
    total = jnp.zeros((), jnp.float32)
    for number, name in enumerate(sorted(outputs)):
        y = outputs[name]
        if not jnp.issubdtype(y.dtype, jnp.floating):
            continue
        draw = jax.random.fold_in(key, number)
        kind = (kinds or {}).get(name, "values")
        if y.ndim == 2 and y.shape[-1] >= 2 and kind != "values":
            z = jnp.log(jnp.maximum(y, jnp.finfo(y.dtype).tiny)) if kind == "probabilities" \
                else y
            label = jax.random.categorical(draw, jax.lax.stop_gradient(z), axis=-1)
            picked = jnp.take_along_axis(jax.nn.log_softmax(z, -1), label[:, None], -1)
            total = total - jnp.sum(picked.astype(jnp.float32))
        else:
            noise = jax.random.normal(draw, y.shape, jnp.float32)
            total = total + jnp.sum(noise * y.astype(jnp.float32))
    return total


def _masked(taps: list[MaskTap], units: int) -> Callable[[jax.Array], dict]:
    """mask vector → the run's tap functions that apply it."""
    by_edge: dict[Edge, list[MaskTap]] = {}
    for tap in taps:
        by_edge.setdefault(tap.edge, []).append(tap)

    def scale(value, tap: MaskTap, full):
        axis = tap.axis % value.ndim
        dims = value.shape[axis:axis + tap.span]
        count = int(np.prod(dims))
        index = np.where(tap.index < 0, units, tap.index)
        index = index[np.arange(count) % len(index)]  # batch-proportional axes repeat
        factor = full[index].reshape((1,) * axis + dims + (1,) * (value.ndim - axis - len(dims)))
        return value * factor.astype(value.dtype)

    def functions(mask: jax.Array) -> dict:
        full = jnp.concatenate([mask, jnp.ones(1, mask.dtype)])

        def applied(edge_taps):
            def fn(value):
                for tap in edge_taps:
                    value = scale(value, tap, full)
                return value
            return fn
        return {edge: applied(edge_taps) for edge, edge_taps in by_edge.items()}

    return functions


def _perturbed(deltas: dict[Edge, jax.Array]) -> dict:
    return {edge: (lambda value, d=delta: value + d.astype(value.dtype))
            for edge, delta in deltas.items()}


def _sample_loss(translated: Translated, taps_of: Callable[[object], dict], seed: int,
                 per_sample: bool = True):
    """(variables, params, sample, index) → the loss of one sample (or, not
    `per_sample`, of one whole batch); `taps_of(variables)` places the variables on the
    graph."""
    program, options, key = translated.program, translated.options, jax.random.PRNGKey(seed)
    kinds = output_kinds(translated)

    def loss(variables, params, sample, index):
        inputs = {name: value[None] if per_sample else value for name, value in sample.items()}
        outputs = run(program, params, inputs, None, options, taps_of(variables))
        return pseudo_loss(outputs, jax.random.fold_in(key, index), kinds)
    return loss


def per_sample(model: onnx.ModelProto) -> bool:
    """Whether the model runs one sample at a time: no input fixes a batch above 1 (a
    model that does is differentiated one calibration batch at a time)."""
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 1:
            return False
    return True


def _indexed(batches: Iterable[Feeds], single: bool) -> Iterator[tuple[Feeds, np.ndarray]]:
    """Each batch with the stream positions of its samples, or (not `single`) as one
    sample numbered by the batch."""
    seen = 0
    for number, feeds in enumerate(batches):
        if not single:
            yield {name: value[None] for name, value in feeds.items()}, \
                np.array([number], np.uint32)
            continue
        count = len(next(iter(feeds.values())))
        yield feeds, np.arange(seen, seen + count, dtype=np.uint32)
        seen += count


def mask_gradients(translated: Translated, batches: Iterable[Feeds], taps: list[MaskTap],
                   units: int, seed: int, single: bool = True) -> Iterator[np.ndarray]:
    """Per batch, [samples, units]: ∂ℓ_s/∂m_u at m = 1 for every sample s (not
    `single`: [1, units], the batch's loss)."""
    loss = _sample_loss(translated, _masked(taps, units), seed, single)
    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, None, 0, 0)))
    ones = jnp.ones(units, jnp.float32)
    for feeds, index in _indexed(batches, single):
        yield np.asarray(grads(ones, translated.params, feeds, index), np.float64)


def edge_gradients(translated: Translated, batches: Iterable[Feeds],
                   shapes: dict[Edge, tuple[int, ...]], seed: int, single: bool = True
                   ) -> dict[Edge, np.ndarray]:
    """∂L/∂v of the value v read on each edge, L = Σ_s ℓ_s over every sample."""
    loss = _sample_loss(translated, _perturbed, seed, single)

    def batch_loss(deltas, params, feeds, index):
        return jnp.sum(jax.vmap(loss, in_axes=(None, None, 0, 0))(deltas, params, feeds, index))

    grads = jax.jit(jax.grad(batch_loss))
    zeros = {edge: jnp.zeros(shape, jnp.float32) for edge, shape in shapes.items()}
    total = {edge: np.zeros(shape, np.float64) for edge, shape in shapes.items()}
    for feeds, index in _indexed(batches, single):
        for edge, grad in grads(zeros, translated.params, feeds, index).items():
            total[edge] += np.asarray(grad, np.float64)
    return total


def readers(translated: Translated, tensor: str) -> list[Edge]:
    """Every edge on which the program reads `tensor`."""
    return [(step.outputs[0], tensor) for step in translated.program.steps
            if tensor in step.inputs]
