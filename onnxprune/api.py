"""The public Python surface: prune(), sensitivity(), sparsify(), finetune() and
inspect()."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import ModelProto

from . import criteria, memory, planning
from . import model as model_io
from .analysis import ActivationStats, Analysis, ModelLike, Pricer, analyze
from .depgraph import Group
from .depgraph import analyze as analyze_groups
from .distributed import Executor
from .errors import InputError
from .options import Decisions, PruneOptions, decide
from .planfiles import prune as prune_plans
from .planning import Planned, PlanOptions, eligible
from .planning.curves import DEFAULT_RATIOS, DEFAULT_SAMPLES, Curve, first_samples, measure_curves
from .planning.cuts import removals_at
from .pruning import RECONSTRUCTIONS, verify
from .reporting import GroupReport, Report, prune_report  # noqa: F401  (public surface)
from .schedule import check_rounds
from .sparsity import SparsifyReport  # noqa: F401  (public surface)
from .sparsity import sparsify as sparsify_once
from .verify import sample_feeds

if TYPE_CHECKING:
    from .calibrate import CalibrationSource
    from .images import ImageOptions
    from .train.data import Source
    from .train.report import FinetuneReport


def inspect(model: ModelLike, input_shapes: dict[str, tuple[int, ...]] | None = None
            ) -> list[Group]:
    """Every channel group of a model, prunable or with its blocking reason (structure-
    only files are accepted: groups do not depend on weight values)."""
    proto = model_io.load(model, structure_only=True)
    model_io.check(proto)
    return analyze_groups(proto, input_shapes).groups


def prune(model: ModelLike, ratio: float | None = None, **keywords: Any
          ) -> tuple[ModelProto, Report]:
    """Remove channels and return the verified pruned model and a report.

    The keywords are the fields of `PruneOptions` (see there): e.g. `target_macs`,
    `head_ratio`, `criterion`, `global_ranking`, `round_to`, `calib`, `reconstruct`,
    `plan`. `calib`: calibration data for the data-aware criteria (activation, apoz,
    variance, wanda; taylor, fisher, snip with the train extra): an .npz path, a
    directory of .npz files, an iterable of feed dicts, or an onnxruntime
    CalibrationDataReader. `reconstruct="bias"` folds the removed
    channels' mean contributions into their consumers' biases; `"lsq"` refits the kept
    weights by ridge regression (damping `ridge` × mean channel variance; both need
    `calib`). `criterion="sensitivity"` ranks units by wanda and gives each group its own
    ratio from the measured output error of pruning it alone (on `sensitivity_samples`
    calibration samples), under the MACs budget of `target_macs`, or of the uniform
    plan at `ratio`.
    Defaults: `l1` and no reconstruction without data; `wanda` and `lsq` with it (the best
    of tools/bench_calibration.py and tools/bench_calibration_ocr.py).
    `plan`: a plan file (or `report.plan_document`) to replay instead of planning;
    refused when it was made for another network. Its reconstruction (and ridge) is
    replayed too, on `calib`, unless `reconstruct` is given."""
    return prune_with(model, PruneOptions(ratio=ratio, **keywords))


def prune_with(model: ModelLike, options: PruneOptions) -> tuple[ModelProto, Report]:
    """prune() over one options object: load and analyze, (calibrate,) score and plan
    (or replay a plan file), reconstruct, rewrite and verify."""
    if options.rounds > 1:
        from .rounds import prune_in_rounds

        return prune_in_rounds(model, options)
    decisions = decide(options)
    start = time.perf_counter()
    analysis = analyze(model, options.input_shapes, options.calib, options.calib_samples,
                       options.batch_size, options.images)
    memory.check_model(analysis.proto, decisions.reconstruct, options.max_memory)
    price, stats = Pricer(analysis), ActivationStats(analysis, options.progress)
    planned = _planned(analysis, decisions, price, stats, options)
    removed = planned.plan.removed
    values, details = RECONSTRUCTIONS[decisions.reconstruct](
        analysis, removed, stats, decisions.ridge, options.progress, options.executor, None,
        options.max_memory)
    pruned = analysis.rewritten(removed, values)
    verify(pruned, analysis, removed, sample_feeds(analysis.proto, analysis.shapes,
                                                   options.seed), values)
    report = prune_report(analysis, planned, price, start, options, decisions)
    report.reconstruction = details
    return pruned, report


def _planned(analysis: Analysis, decisions: Decisions, price: Pricer,
             stats: ActivationStats, options: PruneOptions) -> Planned:
    """The plan file's plan, replayed, or a new plan."""
    if decisions.document is not None:
        return Planned(prune_plans.replay(decisions.document, analysis.dep, analysis.proto))
    return planning.plan(analysis, decisions.planning, price, stats,
                         options.sensitivity_samples, quiet=not options.show_progress,
                         executor=options.executor)


