"""The public Python surface: prune(), sparsify() and inspect()."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from . import budget, calibrate, criteria, planfile
from . import model as model_io
from .cost import Cost, concrete, model_cost, shrunk
from .criteria.activation import sink_activations
from .criteria.sensitivity import (
    DEFAULT_RATIOS,
    DEFAULT_SAMPLES,
    Curve,
    first_samples,
    measure_curves,
)
from .depgraph import DepGraph, Group, analyze, build, view_of
from .errors import InputError, VerificationError
from .notices import cut_warnings, requested_cuts
from .plan import (
    CHANNEL_KINDS,
    DEFAULT_ROUND_TO,
    Plan,
    PlanOptions,
    eligible,
    plan_by_sensitivity,
    plan_global,
    plan_uniform,
    plan_zero,
    search_ratio,
)
from .reconstruct import compensate_bias
from .refit import refit_layerwise
from .rewrite import apply, removed_slots
from .shapes import concrete_shape_table, sample_shapes
from .sparsity import SparsifyReport, sparsify  # noqa: F401  (public surface)
from .verify import check_plan, sample_feeds

ModelLike = ModelProto | str | os.PathLike
RECONSTRUCTIONS = ("none", "bias", "lsq")


@dataclass
class GroupReport:
    """One group's outcome."""

    id: int
    kind: str
    size: int
    kept: int
    channels_per_unit: int
    root: str
    producers: list[str]
    blocked: str | None = None
    skipped: str | None = None
    removed: list[int] = field(default_factory=list)


@dataclass
class Report:
    """What prune() did, in numbers."""

    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    seconds: float
    criterion: str
    reconstruct: str
    ratio: float | None
    head_ratio: float | None
    hidden_ratio: float | None
    round_to: int
    input_shapes: dict[str, list[int]]
    groups: list[GroupReport] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)
    plan_document: dict | None = field(default=None, repr=False)
    target: dict | None = None
    sensitivity: list[dict] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def macs_reduction(self) -> float:
        return self.macs_before / max(self.macs_after, 1)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("plan_document")
        data["macs_reduction"] = self.macs_reduction
        for group in data["groups"]:
            for key in ("blocked", "skipped"):
                if group[key] is None:
                    del group[key]
        return data


def inspect(model: ModelLike, input_shapes: dict[str, tuple[int, ...]] | None = None
            ) -> list[Group]:
    """Every channel group of a model, prunable or with its blocking reason (structure-
    only files are accepted: groups do not depend on weight values)."""
    proto = model_io.load(model, structure_only=True)
    model_io.check(proto)
    return analyze(proto, input_shapes).groups


