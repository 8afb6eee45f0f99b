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

With class labels (one integer per sample of the stream), the first classification-
like output (by name) takes the sample's own label c_s instead of a drawn one: the
supervised cross-entropy; the other outputs keep their terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import onnx

from ..errors import InputError
from .compile import jit
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


def classified(kind: str, value: jax.Array) -> bool:
    """Whether an output of this kind and value is classification-like."""
    return value.ndim == 2 and value.shape[-1] >= 2 and kind != "values"


def pseudo_loss(outputs: dict[str, jax.Array], key: jax.Array,
                kinds: dict[str, str] | None = None,
                labels: tuple[str, jax.Array] | None = None) -> jax.Array:
    """The loss of one sample from the model's own predictive distribution (module
    docstring); `kinds`: `output_kinds` (default: every output "values"); `labels`:
    (output, class indices) that replace that output's drawn labels."""
    total = jnp.zeros((), jnp.float32)
    for number, name in enumerate(sorted(outputs)):
        y = outputs[name]
        if not jnp.issubdtype(y.dtype, jnp.floating):
            continue
        draw = jax.random.fold_in(key, number)
        kind = (kinds or {}).get(name, "values")
        if classified(kind, y):
            z = jnp.log(jnp.maximum(y, jnp.finfo(y.dtype).tiny)) if kind == "probabilities" \
                else y
            label = labels[1] if labels is not None and labels[0] == name else \
                jax.random.categorical(draw, jax.lax.stop_gradient(z), axis=-1)
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
                 per_sample: bool = True, labeled: str | None = None):
    """(variables, params, sample, index, label) → the loss of one sample (or, not
    `per_sample`, of one whole batch); `taps_of(variables)` places the variables on the
    graph; `labeled`: the output the labels are for (None: no labels)."""
    program, options, key = translated.program, translated.options, jax.random.PRNGKey(seed)
    kinds = output_kinds(translated)

    def loss(variables, params, sample, index, label):
        inputs = {name: value[None] if per_sample else value for name, value in sample.items()}
        outputs = run(program, params, inputs, None, options, taps_of(variables))
        given = None if labeled is None else (labeled, label[None] if per_sample else label)
        return pseudo_loss(outputs, jax.random.fold_in(key, index), kinds, given)
    return loss


def labeled_output(translated: Translated, feeds: Feeds, labels: np.ndarray | None
                   ) -> str | None:
    """The output the labels are for: the first classification-like one by name, whose
    class count the labels must fit; None without labels."""
    if labels is None:
        return None
    kinds = output_kinds(translated)
    shapes = jax.eval_shape(translated.function(), translated.params, feeds)
    names = [n for n in sorted(shapes) if jnp.issubdtype(shapes[n].dtype, jnp.floating)
             and classified(kinds.get(n, "values"), shapes[n])]
    if not names:
        raise InputError("calibration labels need a classification output ([N, classes] "
                         "logits or probabilities); the model has none")
    classes = shapes[names[0]].shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise InputError(f"calibration labels must be class indices in [0, {classes}) for "
                         f"output {names[0]!r}; they span [{labels.min()}, {labels.max()}]")
    return names[0]


def per_sample(model: onnx.ModelProto) -> bool:
    """Whether the model runs one sample at a time: no input fixes a batch above 1 (a
    model that does is differentiated one calibration batch at a time)."""
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 1:
            return False
    return True


def _indexed(batches: Iterable[Feeds], single: bool, labels: np.ndarray | None
             ) -> Iterator[tuple[Feeds, np.ndarray, np.ndarray]]:
    """Each batch with the stream positions of its samples and their labels (zeros
    without), or (not `single`) as one sample numbered by the batch."""
    seen = 0
    for number, feeds in enumerate(batches):
        count = len(next(iter(feeds.values())))
        label = np.zeros(count, np.int32) if labels is None else \
            np.asarray(labels[seen:seen + count], np.int32)
        if len(label) != count:
            raise InputError(f"calibration labels: {len(labels)} for more samples")
        if not single:
            yield {name: value[None] for name, value in feeds.items()}, \
                np.array([number], np.uint32), label[None]
        else:
            yield feeds, np.arange(seen, seen + count, dtype=np.uint32), label
        seen += count


def mask_gradients(translated: Translated, batches: Iterable[Feeds], taps: list[MaskTap],
                   units: int, seed: int, single: bool = True,
                   labels: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Per batch, [samples, units]: ∂ℓ_s/∂m_u at m = 1 for every sample s (not
    `single`: [1, units], the batch's loss); `labels`: class labels per sample."""
    stream = _indexed(batches, single, labels)
    first = next(stream, None)
    if first is None:
        return
    labeled = labeled_output(translated, _one(first[0], single), labels)
    loss = _sample_loss(translated, _masked(taps, units), seed, single, labeled)
    grads = jit(jax.vmap(jax.grad(loss), in_axes=(None, None, 0, 0, 0)))
    ones = jnp.ones(units, jnp.float32)
    for feeds, index, label in chain([first], stream):
        yield np.asarray(grads(ones, translated.params, feeds, index, label), np.float64)


def _one(feeds: Feeds, single: bool) -> Feeds:
    """A batch as the model reads it (not `single`: the batch, unwrapped)."""
    return {n: v[:1] if single else v[0] for n, v in feeds.items()}


def edge_gradients(translated: Translated, batches: Iterable[Feeds],
                   shapes: dict[Edge, tuple[int, ...]], seed: int, single: bool = True,
                   labels: np.ndarray | None = None) -> dict[Edge, np.ndarray]:
    """∂L/∂v of the value v read on each edge, L = Σ_s ℓ_s over every sample;
    `labels`: class labels per sample."""
    stream = _indexed(batches, single, labels)
    first = next(stream, None)
    labeled = labeled_output(translated, _one(first[0], single), labels) \
        if first is not None else None
    loss = _sample_loss(translated, _perturbed, seed, single, labeled)

    def batch_loss(deltas, params, feeds, index, label):
        return jnp.sum(jax.vmap(loss, in_axes=(None, None, 0, 0, 0))(deltas, params, feeds,
                                                                     index, label))

    grads = jit(jax.grad(batch_loss))
    zeros = {edge: jnp.zeros(shape, jnp.float32) for edge, shape in shapes.items()}
    total = {edge: np.zeros(shape, np.float64) for edge, shape in shapes.items()}
    for feeds, index, label in chain([first], stream) if first is not None else ():
        for edge, grad in grads(zeros, translated.params, feeds, index, label).items():
            total[edge] += np.asarray(grad, np.float64)
    return total


def readers(translated: Translated, tensor: str) -> list[Edge]:
    """Every edge on which the program reads `tensor`."""
    return [(step.outputs[0], tensor) for step in translated.program.steps
            if tensor in step.inputs]
