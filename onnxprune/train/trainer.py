"""The jitted pieces of distillation: one optimizer step (teacher forward, student
forward and backward, Adam update, an optional proximal step, masks re-applied) and
the validation terms of a batch. The optimizer is optax's Adam."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import losses
from .compile import jit
from .translate import Translated
from .weights import Weights


@dataclass(frozen=True)
class Objective:
    """What the student is fit to: the teacher's float outputs under `loss` (with
    `temperature`), plus the matched intermediate tensors `hidden`."""

    loss: str
    temperature: float
    outputs: tuple[str, ...]
    hidden: tuple[str, ...] = ()


def student_params(trainable: dict, dtypes: dict, frozen: dict) -> dict:
    """Every parameter of the student: trainable ones cast to their stored dtype."""
    return {**frozen, **{n: v.astype(dtypes[n]) for n, v in trainable.items()}}


def make_step(student: Translated, teacher: Translated, weights: Weights,
              objective: Objective, optimizer: optax.GradientTransformation,
              project: Callable[[dict], dict] | None = None) -> Callable:
    """`step(trainable, state, feeds, labels, factor) -> (trainable, state, loss)`,
    jitted; Adam's update is scaled by `factor` (the learning-rate schedule's), and
    `project(trainable, factor)` (a proximal step) follows it, before the masks."""
    names = objective.outputs + objective.hidden
    run_student, run_teacher = student.function(names), teacher.function(names)
    teacher_params = {n: jnp.asarray(v) for n, v in teacher.params.items()}
    frozen = {n: jnp.asarray(v) for n, v in weights.frozen.items()}
    masks = {n: jnp.asarray(m) for n, m in weights.masks.items()}

    def objective_of(trainable, frozen, teacher_params, feeds, labels):
        mine = run_student(student_params(trainable, weights.dtypes, frozen), feeds)
        theirs = jax.lax.stop_gradient(run_teacher(teacher_params, feeds))
        outputs = {n: theirs[n] for n in objective.outputs}
        value = losses.total(losses.output_terms(objective.loss, mine, outputs,
                                                 objective.temperature))
        value = value + losses.hidden(mine, theirs, objective.hidden)
        return value + losses.label_loss(mine[objective.outputs[0]], labels)

    @jit
    def step(trainable, state, frozen, teacher_params, feeds, labels, factor):
        value, grads = jax.value_and_grad(objective_of)(trainable, frozen, teacher_params,
                                                        feeds, labels)
        updates, state = optimizer.update(grads, state, trainable)
        updates = jax.tree_util.tree_map(lambda u: u * factor, updates)
        trainable = optax.apply_updates(trainable, updates)
        if project is not None:
            trainable = project(trainable, factor)
        trainable = {n: jnp.where(masks[n], v, 0.0) if n in masks else v
                     for n, v in trainable.items()}
        return trainable, state, value

    return lambda trainable, state, feeds, labels, factor=1.0: step(
        trainable, state, frozen, teacher_params, feeds, labels,
        jnp.asarray(factor, jnp.float32))


def make_evaluator(student: Translated, weights: Weights, objective: Objective) -> Callable:
    """`terms(trainable, feeds, teacher_outputs) -> {output: (num, den)}`, jitted."""
    run_student = student.function(objective.outputs)
    frozen = {n: jnp.asarray(v) for n, v in weights.frozen.items()}

    @jit
    def terms(trainable, frozen, feeds, teacher_outputs):
        mine = run_student(student_params(trainable, weights.dtypes, frozen), feeds)
        return losses.output_terms(objective.loss, mine, teacher_outputs,
                                   objective.temperature)

    return lambda trainable, feeds, teacher_outputs: terms(trainable, frozen, feeds,
                                                           teacher_outputs)


def validation_error(evaluate: Callable, trainable: Any, batches: list[tuple[dict, dict]]
                     ) -> float:
    """The loss over every validation batch: per output, the sums' ratio; summed."""
    sums: dict[str, list[float]] = {}
    for feeds, teacher_outputs in batches:
        for name, (num, den) in evaluate(trainable, feeds, teacher_outputs).items():
            total = sums.setdefault(name, [0.0, 0.0])
            total[0] += float(num)
            total[1] += float(den)
    return float(sum(num / den for num, den in sums.values()))


def teacher_outputs(teacher: Translated, outputs: tuple[str, ...], feeds: list[dict]
                    ) -> list[dict]:
    """The teacher's outputs for each batch, as host arrays."""
    run = jit(teacher.function(outputs))
    return [{n: np.asarray(v) for n, v in run(teacher.params, batch).items()}
            for batch in feeds]
