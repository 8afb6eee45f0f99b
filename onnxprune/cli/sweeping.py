"""`onnxprune sweep`: a grid of prune settings, fanned out, and their Pareto table."""

from __future__ import annotations

from pathlib import Path

import click

from .. import model as model_io
from ..errors import InputError
from ..files import check_outputs, output_directory, transaction
from . import main
from .common import (
    distributed_flags,
    handle_errors,
    image_flags,
    image_options,
    json_text,
    parse_input_shapes,
    seed_option,
    warn,
)

TABLE_FILES = ("sweep.json", "sweep.csv", "sweep.html", "sweep.png")


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--calib", required=True, help="Calibration data (.npz file, directory of "
              "them, or of images); the last --held-out samples only measure fidelity.")
@click.option("--grid", required=True, help="Settings to try: KEY=V1,V2;KEY=V1,... over "
              "prune options, e.g. \"ratio=0.1,0.2,0.3;criterion=l1,wanda\".")
@click.option("-o", "--output", "directory", required=True,
              help="Directory for the models, sweep.json, sweep.csv, sweep.png and "
                   "sweep.html (made when missing).")
@click.option("--held-out", type=click.IntRange(min=1), help="Samples held out for "
              "fidelity, the last ones of DATA [default: a quarter].")
@click.option("--target-latency", type=float, help="Every setting keeps about this "
              "fraction of the measured latency.")
@click.option("--target-macs", type=float, help="Every setting keeps at most this "
              "fraction of the MACs.")
@click.option("--round-to", type=int, help="Kept counts are multiples of this.")
@click.option("--reconstruct", help="none, bias or lsq [default: lsq].")
@click.option("--provider", default="CPUExecutionProvider", show_default=True,
              help="onnxruntime execution provider for latency (targets and table).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="Intra-op threads for latency (0: onnxruntime's default).")
@click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Timed runs per model for the table's latency.")
@click.option("--input-shape", multiple=True, help="NAME:1x3x224x224 (repeatable).")
@image_flags
@click.option("--calib-samples", type=click.IntRange(min=1),
              help="Use at most this many samples of DATA (held-out ones included).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@seed_option
@distributed_flags
@click.option("--json", "as_json", is_flag=True, help="Print sweep.json on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@handle_errors
def sweep(model: str, calib: str, grid: str, directory: str, held_out: int | None,
          target_latency: float | None, target_macs: float | None, round_to: int | None,
          reconstruct: str | None, provider: str, threads: int, runs: int,
          input_shape: tuple[str, ...], image_size: str | None, image_mean: str,
          image_std: str, image_layout: str, bgr: bool, calib_samples: int | None,
          batch_size: int, seed: int, workers: int, ray_address: str | None, as_json: bool,
          quiet: bool) -> None:
    """Prune MODEL once per setting of a grid (each a task, in-process or on Ray), verify
    and write every model, and tabulate MACs, parameters, latency and held-out fidelity
    with the Pareto front."""
    from ..distributed import check_request
    from ..grid import check_settings, parse_grid

    settings = parse_grid(grid)
    given = dict(target_latency=target_latency, target_macs=target_macs, round_to=round_to,
                 reconstruct=reconstruct)
    base = dict({k: v for k, v in given.items() if v is not None}, provider=provider,
                threads=threads, seed=seed, batch_size=batch_size,
                input_shapes=parse_input_shapes(input_shape))
    check_settings(settings, base)
    check_request(workers, ray_address)
    images = image_options(image_size, image_mean, image_std, image_layout, bgr)
    with output_directory(directory) as folder:
        names = [f"{s.stem}.onnx" for s in settings] + list(TABLE_FILES)
        check_outputs({name: str(folder / name) for name in names},
                      {"MODEL": model, "--calib": calib})
        data, counts = _inputs(model, calib, held_out, calib_samples, batch_size, images,
                               base)
        document, png, outcomes = _run(data, settings, counts, workers, ray_address, runs,
                                       str(model), grid, quiet)
        _write(folder, outcomes, document, png)
    if as_json:
        click.echo(json_text(document))
    elif not quiet:
        _summary(document, folder)


def _inputs(model, calib, held_out, calib_samples, batch_size, images, base):
    """What every task shares, and (calibration samples, held-out samples)."""
    from ..sweep import SweepData, split

    proto = model_io.load(model)
    model_io.check(proto)
    calibration, evaluation = split(calib, proto, held_out, calib_samples, batch_size, images)
    counts = tuple(sum(len(next(iter(b.values()))) for b in part)
                   for part in (calibration, evaluation))
    return SweepData(proto.SerializeToString(), calibration, evaluation, base), counts


def _run(data, settings, counts, workers, address, runs, model, grid, quiet):
    """Every setting as a task, then latency here, the table and the plot."""
    from ..distributed import executor
    from ..progress import bar
    from ..sweep import dense_outcome, sweep, time_outcomes
    from ..sweep_report import document, table

    with bar(f"pruning {len(settings)} settings", None, quiet), \
            executor(workers, address) as runner:
        outcomes = sweep(data, settings, runner)
    dense = dense_outcome(data, outcomes[0])
    provider, threads = data.base["provider"], data.base["threads"]
    with bar("timing models in turns", None, quiet):
        time_outcomes(dense, outcomes, runs, provider, threads)
    rows = table(dense, outcomes)
    latency = {"provider": provider, "threads": threads, "runs": runs,
               "input_shapes": dense.input_shapes}
    result = document(Path(model).name, grid, rows, counts, latency)
    return result, _plot(rows, Path(model).name, quiet), outcomes


def _plot(rows: list[dict], name: str, quiet: bool) -> bytes | None:
    from ..plot import pareto_png

    try:
        return pareto_png(rows, f"Sweep: {name}")
    except InputError as exc:
        warn([f"no sweep.png: {exc}"], quiet)
        return None


def _write(folder: Path, outcomes, document: dict, png: bytes | None) -> None:
    """Every model and the table, plot and page, together or not at all."""
    from ..plot import data_uri
    from ..sweep import stage_models
    from ..sweep_report import csv_text, render_html

    with transaction() as outputs:
        stage_models(outcomes, folder, outputs)
        outputs.write(folder / "sweep.json", json_text(document))
        outputs.write(folder / "sweep.csv", csv_text(document["rows"]))
        if png is not None:
            outputs.write(folder / "sweep.png", png)
        outputs.write(folder / "sweep.html",
                      render_html(document, data_uri(png) if png else None))


def _summary(document: dict, folder: Path) -> None:
    """One line per model: MACs, error, latency, Pareto."""
    click.echo(document["held_out"])
    for row in document["rows"]:
        mark = "  pareto" if row["pareto"] else ""
        click.echo(f"{row['setting']:<40} {row['macs_reduction']:5.2f}x fewer MACs  "
                   f"rel. L2 {row['relative_l2']:.4f}  {row['latency_ms']:.3f} ms{mark}")
    click.echo(f"written to {folder}/")
