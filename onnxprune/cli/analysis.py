"""Commands that look at models: inspect, verify, bench, sensitivity."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from .. import api
from .. import model as model_io
from ..errors import InputError
from ..files import check_outputs, transaction
from . import main
from .common import (
    distributed_flags,
    handle_errors,
    image_flags,
    image_options,
    json_text,
    parse_input_shapes,
)

SAMPLES = click.IntRange(min=1)


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
@handle_errors
def inspect(model: str, as_json: bool) -> None:
    """Show every channel group of MODEL and why a group cannot be pruned."""
    groups = api.inspect(model)
    if as_json:
        click.echo(json.dumps([_group_dict(g) for g in groups], indent=2))
        return
    from ..display import groups_table

    groups_table(groups)


def _group_dict(group) -> dict:
    return {
        "id": group.id,
        "kind": group.kind,
        "size": group.units,
        "channels_per_unit": group.channels_per_unit,
        "prunable": group.prunable,
        "blocked": group.blocked[0] if group.blocked else None,
        "blocked_all": group.blocked,
        "producers": [name for name, _ in group.producers],
        "members": [{"tensor": s.tensor, "axis": s.axis, "role": group.roles[s].value,
                     **({"span": s.span} if s.span > 1 else {})}
                    for s in group.members],
    }



@main.command()
@click.argument("original", type=click.Path(dir_okay=True))
@click.argument("pruned", type=click.Path(dir_okay=True))
@click.option("--calib", help="Inputs to compare on (.npz file or directory); seeded samples "
              "otherwise.")
@click.option("--calib-samples", type=SAMPLES, help="Use at most this many samples.")
@click.option("--batch-size", type=SAMPLES, default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@handle_errors
def verify(original: str, pruned: str, calib: str | None, calib_samples: int | None,
           batch_size: int, as_json: bool) -> None:
    """Compare PRUNED with ORIGINAL: output fidelity, MACs, parameters, latency."""
    from ..compare import compare
    from ..progress import bar

    with bar("comparing outputs and timing", None, as_json):
        result = compare(original, pruned, calib, calib_samples, batch_size)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    from ..display import comparison_table

    comparison_table(result)


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.argument("pruned", required=False, type=click.Path(dir_okay=True))
@click.option("--batch-size", "batch_sizes", type=SAMPLES, multiple=True,
              help="Batch size to time (repeatable) [default: 1].")
@click.option("--provider", "providers", multiple=True,
              help="onnxruntime execution provider (repeatable) [default: "
                   "CPUExecutionProvider].")
@click.option("--runs", type=SAMPLES, default=50, show_default=True,
              help="Timed runs per model, provider and batch size.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="Intra-op threads (0: onnxruntime's default).")
@click.option("--input-shape", multiple=True, help="NAME:1x3x224x224 for inputs with "
              "symbolic sizes other than the batch (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def bench(model: str, pruned: str | None, batch_sizes: tuple[int, ...],
          providers: tuple[str, ...], runs: int, threads: int, input_shape: tuple[str, ...],
          as_json: bool, quiet: bool) -> None:
    """Time MODEL (and PRUNED, in turns with it): latency p50/p90/p99, throughput,
    speedup."""
    from ..bench import CPU, benchmark
    from ..progress import bar

    dense = model_io.load(model, structure_only=True)
    other = model_io.load(pruned, structure_only=True) if pruned else None
    batch_sizes, providers = batch_sizes or (1,), providers or (CPU,)
    steps = runs * len(batch_sizes) * len(providers) * (2 if other else 1)
    with bar("timing (runs)", steps, quiet or as_json) as advance:
        rows = benchmark(dense, other, batch_sizes=batch_sizes, providers=providers,
                         runs=runs, threads=threads,
                         input_shapes=parse_input_shapes(input_shape), progress=advance)
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    from ..display import bench_table

    bench_table(rows)



@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--calib", required=True, help="Calibration data: an .npz file, a directory of "
              "them, or a directory of images.")
@image_flags
@click.option("--calib-samples", type=SAMPLES,
              help="Use at most this many calibration samples.")
@click.option("--batch-size", type=SAMPLES, default=8, show_default=True)
@click.option("--samples", type=SAMPLES, default=32, show_default=True,
              help="Calibration samples each measurement runs on.")
@click.option("--ratios", default="0.25,0.5,0.75", show_default=True,
              help="Fractions of each group to remove, comma-separated.")
@click.option("--criterion", default="wanda", show_default=True,
              help="Which units of a group go first.")
@click.option("--round-to", type=int, help="Removed counts keep multiples of this "
              "[default: 16].")
@click.option("--input-shape", multiple=True, help="NAME:1x3x224x224 (repeatable).")
@click.option("-o", "--output", help="Write the curves as JSON here.")
@click.option("--plot", help="Write a PNG plot of output error against ratio per group "
              "(needs matplotlib: pip install 'onnxprune[plot]').")
@distributed_flags
@click.option("--json", "as_json", is_flag=True, help="Print the curves as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No table, no progress bar.")
@handle_errors
def sensitivity(model: str, calib: str, image_size: str | None, image_mean: str,
                image_std: str, image_layout: str, bgr: bool, calib_samples: int | None,
                batch_size: int, samples: int, ratios: str, criterion: str,
                round_to: int | None, input_shape: tuple[str, ...], workers: int,
                ray_address: str | None, output: str | None, plot: str | None, as_json: bool,
                quiet: bool) -> None:
    """Prune each group of MODEL alone at several ratios and measure how much the outputs
    change: a table, JSON curves and a plot."""
    from ..distributed import check_request, executor
    from ..progress import bar

    check_outputs({"-o": output, "--plot": plot}, {"MODEL": model, "--calib": calib})
    check_request(workers, ray_address)
    try:
        fractions = tuple(float(r) for r in ratios.split(","))
    except ValueError:
        raise InputError(f"--ratios {ratios!r}: expected comma-separated numbers") from None
    with bar("measuring groups", None, quiet or as_json) as advance, \
            executor(workers, ray_address) as runner:
        curves = api.sensitivity(
            model, calib, ratios=fractions, criterion=criterion, samples=samples,
            round_to=round_to, input_shapes=parse_input_shapes(input_shape),
            calib_samples=calib_samples, batch_size=batch_size,
            images=image_options(image_size, image_mean, image_std, image_layout, bgr),
            progress=advance, executor=runner)
    data = {"model": str(model), "metric": "relative L2 output error",
            "ratios": list(fractions), "groups": [asdict(c) for c in curves]}
    png = None
    if plot:
        from ..plot import sensitivity_png

        png = sensitivity_png(data["groups"], f"Sensitivity: {Path(model).name}")
    with transaction() as outputs:
        if png is not None:
            outputs.write(plot, png)
        if output:
            outputs.write(output, json_text(data))
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif not quiet:
        from ..display import sensitivity_table

        sensitivity_table(curves)