def prune(model: ModelLike, ratio: float | None = None, *, target_macs: float | None = None,
          head_ratio: float | None = None, hidden_ratio: float | None = None,
          criterion: str | None = None, global_ranking: bool = False, max_ratio: float = 0.9,
          round_to: int | None = None, min_channels: int = 1, ignore: tuple[str, ...] = (),
          input_shapes: dict[str, tuple[int, ...]] | None = None, seed: int = 0,
          calib=None, calib_samples: int | None = None, batch_size: int = 8,
          reconstruct: str | None = None, ridge: float = 0.1, images=None,
          sensitivity_samples: int = DEFAULT_SAMPLES,
          progress: Callable[[int], None] | None = None,
          plan: str | os.PathLike | dict | None = None, target_latency: float | None = None,
          target_energy: float | None = None, provider: str = "CPUExecutionProvider",
          threads: int = 0, show_progress: bool = False) -> tuple[ModelProto, Report]:
    """Remove channels and return the verified pruned model and a report.

    `calib`: calibration data for the data-aware criteria (activation, apoz, variance,
    wanda): an .npz path, a directory of .npz files, an iterable of feed dicts, or an
    onnxruntime CalibrationDataReader. `reconstruct="bias"` folds the removed channels'
    mean contributions into their consumers' biases; `"lsq"` refits the kept weights by
    ridge regression (damping `ridge` × mean channel variance; both need `calib`).
    `criterion="sensitivity"` ranks units by wanda and gives each group its own ratio
    from the measured output error of pruning it alone (on `sensitivity_samples`
    calibration samples), under the MACs budget of `target_macs`, or of the uniform
    plan at `ratio`.
    Defaults: `l1` and no reconstruction without data; `wanda` and `lsq` with it (the best
    of tools/bench_calibration.py and tools/bench_calibration_ocr.py).
    `plan`: a plan file (or `report.plan_document`) to replay instead of planning;
    refused when it was made for another network. Its reconstruction (and ridge) is
    replayed too, on `calib`, unless `reconstruct` is given."""
    criterion = criterion or ("wanda" if calib is not None else "l1")
    options = PlanOptions(ratio, target_macs, head_ratio, hidden_ratio, criterion,
                          global_ranking, max_ratio, round_to, min_channels, tuple(ignore), seed,
                          target_latency, target_energy, provider, threads)
    document, options = _replayed(plan, options)
    reconstruct, ridge = planfile.reconstruction(document, reconstruct, ridge, calib is not None)
    criterion = options.criterion
    _check_request(options, reconstruct, calib is not None or document is not None,
                   calib is not None, sensitivity_samples, ridge)
    score = criteria.get(criterion)
    start = time.perf_counter()
    proto, stream, shapes, dep = _analyzed(model, input_shapes, calib, calib_samples,
                                           batch_size, images)
    costs = _pricer(dep, proto, shapes)
    measure = _measurer(dep, proto, stream, progress)
    sense = _sensor(dep, proto, stream, sensitivity_samples) if stream else None
    meter = None if document else _meter(dep, options, proto, shapes, costs, not show_progress)
    if meter is not None and options.target_latency is not None and options.round_to is None:
        options.round_to = meter.round_to(_probe_candidates(dep, options, costs))
    plan = planfile.replay(document, dep, proto) if document else \
        _plan(dep, options, score, costs, measure, meter, sense)
    pruned_groups = [dep.groups[g] for g in plan.removed]
    if reconstruct == "bias":
        compensate_bias(dep, plan.removed, measure(pruned_groups))
    elif reconstruct == "lsq":
        refit_layerwise(dep, plan.removed, proto, stream, ridge, progress)
    pruned = _rewrite(dep, plan, proto)
    _verify(pruned, dep, plan, proto, sample_feeds(proto, shapes, seed))
    before, after = costs(None), costs(plan.removed)
    report = Report(before.macs, after.macs, before.params, after.params,
                    time.perf_counter() - start, criterion, reconstruct, options.ratio,
                    head_ratio,
                    hidden_ratio, _round_to(options), {k: list(v) for k, v in shapes.items()},
                    _group_reports(dep, plan), _node_reports(dep.view.graph, before, after))
    report.target = meter.outcome if meter is not None else None
    report.warnings = cut_warnings(report.groups, requested_cuts(options))
    report.sensitivity = [asdict(c) for c in sense.measured] if sense and sense.measured \
        else None
    report.plan_document = planfile.prune_document(
        dep, proto, plan, dict(asdict(options), reconstruct=reconstruct, ridge=ridge))
    return pruned, report


