"""Command line: parse, call the API, print. Errors become one line on stderr."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import click

from . import __version__, api
from . import model as model_io
from .errors import InputError, OnnxPruneError
from .files import write_atomic

INTERNAL_ERROR = 70


def _fail(message: str, code: int) -> None:
    click.echo(f"onnxprune: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func):
    """Turn every failure into one clear line and a documented exit status."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except OnnxPruneError as exc:
            _fail(str(exc), exc.exit_code)
        except MemoryError:
            _fail("out of memory", INTERNAL_ERROR)
        except Exception as exc:  # never show a traceback to a user
            if os.environ.get("ONNXPRUNE_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set ONNXPRUNE_DEBUG=1 for a "
                  "traceback)", INTERNAL_ERROR)

    return wrapper


def parse_input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """`name:1x3x224x224` → {"name": (1, 3, 224, 224)}."""
    shapes = {}
    for value in values:
        name, sep, dims = value.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise InputError(f"--input-shape {value!r}: expected NAME:D1xD2x…, e.g. "
                             "input:1x3x224x224")
        shapes[name] = shape
    return shapes


def image_options(size: str | None, mean: str, std: str, layout: str, bgr: bool):
    """Image preprocessing from command-line strings ("48x192", "0.5,0.5,0.5")."""
    from .images import ImageOptions

    try:
        shape = tuple(int(v) for v in size.lower().split("x")) if size else None
        options = ImageOptions(shape, tuple(float(v) for v in mean.split(",")),
                               tuple(float(v) for v in std.split(",")), layout.upper(), bgr)
    except ValueError:
        raise InputError("image options: --image-size HxW, --image-mean and --image-std "
                         "as three comma-separated numbers") from None
    if shape is not None and (len(shape) != 2 or min(shape) < 1):
        raise InputError(f"--image-size {size!r}: expected HxW, e.g. 224x224")
    options.validate()
    return options


def image_flags(func):
    """The image preprocessing options of commands that read calibration images."""
    for option in reversed([
        click.option("--image-size", help="Images: HxW (default: the input's fixed size)."),
        click.option("--image-mean", default="0,0,0", show_default=True,
                     help="Images: per-channel mean, after scaling to [0, 1]."),
        click.option("--image-std", default="1,1,1", show_default=True,
                     help="Images: per-channel std, after scaling to [0, 1]."),
        click.option("--image-layout", default="NCHW", show_default=True,
                     help="NCHW or NHWC."),
        click.option("--bgr", is_flag=True, help="Images: BGR channel order instead of RGB."),
    ]):
        func = option(func)
    return func


@contextlib.contextmanager
def calibration_progress(silent: bool):
    """A progress bar on stderr for calibration passes (samples seen), when wanted."""
    if silent or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("calibrating (samples)", total=None)
        yield lambda samples: bar.advance(task, samples)


def write_json_atomic(data: dict, path: str) -> None:
    """Write JSON through a temp file in the same directory, then rename."""
    _check_writable(Path(path))
    write_atomic(json.dumps(data, indent=2, default=_json_default), path)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _check_writable(path: Path) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"{path}: output directory does not exist")
    if not os.access(directory, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{path}: not writable")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxprune")
def main() -> None:
    """Structural pruning of ONNX models."""


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
    from .display import groups_table

    groups_table(groups)


def _group_dict(group) -> dict:
    return {
        "id": group.id,
        "kind": group.kind,
        "size": group.units,
        "channels_per_unit": group.channels,
        "prunable": group.prunable,
        "blocked": group.blocked[0] if group.blocked else None,
        "blocked_all": group.blocked,
        "producers": [name for name, _ in group.producers],
        "members": [{"tensor": s.tensor, "axis": s.axis, "role": group.roles[s].value}
                    for s in group.members],
    }


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("-o", "--output", required=True, help="Where to write the pruned model.")
@click.option("--ratio", type=float, help="Fraction of channels (and FFN neurons) removed per "
              "group, in [0, 1).")
@click.option("--head-ratio", type=float, help="Fraction of attention heads removed in each "
              "attention block, in [0, 1).")
@click.option("--hidden-ratio", type=float, help="Fraction of the hidden size (residual "
              "stream through normalizations) removed; approximate, off by default.")
@click.option("--target-macs", type=float, help="Keep at most this fraction of the MACs.")
@click.option("--target-latency", type=float, help="Keep about this fraction of the measured "
              "onnxruntime latency (latency tables, corrected by whole-model measurements).")
@click.option("--target-energy", type=float, help="Keep at most this fraction of the energy "
              "of the analytical model (MACs and bytes moved; see README).")
@click.option("--provider", default="CPUExecutionProvider", show_default=True,
              help="onnxruntime execution provider for --target-latency.")
