"""Recovery fine-tuning by distillation: the student (a pruned or sparsified model)
is fit to the teacher (the dense model) on unlabeled data, keeping its structure and
every zero, and the weights best on held-out validation samples are written back.

    load both ─► data (check, split) ─► translate and check parity ─► loop (Adam
    steps, validation, early stopping) ─► student with new values ─► verify

With a group lasso (`lasso.py`) every step ends with its proximal shrinkage, so whole
units of the dependency graph reach exact zeros for `prune --criterion zero`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax
from onnx import ModelProto

from .. import model as model_io
from ..errors import InputError
from ..images import ImageOptions
from ..verify import check_written
from . import augment as augmentation
from . import data as distill_data
from . import lasso
from .loop import LR_SCHEDULES, Budget, History, lr_factor, run_loop
from .losses import LOSSES
from .parity import check_translation
from .report import FinetuneReport, finetune_report
from .trainer import Objective, make_evaluator, make_step, teacher_outputs, validation_error
from .translate import Translated
from .weights import Weights, check_kept, split_weights, written

DEFAULT_STEPS = 500


@dataclass(frozen=True)
class FinetuneOptions:
    """How to fine-tune: a budget of `steps` and/or `minutes` (default 500 steps),
    Adam's learning rate `lr` (held, or decayed to 0 over the budget along a cosine
    with `lr_schedule="cosine"`), `batch_size`, the `loss` (mse, kl, cosine) and its
    `temperature` (kl), `match_hidden`, the validation fraction, augmentations, the
    seed; validation every `eval_every` steps, stopping after `patience` validations
    without improvement; `group_lasso` λ > 0 adds the group lasso of `lasso.py` (and
    validation measures the penalized objective). `clock` reads seconds (for
    `minutes`); `progress(loss)` is called after every step."""

    steps: int | None = None
    minutes: float | None = None
    lr: float = 1e-4
    lr_schedule: str = "constant"
    batch_size: int = 16
    loss: str = "mse"
    temperature: float = 1.0
    match_hidden: bool = False
    val_fraction: float = 0.2
    augment: tuple[str, ...] = ()
    seed: int = 0
    eval_every: int = 25
    patience: int = 8
    group_lasso: float = 0.0
    images: ImageOptions | None = None
    clock: Callable[[], float] = time.monotonic
    progress: Callable[[float], None] | None = None

    def __post_init__(self) -> None:
        if self.steps is None and self.minutes is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS)
        checks = [(self.steps is None or self.steps >= 1, f"--steps must be at least 1, got "
                   f"{self.steps}"),
                  (self.minutes is None or self.minutes > 0, "--minutes must be positive"),
                  (self.lr > 0 and np.isfinite(self.lr), "--lr must be a positive number"),
                  (self.lr_schedule in LR_SCHEDULES, f"--lr-schedule "
                   f"{self.lr_schedule!r}: expected one of {', '.join(LR_SCHEDULES)}"),
                  (self.batch_size >= 1, "--batch-size must be at least 1"),
                  (self.loss in LOSSES, f"--loss {self.loss!r}: expected one of "
                   f"{', '.join(LOSSES)}"),
                  (self.temperature > 0, "--temperature must be positive"),
                  (0.0 < self.val_fraction < 1.0, "--val-fraction must be in (0, 1)"),
                  (self.eval_every >= 1 and self.patience >= 1,
                   "--eval-every and --patience must be at least 1"),
                  (self.group_lasso >= 0 and np.isfinite(self.group_lasso),
                   "--group-lasso must be a number at least 0")]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        object.__setattr__(self, "augment", augmentation.parse(",".join(self.augment)))

    @property
    def budget(self) -> Budget:
        return Budget(self.steps, self.minutes, self.eval_every, self.patience)


def finetune(student: ModelProto | str | os.PathLike, teacher: ModelProto | str | os.PathLike,
             data: distill_data.Source, options: FinetuneOptions | None = None
             ) -> tuple[ModelProto, FinetuneReport]:
    """Distill `student` toward `teacher` on `data` (an .npz path, a folder of them or
    of images, or a dict of arrays); returns the verified model and its report."""
    tuned, report, _ = finetune_tracked(student, teacher, data, options)
    return tuned, report


def finetune_tracked(student: ModelProto | str | os.PathLike,
                     teacher: ModelProto | str | os.PathLike, data: distill_data.Source,
                     options: FinetuneOptions | None = None,
                     track: optax.GradientTransformation | None = None
                     ) -> tuple[ModelProto, FinetuneReport, Any]:
    """`finetune`, with `track` (a transformation that passes the gradients through
    unchanged) run before Adam on every step; returns its final state too (None
    without)."""
    options = options or FinetuneOptions()
    start = time.perf_counter()
    mine, theirs = _loaded(student), _loaded(teacher)
    samples = distill_data.load(data, mine, theirs, options.val_fraction, options.seed,
                                options.images)
    scales = augmentation.image_inputs(samples.feeds(samples.train[:4096]), options.augment)
    size, fixed = distill_data.batch_size([mine, theirs], options.batch_size,
                                          len(samples.train))
    first = samples.feeds(samples.train[:size])
    pair = translated_pair(mine, theirs, first)
    weights = split_weights(mine, pair[0].params)
    objective = Objective(options.loss, options.temperature, float_outputs(*pair, first),
                          matched_hidden(*pair, first) if options.match_hidden else ())
    val = _validation(pair[1], objective, samples, size, fixed)
    coupling = _coupling(mine, weights, options.group_lasso)
    best, history, tracked = _train(pair, weights, objective, samples, (size, scales), val,
                                    options, coupling, track)
    tuned = written(mine, weights, best) if history.best_step else mine
    checks = check_kept(mine, tuned)
    check_written(tuned, val[0][0], source=mine)
    checks += ["onnx.checker (full)", "strict shape inference", "onnxruntime run"]
    lasso_units = None if coupling is None else (
        coupling.units, lasso.zero_units(coupling, best), coupling.groups)
    return tuned, finetune_report(options, objective, samples, weights, history, checks,
                                  time.perf_counter() - start, lasso_units), tracked


def _coupling(student: ModelProto, weights: Weights, strength: float
              ) -> lasso.Coupled | None:
    """The group lasso's units (None without it); refused when there are none."""
    if strength == 0:
        return None
    coupling = lasso.coupled(student, set(weights.trainable))
    if coupling.units == 0:
        raise InputError("--group-lasso: no prunable channel group has trainable weights "
                         "(float initializers; weights in Constant nodes do not train)")
    return coupling