def sensitivity(model: ModelLike, calib, *, ratios: tuple[float, ...] = DEFAULT_RATIOS,
                criterion: str = "wanda", samples: int = DEFAULT_SAMPLES,
                round_to: int | None = None, min_channels: int = 1,
                input_shapes: dict[str, tuple[int, ...]] | None = None,
                calib_samples: int | None = None, batch_size: int = 8, images=None,
                progress: Callable[[int], None] | None = None) -> list[Curve]:
    """Prune each prunable group alone at each ratio (its lowest-ranked units by
    `criterion`) and measure the relative L2 change of the outputs on `samples`
    calibration samples: one curve per group."""
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise InputError(f"sensitivity ratios must be in (0, 1), got {list(ratios)}")
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}")
    if calib is None:
        raise InputError("sensitivity analysis needs calibration data (--calib DATA)")
    options = PlanOptions(ratio=max(ratios), head_ratio=max(ratios), criterion=criterion,
                          round_to=round_to, min_channels=min_channels)
    options.validate()
    score = criteria.get(criterion)
    proto, stream, _, dep = _analyzed(model, input_shapes, calib, calib_samples, batch_size,
                                      images)
    groups = [g for g in eligible(dep, options)[0] if g.kind != "hidden"]
    stats = _measurer(dep, proto, stream)(groups) if criterion in criteria.DATA_AWARE else None
    rng = np.random.default_rng(0)
    scores = {g.id: score(g, dep.view, rng, stats) for g in groups}
    round_to = _round_to(options)

    def removals(group: Group, ratio: float) -> np.ndarray:
        step = 1 if group.kind == "head" else round_to
        return plan_uniform([group], scores, ratio, options, step).get(
            group.id, np.zeros(0, np.int64))

    return measure_curves(dep, proto, groups, removals, first_samples(stream, samples),
                          ratios, progress)


def _analyzed(model: ModelLike, input_shapes, calib, calib_samples, batch_size, images):
    """Load and check a model; its calibration stream, sample shapes and groups."""
    proto = model_io.load(model)
    model_io.check(proto)
    stream = calibrate.batches(calib, proto, calib_samples, batch_size, images) \
        if calib is not None else None
    shapes = sample_shapes(proto, input_shapes)
    return proto, stream, shapes, build(view_of(model_io.normalize(proto), proto, shapes))


def _check_request(options: PlanOptions, reconstruct: str, ranked: bool, calibrated: bool,
                   sensitivity_samples: int, ridge: float) -> None:
    """Refuse option combinations that cannot work, before any work."""
    options.validate()
    if not ridge >= 0 or ridge == float("inf"):
        raise InputError(f"--ridge must be a finite number >= 0, got {ridge}")
    criteria.get(options.criterion)
    if sensitivity_samples < 1:
        raise InputError(f"--sensitivity-samples must be at least 1, got {sensitivity_samples}")
    if options.criterion in criteria.DATA_AWARE and not ranked:
        raise InputError(f"criterion {options.criterion!r} needs calibration data "
                         "(--calib DATA)")
    if reconstruct not in RECONSTRUCTIONS:
        raise InputError(f"unknown reconstruction {reconstruct!r}; choose one of "
                         f"{', '.join(RECONSTRUCTIONS)}")
    if reconstruct != "none" and not calibrated:
        raise InputError(f"--reconstruct {reconstruct} needs calibration data (--calib DATA)")


def _replayed(plan, options: PlanOptions) -> tuple[dict | None, PlanOptions]:
    """The plan document to replay and the options it was made with (or none, and
    the options as given)."""
    if plan is None:
        return None, options
    given = [flag for flag, value in (("ratio", options.ratio), ("target_macs",
             options.target_macs), ("head_ratio", options.head_ratio),
             ("target_latency", options.target_latency),
             ("target_energy", options.target_energy),
             ("hidden_ratio", options.hidden_ratio)) if value is not None]
    if given:
        raise InputError(f"a replayed plan fixes every decision; do not give {given[0]}")
    document = planfile.read(plan, "prune")
    return document, planfile.plan_options(document, PlanOptions)


def _round_to(options: PlanOptions) -> int:
    return DEFAULT_ROUND_TO if options.round_to is None else options.round_to


def _probe(dep: DepGraph, proto: ModelProto):
    """The analysis' onnxruntime shape probe (its runs are shared), or a new one."""
    return dep.view.prober or (lambda: model_io.export(dep.view.graph, proto))


