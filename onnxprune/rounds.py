"""prune() in rounds (`rounds` > 1): the ratio, head ratio or budget cut rises over the
rounds on the cubic schedule (`schedule`), and every round

1. re-scores the model cut so far on the calibration data (the criterion sees the
   earlier rounds' cuts and new weights; the units they removed score below all
   others, so a round only adds to them),
2. plans the cut reaching its share of the original model (the same planner, rounding
   and pricing as one step: the last round plans at the asked ratio itself),
3. reconstructs as asked, fitting the original dense model's layer outputs,
4. and, but for the last, hands the model cut so far (original shapes, the cut units
   zeroed at their consumers, which is what the cut model computes) to
   `between_rounds` (fine-tuning, when asked), whose result the next round starts from.

The last round's cut is rewritten from the model it started from and verified as a
one-step prune is. Groups and plan files are those of the original model."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from onnx import ModelProto

from . import memory, planning
from .analysis import ActivationStats, Analysis, ModelLike, Pricer, analyze
from .errors import VerificationError
from .options import PruneOptions, decide
from .planning import CHANNEL_KINDS, Plan, Planned, Removed
from .pruning import RECONSTRUCTIONS, Details, verify
from .reporting import Report, prune_report
from .rewrite import Values
from .schedule import budget_schedule, schedule
from .verify import reference_model, relative_error, run_source, sample_feeds


def round_options(options: PruneOptions) -> list[PruneOptions]:
    """Each round's options: the ratios and budgets it reaches, one round each."""
    count = options.rounds

    def each(value: float | None, rising=schedule) -> list[float | None]:
        return [None] * count if value is None else rising(value, count)

    return [replace(options, ratio=ratio, head_ratio=heads, target_macs=macs,
                    target_energy=energy, rounds=1, between_rounds=None)
            for ratio, heads, macs, energy in zip(
                each(options.ratio), each(options.head_ratio),
                each(options.target_macs, budget_schedule),
                each(options.target_energy, budget_schedule), strict=True)]


def prune_in_rounds(model: ModelLike, options: PruneOptions) -> tuple[ModelProto, Report]:
    """prune() in `options.rounds` rounds (see the module): the verified model cut by
    the last round, and the report of the whole cut with one row per round."""
    start = time.perf_counter()
    first = analyze(model, options.input_shapes, options.calib, options.calib_samples,
                    options.batch_size, options.images)
    memory.check_model(first.proto, decide(options).reconstruct, options.max_memory)
    price, feeds = Pricer(first), sample_feeds(first.proto, first.shapes, options.seed)
    dense = run_source(first.proto, feeds)
    current, removed, rows = first, {}, []
    steps = round_options(options)
    for number, step in enumerate(steps, 1):
        planned, removed, values, details = _cut(current, first, step, price, removed)
        if number == len(steps):
            break
        masked = reference_model(current.dep, removed, current.proto, values=values)
        rows.append(_row(number, step, first, price, removed, _errors(dense, masked, feeds)))
        if options.between_rounds is not None:
            masked = options.between_rounds(masked, number)
            rows[-1]["output_error_after"] = _errors(dense, masked, feeds)
        current = _reanalyzed(masked, first)
    pruned = current.rewritten(removed, values)
    verify(pruned, current, removed, feeds, values)
    rows.append(_row(len(steps), steps[-1], first, price, removed,
                     _errors(dense, pruned, feeds)))
    whole = replace(planned, plan=Plan(removed, planned.plan.skipped))
    report = prune_report(first, whole, price, start, options, decide(options))
    report.rounds, report.reconstruction = rows, details
    report.plan_document["options"]["rounds"] = options.rounds
    return pruned, report


def _cut(current: Analysis, first: Analysis, options: PruneOptions, price: Pricer,
         before: Removed) -> tuple[Planned, Removed, Values, Details]:
    """One round: the plan on the model as it is (the units cut `before` first), its
    removed units, the reconstruction's new values (fit to the `first` model) and what
    it reports."""
    decisions = decide(options)
    stats = ActivationStats(current, options.progress)
    planned = planning.plan(current, decisions.planning, price, stats,
                            options.sensitivity_samples, quiet=not options.show_progress,
                            forced=before, executor=options.executor)
    removed = planned.plan.removed
    for gid, units in before.items():
        if not np.isin(units, removed.get(gid, [])).all():
            raise VerificationError(f"a round's plan keeps units of group {gid} that an "
                                    "earlier round removed; nothing was written")
    teacher = first if current is not first else None
    values, details = RECONSTRUCTIONS[decisions.reconstruct](
        current, removed, stats, decisions.ridge, options.progress, options.executor,
        teacher, options.max_memory)
    return planned, removed, values, details


def _reanalyzed(model: ModelProto, first: Analysis) -> Analysis:
    """The analysis of a round's model on the first one's shapes and calibration
    stream; refused unless its groups are the first one's."""
    analysis = replace(analyze(model, first.shapes), stream=first.stream)
    shape = [(g.kind, g.units, str(g.root)) for g in analysis.dep.groups]
    if shape != [(g.kind, g.units, str(g.root)) for g in first.dep.groups]:
        raise VerificationError("a round's model has other channel groups than the "
                                "original; nothing was written")
    return analysis


def _errors(dense: dict[str, np.ndarray], model: ModelProto, feeds: dict[str, np.ndarray]
            ) -> dict[str, float]:
    """Relative L2 error of each float output against the original's on the sample
    inputs (generated, never fit to)."""
    got = run_source(model, feeds)
    return {name: relative_error(value, got[name]) for name, value in dense.items()
            if np.issubdtype(value.dtype, np.floating) and got[name].shape == value.shape}


def _row(number: int, options: PruneOptions, first: Analysis, price: Pricer,
         removed: Removed, errors: dict[str, float]) -> dict:
    """A round's report row: what it aimed at and what it reached."""
    groups = [g for g in first.dep.groups if g.kind in CHANNEL_KINDS and not g.blocked]
    total = sum(g.units * g.channels_per_unit for g in groups)
    cut = sum(len(removed.get(g.id, ())) * g.channels_per_unit for g in groups)
    before, after = price(None), price(removed)
    return {"round": number, "ratio": options.ratio, "head_ratio": options.head_ratio,
            "target_macs": options.target_macs, "target_energy": options.target_energy,
            "removed_fraction": cut / max(total, 1), "macs_after": after.macs,
            "macs_fraction": after.macs / max(before.macs, 1), "output_error": errors}
