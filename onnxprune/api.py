"""The public Python surface: prune(), sparsify() and inspect()."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from . import calibrate, criteria
from . import model as model_io
from .cost import Cost, concrete, model_cost
from .criteria.activation import sink_activations
from .depgraph import DepGraph, Group, analyze, build, view_of
from .errors import InputError, ModelError, VerificationError, first_line
from .plan import (
    CHANNEL_KINDS,
    DEFAULT_ROUND_TO,
    Plan,
    PlanOptions,
    eligible,
    plan_global,
    plan_uniform,
    plan_zero,
    search_ratio,
)
from .reconstruct import compensate_bias, refit_least_squares
from .rewrite import apply, removed_slots
from .shapes import concrete_shape_table, sample_shapes
from .sparsity import SparsifyReport, sparsify  # noqa: F401  (public surface)
from .verify import check_pruned, reference_model, run, sample_feeds

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

    @property
    def macs_reduction(self) -> float:
        return self.macs_before / max(self.macs_after, 1)

    def to_dict(self) -> dict:
        data = asdict(self)
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
          progress: Callable[[int], None] | None = None) -> tuple[ModelProto, Report]:
    """Remove channels and return the verified pruned model and a report.

    `calib`: calibration data for the data-aware criteria (activation, apoz, variance,
    wanda): an .npz path, a directory of .npz files, an iterable of feed dicts, or an
    onnxruntime CalibrationDataReader. `reconstruct="bias"` folds the removed channels'
    mean contributions into their consumers' biases; `"lsq"` refits the kept weights by
    ridge regression (damping `ridge` × mean channel variance; both need `calib`).
    Defaults: `l1` and no reconstruction without data; `wanda` and `bias` with it (lsq is
    better on MiniLM but can diverge on a detector head; tools/bench_calibration*.py)."""
    criterion = criterion or ("wanda" if calib is not None else "l1")
    reconstruct = reconstruct or ("bias" if calib is not None else "none")
    options = PlanOptions(ratio, target_macs, head_ratio, hidden_ratio, criterion,
                          global_ranking, max_ratio, round_to, min_channels, tuple(ignore), seed)
    options.validate()
    score = criteria.get(criterion)
    if criterion in criteria.DATA_AWARE and calib is None:
        raise InputError(f"criterion {criterion!r} needs calibration data (--calib DATA)")
    if reconstruct not in RECONSTRUCTIONS:
        raise InputError(f"unknown reconstruction {reconstruct!r}; choose one of "
                         f"{', '.join(RECONSTRUCTIONS)}")
    if reconstruct != "none" and calib is None:
        raise InputError(f"--reconstruct {reconstruct} needs calibration data (--calib DATA)")
    proto = model_io.load(model)
    start = time.perf_counter()
    model_io.check(proto)
    stream = calibrate.batches(calib, proto, calib_samples, batch_size, images) \
        if calib is not None else None
    shapes = sample_shapes(proto, input_shapes)
    dep = build(view_of(model_io.normalize(proto), proto, shapes))
    costs = _pricer(dep, proto, shapes)
    measure = _measurer(dep, proto, stream, progress)
    plan = _plan(dep, options, score, costs, measure)
    pruned_groups = [dep.groups[g] for g in plan.removed]
    if reconstruct == "bias":
        compensate_bias(dep, plan.removed, measure(pruned_groups))
    elif reconstruct == "lsq":
        refit_least_squares(dep, plan.removed, measure(pruned_groups, gram=True), ridge)
    pruned = _rewrite(dep, plan, proto)
    _verify(pruned, dep, plan, proto, sample_feeds(proto, shapes, seed))
    before, after = costs(None), costs(plan.removed)
    report = Report(before.macs, after.macs, before.params, after.params,
                    time.perf_counter() - start, criterion, reconstruct, options.ratio,
                    head_ratio,
                    hidden_ratio, _round_to(options), {k: list(v) for k, v in shapes.items()},
                    _group_reports(dep, plan), _node_reports(dep.view.graph, before, after))
    return pruned, report


def _round_to(options: PlanOptions) -> int:
    return DEFAULT_ROUND_TO if options.round_to is None else options.round_to


def _pricer(dep: DepGraph, proto: ModelProto, shapes):
    """Cost of the model under a set of removed units (None: the dense model)."""
    structure = model_io.structure_proto(dep.view.graph, proto)
    base = concrete(concrete_shape_table(structure, shapes,
                                         lambda: model_io.export(dep.view.graph, proto)))

    def price(removed_units: dict[int, np.ndarray] | None) -> Cost:
        if not removed_units:
            return model_cost(dep.view.graph, base)
        cut: dict[str, dict[int, int]] = {}
        for slot, idx in removed_slots(dep, removed_units).items():
            cut.setdefault(slot.tensor, {})[slot.axis] = len(idx)

        def shape_of(name: str):
            shape = base(name)
            if shape is None or name not in cut:
                return shape
            return tuple(d - cut[name].get(a, 0) for a, d in enumerate(shape))

        return model_cost(dep.view.graph, shape_of)

    return price


def _measurer(dep: DepGraph, proto: ModelProto, stream, progress=None):
    """Statistics of the activations entering the given groups' consumers (measured
    once per slot, on the model before any change)."""
    known: dict = {}
    model = [None]

    def measure(groups: list[Group], gram: bool = False):
        if stream is None:
            return None
        wanted = {(s.tensor, s.axis) for g in groups for s in sink_activations(g, dep.view)}
        slots = sorted(s for s in wanted if s not in known or (gram and known[s].gram is None))
        if slots:
            model[0] = model[0] or model_io.export(dep.view.graph, proto)
            known.update(calibrate.collect(model[0], slots, stream, progress, gram=gram))
        return known

    return measure


def _plan(dep: DepGraph, options: PlanOptions, score, price, measure) -> Plan:
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
    if options.target_macs is None:
        cut = chooser(channels, scores, options.ratio or 0.0, options, round_to)
        return Plan(fixed | cut, skipped)
    budget = options.target_macs * price(None).macs

    def fits(ratio: float) -> bool:
        return price(fixed | chooser(channels, scores, ratio, options, round_to)).macs <= budget

    ratio = search_ratio(fits, options.max_ratio)
    return Plan(fixed | chooser(channels, scores, ratio, options, round_to), skipped)


def _rewrite(dep: DepGraph, plan: Plan, proto: ModelProto) -> ModelProto:
    graph = apply(dep.view.graph, dep.view, removed_slots(dep, plan.removed))
    return model_io.export(graph, proto)


def _verify(pruned: ModelProto, dep: DepGraph, plan: Plan, proto: ModelProto, feeds) -> None:
    """Check the written-model invariants and mask equivalence; name a faulty group."""
    exact = {gid: units for gid, units in plan.removed.items() if not dep.groups[gid].approximate}
    reference = reference_model(dep, exact, proto)
    try:
        check_pruned(pruned, reference, feeds, compare=len(exact) == len(plan.removed))
    except VerificationError as exc:
        _require_runnable(reference, feeds)
        culprit = _culprit(dep, plan, proto, feeds)
        raise VerificationError(f"pruned model failed verification ({exc}){culprit}; "
                                "nothing was written") from None


def _require_runnable(model: ModelProto, feeds) -> None:
    """A model that fails on the sample inputs themselves needs other input shapes."""
    try:
        run(model, feeds)
    except Exception as exc:
        shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in feeds.items())
        raise ModelError(f"the model does not run on sample inputs ({shapes}): "
                         f"{first_line(exc)}; give the right shapes with --input-shape") from None


def _culprit(dep: DepGraph, plan: Plan, proto: ModelProto, feeds) -> str:
    """Name the first group that fails on its own, to point at the faulty rule."""
    for gid, units in plan.removed.items():
        single = Plan({gid: units})
        try:
            check_pruned(_rewrite(dep, single, proto),
                         reference_model(dep, single.removed, proto), feeds)
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