def _pricer(dep: DepGraph, proto: ModelProto, shapes):
    """Cost of the model under a set of removed units (None: the dense model)."""
    structure = model_io.structure_proto(dep.view.graph, proto)
    base = concrete(concrete_shape_table(structure, shapes, _probe(dep, proto)))

    def price(removed_units: dict[int, np.ndarray] | None) -> Cost:
        if not removed_units:
            return model_cost(dep.view.graph, base)
        return model_cost(dep.view.graph, shrunk(base, removed_slots(dep, removed_units)))

    return price


def _measurer(dep: DepGraph, proto: ModelProto, stream, progress=None):
    """Statistics of the activations entering the given groups' consumers (measured
    once per slot, on the model before any change)."""
    known: dict = {}
    model = [None]

    def measure(groups: list[Group]):
        if stream is None:
            return None
        wanted = {(s.tensor, s.axis) for g in groups for s in sink_activations(g, dep.view)}
        slots = sorted(s for s in wanted if s not in known)
        if slots:
            model[0] = model[0] or model_io.export(dep.view.graph, proto)
            known.update(calibrate.collect(model[0], slots, stream, progress))
        return known

    return measure


def _plan(dep: DepGraph, options: PlanOptions, score, price, measure, meter=None,
          sense=None) -> Plan:
    groups, skipped = eligible(dep, options)
    rng = np.random.default_rng(options.seed)
    stats = measure(groups) if options.criterion in criteria.DATA_AWARE else None
    scores = {g.id: score(g, dep.view, rng, stats) for g in groups}
    round_to = _round_to(options)
    of_kind = {kind: [g for g in groups if g.kind == kind] for kind in ("head", "hidden")}
    channels = [g for g in groups if g.kind in CHANNEL_KINDS]
    if options.criterion == "zero":
        return Plan(plan_zero(groups, scores, options, round_to), skipped)
    fixed = plan_uniform(of_kind["head"], scores, options.head_ratio or 0.0, options, 1)
    fixed |= plan_uniform(of_kind["hidden"], scores, options.hidden_ratio or 0.0, options,
                          round_to)
    chooser = plan_global if options.global_ranking else plan_uniform
    if options.criterion == "sensitivity":
        return Plan(fixed | _by_sensitivity(channels, scores, options, price, sense, fixed),
                    skipped)
    if options.target() is None:
        cut = chooser(channels, scores, options.ratio or 0.0, options, round_to)
        return Plan(fixed | cut, skipped)
    meter = meter or budget.macs_meter(price)

    def removed_at(ratio: float) -> dict[int, np.ndarray]:
        return fixed | chooser(channels, scores, ratio, options, round_to)

    def plan_at(goal: float) -> Plan:
        ratio = search_ratio(lambda r: meter(removed_at(r)) <= goal, options.max_ratio,
                             meter.name)
        return Plan(removed_at(ratio), skipped)

    meter.prepare(removed_at, options.max_ratio)
    return meter.settle(plan_at, options.target()[1])


def _meter(dep: DepGraph, options: PlanOptions, proto: ModelProto, shapes, price,
           quiet: bool):
    """The budget to plan against for --target-latency or --target-energy (None for
    MACs or a ratio)."""
    target = options.target()
    if target is None or target[0] == "macs":
        return None
    if target[0] == "energy":
        return budget.energy_meter(price)
    from .latency import latency_meter

    base = concrete(concrete_shape_table(model_io.structure_proto(dep.view.graph, proto),
                                         shapes, _probe(dep, proto)))
    return latency_meter(dep, proto, shapes, base, price,
                         lambda removed: _rewrite(dep, Plan(removed), proto),
                         planfile.fingerprint(dep, proto), options.provider, options.threads,
                         options.seed, quiet)


def _probe_candidates(dep: DepGraph, options: PlanOptions, price) -> list[tuple[int, int, int]]:
    """(group id, units, MACs one unit costs) of the eligible channel groups of one
    channel per unit, for choosing the rounding from latency tables."""
    dense = price(None).macs
    return [(g.id, g.units, dense - price({g.id: np.arange(1)}).macs)
            for g in eligible(dep, options)[0]
            if g.kind in CHANNEL_KINDS and g.channels == 1 and g.units > 1]


