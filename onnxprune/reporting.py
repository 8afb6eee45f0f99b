"""The prune report: what prune() did, in numbers (`Report`, built by `prune_report`),
and the measurements a readable report adds: latency of the dense and pruned models
timed in turns, and fidelity on calibration data."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import onnx_graphsurgeon as gs
from onnx import ModelProto

from .bench import CPU, Progress, benchmark
from .cache import io_changes, io_names
from .cost import Cost
from .depgraph import DepGraph
from .notices import cut_warnings, requested_cuts
from .planfiles import prune as prune_plans
from .planning import Plan, Planned
from .rewrite import removed_slots

if TYPE_CHECKING:
    from .analysis import Analysis, Pricer
    from .images import ImageOptions
    from .options import Decisions, PruneOptions


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
    io_changes: list[dict] = field(default_factory=list)
    reconstruction: dict = field(default_factory=dict)  # layers refit, ridges chosen
    rounds: list[dict] | None = None

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
        if data["rounds"] is None:
            del data["rounds"]
        return data


def prune_report(analysis: Analysis, planned: Planned, price: Pricer, start: float,
                 options: PruneOptions, decisions: Decisions) -> Report:
    """The report of a prune run begun at `start` (perf_counter), with its plan file."""
    plan, decided = planned.plan, decisions.planning.rounded_to(planned.round_to)
    before, after = price(None), price(plan.removed)
    report = Report(
        before.macs, after.macs, before.params, after.params, time.perf_counter() - start,
        decided.criterion, decisions.reconstruct, decided.ratio, options.head_ratio,
        options.hidden_ratio, decided.rounding,
        {k: list(v) for k, v in analysis.shapes.items()}, group_reports(analysis.dep, plan),
        node_reports(analysis.dep.view.graph, before, after))
    report.target = planned.target
    report.io_changes = [c.to_dict() for c in io_changes(analysis.proto, removed_slots(
        analysis.dep, plan.removed, io_names(analysis.proto)))]
    report.warnings = cut_warnings(report.groups, requested_cuts(decisions.planning))
    report.sensitivity = [asdict(c) for c in planned.curves] if planned.curves else None
    report.plan_document = prune_plans.document(analysis.dep, analysis.proto, plan,
                                                decisions.recorded(planned.round_to))
    return report


def group_reports(dep: DepGraph, plan: Plan) -> list[GroupReport]:
    """Every group's outcome under a plan."""
    reports = []
    for group in dep.groups:
        reason = plan.skipped.get(group.id)
        reports.append(GroupReport(
            group.id, group.kind, group.units, plan.kept(group), group.channels_per_unit,
            str(group.root), [name for name, _ in group.producers],
            blocked=group.blocked[0] if group.blocked else None,
            skipped=None if group.blocked else reason,
            removed=[int(u) for u in plan.removed.get(group.id, ())]))
    return reports


def node_reports(graph: gs.Graph, before: Cost, after: Cost) -> list[dict]:
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

def measured_latency(original: ModelProto, pruned: ModelProto, report: Report,
                     runs: int = 30, provider: str = CPU, progress: Progress = None) -> dict:
    """Median latency (ms) of both models at the report's input shapes, in turns."""
    shapes = {name: tuple(shape) for name, shape in report.input_shapes.items()}
    batch = next(iter(shapes.values()))[0] if shapes else 1
    row = benchmark(original, pruned, batch_sizes=(batch,), providers=(provider,), runs=runs,
                    input_shapes=shapes, progress=progress)[0]
    return {"provider": provider, "batch_size": batch, "runs": runs,
            "before_ms": row.dense.p50_ms, "after_ms": row.pruned.p50_ms,
            "speedup": row.speedup}


@dataclass(frozen=True)
class FidelityData:
    """Where fidelity figures come from: held-out data, or the calibration samples the
    criteria and reconstruction were fit to (`held_out` False: reports say so)."""

    source: object
    samples: int | None = None
    held_out: bool = False

    @property
    def label(self) -> str:
        return "held-out data" if self.held_out else "calibration data (fit to)"


def measured_fidelity(original: ModelProto, pruned: ModelProto, data: FidelityData,
                      batch_size: int = 8, images: ImageOptions | None = None) -> dict:
    """Per-output agreement of the pruned model with the original on `data`."""
    from .compare import compare

    result = compare(original, pruned, data.source, data.samples, batch_size, runs=1,
                     images=images)
    return {"samples": result.samples, "held_out": data.held_out,
            "outputs": [asdict(o) for o in result.outputs]}



# Columns of the per-round table of `--rounds` (`round_cells`).
ROUND_COLUMNS = ("round", "target", "removed", "MACs kept",
                 "output error (generated inputs)", "after fine-tuning")


def round_cells(row: dict) -> list[str]:
    """A round's report row as table cells: its targets, the fraction of channels
    removed and of MACs kept, and its largest relative output error (after its
    fine-tuning too, when run)."""
    targets = [f"{key.replace('_', ' ')} {row[key]:.3f}"
               for key in ("ratio", "head_ratio", "target_macs", "target_energy")
               if row.get(key) is not None]
    tuned = row.get("output_error_after")
    return [str(row["round"]), ", ".join(targets), f"{row['removed_fraction']:.1%}",
            f"{row['macs_fraction']:.1%}", _worst(row["output_error"]),
            _worst(tuned) if tuned else ""]


def _worst(errors: dict[str, float]) -> str:
    return f"{max(errors.values()):.4g}" if errors else ""


def report_document(report: Report, latency: dict | None = None,
                    fidelity: dict | None = None, sensitivity: dict | None = None,
                    title: str = "onnxprune report") -> dict:
    """Everything a rendered report shows, as plain data (also the JSON report)."""
    data = report.to_dict()
    data.pop("nodes", None)
    return {"title": title, "report": data, "latency": latency, "fidelity": fidelity,
            "sensitivity": sensitivity}