@click.option("--threads", type=int, default=0, show_default=True,
              help="Intra-op threads for --target-latency (0: onnxruntime's default).")
@click.option("--criterion", help="l1, l2, bn_scale, random, zero; with --calib: activation, "
              "apoz, variance, wanda, sensitivity (per-group ratios from measured output "
              "error) [default: l1, or wanda with --calib].")
@click.option("--global", "global_ranking", is_flag=True,
              help="Rank channels across groups instead of per group.")
@click.option("--max-ratio", type=float, default=0.9, show_default=True,
              help="Cap on the fraction removed from any one group (global ranking).")
@click.option("--round-to", type=int, help="Kept channel counts are multiples of this "
              "[default: 16; with --target-latency, chosen from the latency tables].")
@click.option("--min-channels", type=int, default=1, show_default=True,
              help="Never keep fewer channels in a group.")
@click.option("--ignore", multiple=True, help="Do not prune groups produced by nodes matching "
              "this name, op type or regular expression (repeatable).")
@click.option("--input-shape", multiple=True, help="NAME:1x3x224x224 for verification runs "
              "and MACs (repeatable).")
@click.option("--calib", help="Calibration data for activation, apoz, variance and wanda: "
              "an .npz file (one array per input, first axis = samples), a directory of "
              "them, or a directory of images (for a model with one image input).")
@image_flags
@click.option("--calib-samples", type=int, help="Use at most this many calibration samples.")
@click.option("--batch-size", type=int, default=8, show_default=True,
              help="Calibration batch size.")
@click.option("--reconstruct", help="none; bias: fold removed channels' mean contributions "
              "into the consumers' biases; lsq: least-squares refit of the kept weights (both "
              "need --calib) [default: none, or lsq with --calib].")
@click.option("--ridge", type=float, default=0.1, show_default=True,
              help="Damping of the least-squares refit, relative to the mean channel "
                   "energy.")
@click.option("--sensitivity-samples", type=int, default=32, show_default=True,
              help="Calibration samples each sensitivity measurement runs on.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--report", "report_path", help="Write a JSON report here.")
@click.option("--save-plan", help="Write the decisions (groups, removed units, options, "
              "model fingerprint) to this JSON plan file.")
@click.option("--plan", "plan_path", help="Replay a saved plan instead of planning.")
@click.option("--report-html", help="Write a readable report (one self-contained HTML page): "
              "MACs, parameters and measured latency before and after, a chart of kept and "
              "removed channels per group, fidelity with --calib, groups left alone.")