def _by_sensitivity(channels: list[Group], scores, options: PlanOptions, price, sense,
                    fixed: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Per-group ratios from measured sensitivity, under the MACs budget of the target or
    of the uniform plan at the ratio."""
    round_to = _round_to(options)
    if options.target() is not None and options.target()[0] != "macs":
        raise InputError("--criterion sensitivity plans against --ratio or --target-macs")
    if options.target_macs is not None:
        budget = options.target_macs * price(None).macs
    else:
        uniform = plan_uniform(channels, scores, options.ratio or 0.0, options, round_to)
        budget = price(fixed | uniform).macs

    def removals(group: Group, ratio: float) -> np.ndarray:
        return plan_uniform([group], scores, ratio, options, round_to).get(
            group.id, np.zeros(0, np.int64))

    curves = {c.group: c.error_at for c in sense(channels, removals)}
    return plan_by_sensitivity(channels, curves, scores, options, round_to,
                               lambda cut: price(fixed | cut).macs, budget)


def _sensor(dep: DepGraph, proto: ModelProto, stream, samples: int):
    """Measures sensitivity curves of groups on the first calibration samples (and
    keeps them, for the report)."""

    def sense(groups: list[Group], removals) -> list[Curve]:
        sense.measured = measure_curves(dep, proto, groups, removals,
                                        first_samples(stream, samples))
        return sense.measured

    sense.measured = []
    return sense


def _rewrite(dep: DepGraph, plan: Plan, proto: ModelProto) -> ModelProto:
    graph = apply(dep.view.graph, dep.view, removed_slots(dep, plan.removed))
    return model_io.export(graph, proto)


def _verify(pruned: ModelProto, dep: DepGraph, plan: Plan, proto: ModelProto, feeds) -> None:
    """Check the written-model invariants and mask equivalence; name a faulty group."""
    try:
        check_plan(pruned, dep, plan.removed, proto, feeds)
    except VerificationError as exc:
        culprit = _culprit(dep, plan, proto, feeds)
        raise VerificationError(f"pruned model failed verification ({exc}){culprit}; "
                                "nothing was written") from None


def _culprit(dep: DepGraph, plan: Plan, proto: ModelProto, feeds) -> str:
    """Name the first group that fails on its own, to point at the faulty rule."""
    for gid, units in plan.removed.items():
        single = Plan({gid: units})
        try:
            check_plan(_rewrite(dep, single, proto), dep, single.removed, proto, feeds)
        except VerificationError as exc:
            group = dep.groups[gid]
            nodes = ", ".join(name for name, _ in group.producers[:3]) or group.root.tensor
            return f"; group {gid} (produced by {nodes}) fails alone: {exc}"
    return ""


def _node_reports(graph: gs.Graph, before: Cost, after: Cost) -> list[dict]:
    """MACs and parameters before and after, for every node that has either."""
    rows = []
    for node in graph.nodes:
        macs, params = before.per_node.get(node.name, (0, 0))
        if macs or params:
            new_macs, new_params = after.per_node.get(node.name, (0, 0))
            rows.append({"name": node.name, "op": node.op, "macs_before": macs,
                         "macs_after": new_macs, "params_before": params,
                         "params_after": new_params})
    return rows


def _group_reports(dep: DepGraph, plan: Plan) -> list[GroupReport]:
    reports = []
    for group in dep.groups:
        reason = plan.skipped.get(group.id)
        reports.append(GroupReport(
            group.id, group.kind, group.units, plan.kept(group), group.channels,
            str(group.root), [name for name, _ in group.producers],
            blocked=group.blocked[0] if group.blocked else None,
            skipped=None if group.blocked else reason,
            removed=[int(u) for u in plan.removed.get(group.id, ())]))
    return reports