def _loaded(model: ModelProto | str | os.PathLike) -> ModelProto:
    proto = model_io.load(model)
    model_io.check(proto)
    if proto.graph.sparse_initializer:
        raise InputError("fine-tuning needs dense weight storage; this model holds sparse "
                         "initializers (sparsify with --storage dense)")
    return proto


def translated_pair(student: ModelProto, teacher: ModelProto, feeds: dict
                    ) -> tuple[Translated, Translated]:
    """Both models translated and checked against onnxruntime on `feeds`."""
    pair = []
    for role, model in (("student", student), ("teacher", teacher)):
        try:
            pair.append(check_translation(model, feeds)[0])
        except InputError as exc:
            raise InputError(f"{role}: {exc}") from None
    return pair[0], pair[1]


def float_outputs(student: Translated, teacher: Translated, feeds: dict) -> tuple[str, ...]:
    """The teacher's float outputs; the student must give each, with the same shape."""
    theirs = jax.eval_shape(teacher.function(), teacher.params, feeds)
    mine = jax.eval_shape(student.function(), student.params, feeds)
    if sorted(mine) != sorted(theirs):
        raise InputError(f"the student's outputs ({', '.join(mine)}) differ from the "
                         f"teacher's ({', '.join(theirs)})")
    for name, value in theirs.items():
        if mine[name].shape != value.shape:
            raise InputError(f"output {name!r}: the student gives shape "
                             f"{list(mine[name].shape)}, the teacher {list(value.shape)}")
    names = tuple(n for n, v in theirs.items() if np.issubdtype(v.dtype, np.floating))
    if not names:
        raise InputError("the teacher has no float output to distill")
    return names