@click.option("--report-md", help="The same report in Markdown.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout "
              "(no progress bars).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@handle_errors
def prune(model, output, ratio, head_ratio, hidden_ratio, target_macs, target_latency,
          target_energy, provider, threads, criterion,
          global_ranking, max_ratio, round_to, min_channels, ignore, input_shape, calib,
          image_size, image_mean, image_std, image_layout, bgr, calib_samples, batch_size,
          reconstruct, ridge, sensitivity_samples, seed, report_path, save_plan, plan_path,
          report_html, report_md, as_json, quiet) -> None:
    """Remove channels from MODEL and write a verified, smaller model to OUTPUT."""
    quiet = quiet or as_json
    for path in (output, report_path, save_plan, report_html, report_md):
        if path:
            _check_writable(Path(path))
    images = image_options(image_size, image_mean, image_std, image_layout, bgr)
    with calibration_progress(quiet or calib is None) as advance:
        pruned, report = api.prune(
            model, ratio, target_macs=target_macs, head_ratio=head_ratio,
            hidden_ratio=hidden_ratio, criterion=criterion, global_ranking=global_ranking,
            max_ratio=max_ratio, round_to=round_to, min_channels=min_channels, ignore=ignore,
            input_shapes=parse_input_shapes(input_shape), seed=seed, calib=calib,
            calib_samples=calib_samples, batch_size=batch_size, reconstruct=reconstruct,
            ridge=ridge, sensitivity_samples=sensitivity_samples, images=images,
            progress=advance, plan=plan_path,
            target_latency=target_latency, target_energy=target_energy, provider=provider,
            threads=threads, show_progress=not quiet)
    readable = _readable_report(model, pruned, report, report_html or report_md, calib,
                                calib_samples, batch_size, images, quiet)
    model_io.save(pruned, output)
    extra = {k: readable[k] for k in ("latency", "fidelity")} if readable else {}
    if report_path:
        write_json_atomic(dict(report.to_dict(), **extra), report_path)
    _write_readable(readable, report_html, report_md)
    if save_plan:
        write_json_atomic(report.plan_document, save_plan)
    if as_json:
        click.echo(json.dumps(dict(report.to_dict(), **extra), indent=2,
                              default=_json_default))
    elif not quiet:
        from .display import prune_summary

        prune_summary(report, output)


@main.command()
@click.argument("original", type=click.Path(dir_okay=True))
@click.argument("pruned", type=click.Path(dir_okay=True))
@click.option("--calib", help="Inputs to compare on (.npz file or directory); seeded samples "
              "otherwise.")
@click.option("--calib-samples", type=int, help="Use at most this many samples.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@handle_errors
def verify(original, pruned, calib, calib_samples, batch_size, as_json) -> None:
    """Compare PRUNED with ORIGINAL: output fidelity, MACs, parameters, latency."""
    from .compare import compare

    result = compare(original, pruned, calib, calib_samples, batch_size)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    from .display import comparison_table

    comparison_table(result)


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.argument("pruned", required=False, type=click.Path(dir_okay=True))
@click.option("--batch-size", "batch_sizes", type=int, multiple=True,
              help="Batch size to time (repeatable) [default: 1].")
@click.option("--provider", "providers", multiple=True,
              help="onnxruntime execution provider (repeatable) [default: "
                   "CPUExecutionProvider].")
@click.option("--runs", type=int, default=50, show_default=True,
              help="Timed runs per model, provider and batch size.")
@click.option("--threads", type=int, default=0, show_default=True,
              help="Intra-op threads (0: onnxruntime's default).")
@click.option("--input-shape", multiple=True, help="NAME:1x3x224x224 for inputs with "
              "symbolic sizes other than the batch (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def bench(model, pruned, batch_sizes, providers, runs, threads, input_shape, as_json,
          quiet) -> None:
    """Time MODEL (and PRUNED, in turns with it): latency p50/p90/p99, throughput,
    speedup."""
    from .bench import CPU, benchmark
    from .progress import bar

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
    from .display import bench_table

    bench_table(rows)


def _readable_report(model, pruned, report, wanted, calib, calib_samples, batch_size, images,
                     quiet: bool) -> dict | None:
    """Measure what the HTML/Markdown report shows beyond the prune report."""
    if not wanted:
        return None
    from .progress import bar
    from .reporting import measured_fidelity, measured_latency, report_document

    original = model_io.load(model)
    with bar("timing dense and pruned (runs)", 60, quiet) as advance:
        latency = measured_latency(original, pruned, report, progress=advance)
    fidelity = None
    if calib is not None:
        with bar("fidelity on calibration data", None, quiet):
            fidelity = measured_fidelity(original, pruned, calib, calib_samples, batch_size,
                                         images)
    return report_document(report, latency, fidelity, _sensitivity_section(report),
                           title=f"onnxprune: {Path(model).name}")


def _sensitivity_section(report) -> dict | None:
    """The measured sensitivity curves (criterion sensitivity) as report rows and an
    inline plot (when matplotlib is installed)."""
    if not report.sensitivity:
        return None
    rows = [{"group": c["group"], "ratio": removed / c["units"], "error": error}
            for c in report.sensitivity
            for removed, error in zip(c["removed"], c["errors"], strict=True)]
    try:
        from .plot import data_uri, sensitivity_png

        plot = data_uri(sensitivity_png(report.sensitivity))
    except InputError:
        plot = None
    return {"rows": rows, "plot_png": plot}


def _write_readable(document: dict | None, html_path: str | None, md_path: str | None) -> None:
    from .report_html import render_html, render_markdown

    if document and html_path:
        write_atomic(render_html(document), html_path)
    if document and md_path:
        write_atomic(render_markdown(document), md_path)


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--calib", required=True, help="Calibration data: an .npz file, a directory of "
              "them, or a directory of images.")
@image_flags
@click.option("--calib-samples", type=int, help="Use at most this many calibration samples.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--samples", type=int, default=32, show_default=True,
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
@click.option("--json", "as_json", is_flag=True, help="Print the curves as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No table, no progress bar.")
@handle_errors
def sensitivity(model, calib, image_size, image_mean, image_std, image_layout, bgr,
                calib_samples, batch_size, samples, ratios, criterion, round_to, input_shape,
                output, plot, as_json, quiet) -> None:
    """Prune each group of MODEL alone at several ratios and measure how much the outputs
    change: a table, JSON curves and a plot."""
    from .progress import bar

    for path in (output, plot):
        if path:
            _check_writable(Path(path))
    try:
        fractions = tuple(float(r) for r in ratios.split(","))
    except ValueError:
        raise InputError(f"--ratios {ratios!r}: expected comma-separated numbers") from None
    with bar("measuring groups", None, quiet or as_json) as advance:
        curves = api.sensitivity(
            model, calib, ratios=fractions, criterion=criterion, samples=samples,
            round_to=round_to, input_shapes=parse_input_shapes(input_shape),
            calib_samples=calib_samples, batch_size=batch_size,
            images=image_options(image_size, image_mean, image_std, image_layout, bgr),
            progress=advance)
    data = {"model": str(model), "metric": "relative L2 output error",
            "ratios": list(fractions), "groups": [asdict(c) for c in curves]}
    if plot:
        from .plot import sensitivity_png

        write_atomic(sensitivity_png(data["groups"], f"Sensitivity: {Path(model).name}"), plot)
    if output:
        write_json_atomic(data, output)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif not quiet:
        from .display import sensitivity_table

        sensitivity_table(curves)


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("-o", "--output", required=True, help="Where to write the sparsified model.")
@click.option("--pattern", default="2:4", show_default=True,
              help="2:4 or 4:8 (n non-zeros in every m along the axis TensorRT checks), or "
                   "unstructured.")
@click.option("--sparsity", type=float, help="Fraction of weights zeroed (unstructured; "
              "default 0.5).")
@click.option("--criterion", default="magnitude", show_default=True,
              help="magnitude; with --calib: wanda, sparsegpt.")
@click.option("--min-size", type=int, help="Sparsify only layers with at least this many "
              "outputs and this reduction length [default: 256 for N:M, 0 for unstructured].")
@click.option("--all", "all_layers", is_flag=True, help="Sparsify every eligible layer, "
              "whatever its size.")
@click.option("--ignore", multiple=True, help="Leave alone layers whose node name or op type "
              "equals this or whose name matches it as a regular expression (repeatable).")
@click.option("--fp16", is_flag=True, help="Store the sparsified weights in float16 (behind "
              "a Cast).")
@click.option("--storage", default="dense", show_default=True,
              help="dense (zeros stored; what TensorRT reads) or sparse (ONNX "
                   "sparse_initializer where smaller).")
@click.option("--sparse-indices", default="int64", show_default=True,
              help="int64 (ONNX) or int16 (smaller; onnxruntime reads it, onnx.checker "
                   "refuses it).")
@click.option("--input-shape", multiple=True, help="NAME:1x3x224x224 for verification runs "
              "(repeatable).")
@click.option("--calib", help="Calibration data for wanda and sparsegpt: an .npz file, a "
              "directory of them, or a directory of images.")
@click.option("--image-size", help="Images: HxW (default: the input's fixed size).")
@click.option("--image-mean", default="0,0,0", show_default=True,
              help="Images: per-channel mean, after scaling to [0, 1].")
@click.option("--image-std", default="1,1,1", show_default=True,
              help="Images: per-channel std, after scaling to [0, 1].")
@click.option("--image-layout", default="NCHW", show_default=True, help="NCHW or NHWC.")
@click.option("--bgr", is_flag=True, help="Images: BGR channel order instead of RGB.")
@click.option("--calib-samples", type=int, help="Use at most this many calibration samples.")
@click.option("--batch-size", type=int, default=8, show_default=True,
              help="Calibration batch size.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--report", "report_path", help="Write a JSON report here.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@handle_errors
def sparsify(model, output, pattern, sparsity, criterion, min_size, all_layers, ignore, fp16,
             storage, sparse_indices, input_shape, calib, image_size, image_mean, image_std,
             image_layout, bgr, calib_samples, batch_size, seed, report_path, quiet) -> None:
    """Zero weights of MODEL in an N:M or unstructured pattern; write a verified model."""
    _check_writable(Path(output))
    if report_path:
        _check_writable(Path(report_path))
    with calibration_progress(quiet or calib is None) as advance:
        sparse, report = api.sparsify(
            model, pattern, sparsity=sparsity, criterion=criterion, calib=calib,
            calib_samples=calib_samples, batch_size=batch_size,
            images=image_options(image_size, image_mean, image_std, image_layout, bgr),
            min_size=min_size, all_layers=all_layers, ignore=ignore, fp16=fp16,
            storage=storage, sparse_indices=sparse_indices,
            input_shapes=parse_input_shapes(input_shape), seed=seed, progress=advance)
    model_io.save(sparse, output)
    if report_path:
        write_json_atomic(report.to_dict(), report_path)
    if not quiet:
        counts = report.to_dict()["counts"]
        errors = ", ".join(f"{k} {v:.3g}" for k, v in report.output_error.items())
        click.echo(f"{output}: {counts['sparsified']} of {counts['candidates']} candidate "
                   f"weights {report.pattern} sparse ({counts['eligible']} eligible; "
                   f"criterion {report.criterion}); relative output error on sample inputs: "
                   f"{errors}; {report.seconds:.1f} s")
