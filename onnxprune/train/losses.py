"""Distillation losses between the student's outputs s and the teacher's t.

Each loss is, per float output, a ratio num/den of sums over the batch, so that the
validation error over many batches is the same ratio of the sums over all batches;
the loss is the sum of the ratios over the outputs. Rows are the vectors along an
output's last axis.

- `mse`: ‖s − t‖² / ‖t‖², the squared relative L2 error;
- `kl`: T² · the mean over rows of KL(softmax(t/T) ‖ softmax(s/T)), temperature T;
- `cosine`: the mean over rows of 1 − cos(s, t).

`--match-hidden` adds the mean over the matched intermediate tensors of their `mse`
(relative squared error). Labels add the mean cross-entropy of the first output's
rows against integer class indices, or the `mse` of the first output against float
targets.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOSSES = ("mse", "kl", "cosine")
EPS = 1e-12
Terms = tuple[jax.Array, jax.Array]


def mse(student: jax.Array, teacher: jax.Array, temperature: float) -> Terms:
    del temperature
    diff = (student - teacher).astype(jnp.float32)
    return jnp.sum(diff * diff), jnp.sum(jnp.square(teacher.astype(jnp.float32))) + EPS


def kl(student: jax.Array, teacher: jax.Array, temperature: float) -> Terms:
    s, t = _rows(student) / temperature, _rows(teacher) / temperature
    log_p, log_q = jax.nn.log_softmax(t), jax.nn.log_softmax(s)
    per_row = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
    return temperature ** 2 * jnp.sum(per_row), jnp.asarray(float(len(per_row)))


def cosine(student: jax.Array, teacher: jax.Array, temperature: float) -> Terms:
    del temperature
    s, t = _rows(student), _rows(teacher)
    cos = jnp.sum(s * t, axis=-1) / (
        jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1) + EPS)
    return jnp.sum(1.0 - cos), jnp.asarray(float(len(cos)))


TERMS: dict[str, Callable[[jax.Array, jax.Array, float], Terms]] = {
    "mse": mse, "kl": kl, "cosine": cosine}


def _rows(value: jax.Array) -> jax.Array:
    value = value.astype(jnp.float32)
    return value.reshape(1, -1) if value.ndim == 0 else value.reshape(-1, value.shape[-1])


def output_terms(kind: str, student: dict, teacher: dict, temperature: float
                 ) -> dict[str, Terms]:
    """(num, den) of the loss for each output the teacher gives."""
    return {name: TERMS[kind](student[name], value, temperature)
            for name, value in teacher.items()}


def total(terms: dict[str, Terms]) -> jax.Array:
    """The loss: the sum over outputs of num/den."""
    return sum(num / den for num, den in terms.values())


def hidden(student: dict, teacher: dict, names: tuple[str, ...]) -> jax.Array:
    """The mean relative squared error of the matched intermediate tensors."""
    if not names:
        return jnp.asarray(0.0)
    errors = [jnp.divide(*mse(student[n], teacher[n], 1.0)) for n in names]
    return sum(errors) / len(names)


def label_loss(output: jax.Array, labels: jax.Array | None) -> jax.Array:
    """Cross-entropy against class indices, or mse against float targets."""
    if labels is None:
        return jnp.asarray(0.0)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        logits = jax.nn.log_softmax(output.astype(jnp.float32).reshape(len(labels), -1))
        return -jnp.mean(jnp.take_along_axis(logits, labels.reshape(-1, 1), axis=1))
    return jnp.divide(*mse(output, labels.reshape(output.shape), 1.0))