def matched_hidden(student: Translated, teacher: Translated, feeds: dict) -> tuple[str, ...]:
    """Intermediate float tensors of both graphs with the same name and shape."""
    def produced(t: Translated) -> list[str]:
        outputs = set(t.program.outputs)
        return [n for s in t.program.steps for n in s.outputs if n and n not in outputs]
    theirs = set(produced(teacher))
    names = [n for n in produced(student) if n in theirs]
    if not names:
        return ()
    mine = jax.eval_shape(student.function(names), student.params, feeds)
    other = jax.eval_shape(teacher.function(names), teacher.params, feeds)
    return tuple(n for n in names if mine[n].shape == other[n].shape
                 and mine[n].dtype == other[n].dtype
                 and np.issubdtype(mine[n].dtype, np.floating))


def _validation(teacher: Translated, objective: Objective, samples, size: int, fixed: bool
                ) -> list[tuple[dict, dict]]:
    """Validation batches with the teacher's outputs."""
    feeds = [samples.feeds(indices) for indices in
             distill_data.validation_batches(samples.validation, size, fixed)]
    return list(zip(feeds, teacher_outputs(teacher, objective.outputs, feeds), strict=True))


def _train(pair: tuple[Translated, Translated], weights: Weights, objective: Objective,
           samples, batching: tuple[int, dict], val: list, options: FinetuneOptions,
           coupling: lasso.Coupled | None = None,
           track: optax.GradientTransformation | None = None
           ) -> tuple[dict[str, np.ndarray], History, Any]:
    """Run the loop; returns the best trainable values, the history and the final
    state of `track`."""
    optimizer = optax.adam(options.lr) if track is None else \
        optax.chain(track, optax.adam(options.lr))
    project, penalty = _lasso_terms(coupling, options)
    step = make_step(*pair, weights, objective, optimizer, project)
    evaluate = make_evaluator(pair[0], weights, objective)
    rng = np.random.default_rng(options.seed)
    size, scales = batching
    order = distill_data.training_batches(samples.train, size, rng)
    trainable = {n: jax.numpy.asarray(v) for n, v in weights.trainable.items()}
    state = {"trainable": trainable, "optimizer": optimizer.init(trainable)}

    def one_step(fraction: float) -> float:
        indices = next(order)
        feeds = augmentation.augment(samples.feeds(indices), options.augment, scales, rng)
        state["trainable"], state["optimizer"], loss = step(
            state["trainable"], state["optimizer"], feeds, samples.targets(indices),
            lr_factor(options.lr_schedule, fraction))
        return float(loss)

    best, history = run_loop(
        one_step, lambda: validation_error(evaluate, state["trainable"], val)
        + penalty(state["trainable"]),
        lambda: {n: np.asarray(v) for n, v in state["trainable"].items()},
        options.budget, options.clock, options.progress)
    return best, history, None if track is None else state["optimizer"][0]


def _lasso_terms(coupling: lasso.Coupled | None, options: FinetuneOptions
                 ) -> tuple[Callable[[dict], dict] | None, Callable[[dict], float]]:
    """The group lasso's proximal step (None without) and its penalty λ·Σ_u ‖w_u‖."""
    if coupling is None:
        return None, lambda trainable: 0.0
    prox, threshold = lasso.make_prox(coupling), options.lr * options.group_lasso
    norms = lasso.make_penalty(coupling)

    def project(trainable: dict, factor: float) -> dict:
        return prox(trainable, threshold * factor)

    def penalty(trainable: dict) -> float:
        return options.group_lasso * norms(trainable)

    return project, penalty