def sensitivity(model: ModelLike, calib: CalibrationSource | None, *,
                ratios: tuple[float, ...] = DEFAULT_RATIOS,
                criterion: str = "wanda", samples: int = DEFAULT_SAMPLES,
                round_to: int | None = None, min_channels: int = 1,
                input_shapes: dict[str, tuple[int, ...]] | None = None,
                calib_samples: int | None = None, batch_size: int = 8,
                images: ImageOptions | None = None,
                progress: Callable[[int], None] | None = None,
                executor: Executor | None = None) -> list[Curve]:
    """Prune each prunable group alone at each ratio (its lowest-ranked units by
    `criterion`) and measure the relative L2 change of the outputs on `samples`
    calibration samples: one curve per group. The (group, ratio) measurements run as
    tasks of `executor` (`distributed.executor()`: in-process by default, or Ray)."""
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise InputError(f"sensitivity ratios must be in (0, 1), got {list(ratios)}")
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}")
    if calib is None:
        raise InputError("sensitivity analysis needs calibration data (--calib DATA)")
    options = PlanOptions(ratio=max(ratios), head_ratio=max(ratios), criterion=criterion,
                          round_to=round_to, min_channels=min_channels)
    ranking = planning.ranking(criterion)
    analysis = analyze(model, input_shapes, calib, calib_samples, batch_size, images)
    groups = [g for g in eligible(analysis.dep, options)[0] if g.kind != "hidden"]
    scores = criteria.scores(ranking, groups, analysis.dep.view, np.random.default_rng(0),
                             ActivationStats(analysis))
    return measure_curves(analysis.dep, analysis.proto, groups,
                          removals_at(scores, options, options.rounding),
                          first_samples(analysis.stream, samples), ratios, progress, executor)


def sparsify(model: ModelLike, pattern: str = "2:4", *, rounds: int = 1,
             between_rounds: Callable[[ModelProto, int], ModelProto] | None = None,
             **keywords: Any) -> tuple[ModelProto, SparsifyReport]:
    """Zero weights in an N:M or unstructured pattern (`sparsity.sparsify`: the keywords
    are its own). `rounds` > 1 (unstructured only): the sparsity rises over the rounds
    on the cubic schedule, each round scoring the model sparsified so far;
    `between_rounds(model, round)` is called after every round but the last and
    returns the model the next starts from (e.g. fine-tuned); see `sparsity.rounds`."""
    if check_rounds(rounds) == 1:
        return sparsify_once(model, pattern, **keywords)
    from .sparsity.rounds import sparsify_in_rounds

    return sparsify_in_rounds(model, pattern, rounds, between_rounds, **keywords)


def finetune(student: ModelLike, teacher: ModelLike, data: Source, **keywords: Any
             ) -> tuple[ModelProto, FinetuneReport]:
    """Distill `student` (a pruned or sparsified model) toward `teacher` (the dense one)
    on `data` (an .npz path, a folder of .npz files or images, or a dict of arrays),
    keeping its structure and every zero; returns the model best on the held-out
    validation samples (never worse than the input) and a `FinetuneReport`. The
    keywords are the fields of `onnxprune.train.finetune.FinetuneOptions` (`steps`,
    `minutes`, `lr`, `batch_size`, `loss`, `temperature`, `match_hidden`,
    `val_fraction`, `augment`, `seed`, ...). Needs the `train` extra (JAX, optax)."""
    from .train.finetune import FinetuneOptions
    from .train.finetune import finetune as run

    return run(student, teacher, data, FinetuneOptions(**keywords))
