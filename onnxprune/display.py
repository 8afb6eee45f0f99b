"""Human-readable output for the command line (rich tables)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from .depgraph import Group
from .reporting import ROUND_COLUMNS, Report, round_cells

if TYPE_CHECKING:
    from .bench import BenchRow
    from .compare import Comparison
    from .planning.curves import Curve


def _count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return str(int(value))


def groups_table(groups: list[Group], console: Console | None = None) -> None:
    """One row per group: size, kind, producers, and status or blocking reason."""
    console = console or Console()
    table = Table(title=f"{len(groups)} channel groups "
                        f"({sum(g.prunable for g in groups)} prunable)")
    for column in ("id", "kind", "size", "members", "produced by", "status"):
        table.add_column(column, overflow="fold")
    for group in groups:
        producers = ", ".join(name for name, _ in group.producers[:3])
        if len(group.producers) > 3:
            producers += f" +{len(group.producers) - 3}"
        status = "prunable" if group.prunable else f"blocked: {group.blocked[0]}"
        per = group.channels_per_unit
        size = str(group.units) + (f"×{per}" if per > 1 else "")
        table.add_row(str(group.id), group.kind, size, str(len(group.members)),
                      producers or str(group.root), status)
    console.print(table)


def prune_summary(report: Report, output: str, console: Console | None = None) -> None:
    """MACs, parameters and groups cut, changed cache inputs and outputs, and the file."""
    console = console or Console()
    cut = sum(1 for g in report.groups if g.kept < g.size)
    console.print(
        f"MACs {_count(report.macs_before)} → {_count(report.macs_after)} "
        f"({report.macs_reduction:.2f}× fewer), params {_count(report.params_before)} → "
        f"{_count(report.params_after)}; {cut} of {len(report.groups)} groups cut "
        f"in {report.seconds:.2f}s")
    if report.io_changes:
        names = sorted({c["name"] for c in report.io_changes})
        console.print(f"{len(names)} graph inputs and outputs (key/value cache) changed "
                      f"size: {', '.join(names[:2])}{', …' if len(names) > 2 else ''}")
    console.print(f"wrote {output}")


def comparison_table(result: Comparison, console: Console | None = None) -> None:
    """Per-output fidelity, then MACs, parameters and latency."""
    console = console or Console()
    table = Table(title=f"fidelity on {result.samples} samples")
    for column in ("output", "cosine", "relative L2", "max |error|", "top-1 agreement"):
        table.add_column(column)
    for row in result.outputs:
        top1 = "" if row.top1_agreement is None else f"{row.top1_agreement:.3f}"
        table.add_row(row.name, f"{row.cosine:.5f}", f"{row.relative_l2:.3e}",
                      f"{row.max_abs_error:.3e}", top1)
    console.print(table)
    console.print(f"MACs {_count(result.macs_original)} → {_count(result.macs_pruned)}, "
                  f"params {_count(result.params_original)} → {_count(result.params_pruned)}, "
                  f"latency × {result.latency_ratio:.2f}")
    if result.generation:
        gen = result.generation
        console.print(f"cached greedy generation: {gen['agreeing']} of {gen['tokens']} tokens "
                      f"agree, logits relative L2 at most {gen['max_logits_relative_l2']:.3e}")


def bench_table(rows: list[BenchRow], console: Console | None = None) -> None:
    """Latency percentiles and throughput per provider and batch size."""
    console = console or Console()
    pruned = any(row.pruned for row in rows)
    table = Table(title="onnxruntime latency (ms) and throughput (samples/s)")
    columns = ["provider", "batch", "model", "p50", "p90", "p99", "throughput"]
    for column in columns + (["speedup"] if pruned else []):
        table.add_column(column)
    for row in rows:
        for label, stats in (("dense", row.dense), ("pruned", row.pruned)):
            if stats is None:
                continue
            speed = [f"{row.speedup:.2f}×" if label == "pruned" else ""] if pruned else []
            table.add_row(row.provider.removesuffix("ExecutionProvider"), str(row.batch_size),
                          label, f"{stats.p50_ms:.3f}", f"{stats.p90_ms:.3f}",
                          f"{stats.p99_ms:.3f}", f"{stats.throughput:.1f}", *speed)
    console.print(table)


def sensitivity_table(curves: list[Curve], console: Console | None = None) -> None:
    """Output error per group at each ratio, most sensitive groups first."""
    console = console or Console()
    ratios = curves[0].ratios if curves else []
    table = Table(title="relative L2 output error when one group alone is pruned")
    for column in ["group", "kind", "size", "producers"] + [f"{r:.0%}" for r in ratios]:
        table.add_column(column)
    for curve in sorted(curves, key=lambda c: -max(c.errors, default=0.0)):
        producers = ", ".join(curve.producers[:2]) + ("…" if len(curve.producers) > 2 else "")
        table.add_row(str(curve.group), curve.kind, str(curve.units), producers,
                      *[f"{e:.4f} (−{n})" for e, n in zip(curve.errors, curve.removed,
                                                          strict=True)])
    console.print(table)


def rounds_table(rows: list[dict], console: Console | None = None) -> None:
    """One row per round of `--rounds`: its target, what it reached, and the largest
    relative output error against the original on the generated sample inputs."""
    console = console or Console()
    table = Table(title="rounds")
    for column in ROUND_COLUMNS:
        table.add_column(column)
    for row in rows:
        table.add_row(*round_cells(row))
    console.print(table)
