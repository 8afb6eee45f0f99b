"""`onnxprune sparsify`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .. import api
from .. import model as model_io
from ..external import check_targets
from ..files import check_outputs, transaction
from . import main
from .common import (
    calibration_progress,
    distributed_flags,
    fanout,
    handle_errors,
    image_flags,
    image_options,
    json_text,
    max_memory_option,
    parse_input_shapes,
    rounds_option,
    seed_option,
)
from .finetuning import chain_flags, round_tuning

if TYPE_CHECKING:
    from ..sparsity import SparsifyReport


@main.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("-o", "--output", required=True, help="Where to write the sparsified model.")
@click.option("--pattern", default="2:4", show_default=True,
              help="2:4 or 4:8 (n non-zeros in every m along the axis TensorRT checks), or "
                   "unstructured.")
@click.option("--sparsity", type=float, help="Fraction of weights zeroed (unstructured; "
              "default 0.5).")
@click.option("--criterion", default="magnitude", show_default=True,
              help="magnitude; with --calib: wanda, sparsegpt, snip and movement (train "
                   "extra; --finetune-steps sets its steps, default 100).")
@click.option("--min-size", type=click.IntRange(min=0), help="Sparsify only layers with at "
              "least this many outputs and this reduction length [default: 256 for N:M, 0 "
              "for unstructured].")
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
@image_flags
@click.option("--calib-samples", type=click.IntRange(min=1),
              help="Use at most this many calibration samples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Calibration batch size.")
@max_memory_option
@seed_option
@distributed_flags
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="Numerical threads (BLAS, onnxruntime) of each process that works (0: "
                   "the libraries' defaults; one per worker with --workers).")
@click.option("--report", "report_path", help="Write a JSON report here.")
@click.option("--save-plan", help="Write the decisions (zero masks per layer, options, model "
              "fingerprint) to this JSON plan file.")
@click.option("--plan", "plan_path", help="Apply a saved plan's zero masks instead of "
              "choosing (another export of the same network; refused on another network).")
@rounds_option
@chain_flags
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@handle_errors
def sparsify(model: str, output: str, pattern: str, sparsity: float | None, criterion: str,
             min_size: int | None, all_layers: bool, ignore: tuple[str, ...], fp16: bool,
             storage: str, sparse_indices: str, input_shape: tuple[str, ...],
             calib: str | None, image_size: str | None, image_mean: str, image_std: str,
             image_layout: str, bgr: bool, calib_samples: int | None, batch_size: int,
             max_memory: int | None, seed: int, workers: int, ray_address: str | None,
             threads: int, report_path: str | None, save_plan: str | None,
             plan_path: str | None, rounds: int, finetune_steps: int | None,
             finetune_minutes: float | None, quiet: bool) -> None:
    """Zero weights of MODEL in an N:M or unstructured pattern; write a verified model."""
    check_outputs({"-o": output, "--report": report_path, "--save-plan": save_plan},
                  {"MODEL": model, "--calib": calib, "--plan": plan_path})
    check_targets(model, output)
    images = image_options(image_size, image_mean, image_std, image_layout, bgr)
    # movement fine-tunes as it scores: the budget is its own, with no second run after
    tuning = round_tuning(model, calib, finetune_steps, finetune_minutes, rounds, seed,
                          images, quiet) if criterion != "movement" else None
    solves = calib is not None and plan_path is None and criterion in ("wanda", "sparsegpt")
    with fanout(workers, ray_address, threads, solves) as runner, \
            calibration_progress(quiet or calib is None) as advance:
        sparse, report = api.sparsify(
            model, pattern, sparsity=sparsity, criterion=criterion, calib=calib,
            calib_samples=calib_samples, batch_size=batch_size, images=images,
            min_size=min_size, all_layers=all_layers, ignore=ignore, fp16=fp16,
            storage=storage, sparse_indices=sparse_indices,
            input_shapes=parse_input_shapes(input_shape), seed=seed, progress=advance,
            plan=plan_path, max_memory=max_memory, executor=runner, rounds=rounds,
            between_rounds=tuning if rounds > 1 else None,
            movement_budget=(finetune_steps, finetune_minutes))
    data = report.to_dict()
    if tuning:
        sparse, tuned = tuning.finish(sparse, data.get("rounds"))
        data["finetune"] = tuned.to_dict()
    with transaction() as outputs:
        model_io.stage(sparse, output, outputs)
        if report_path:
            outputs.write(report_path, json_text(data))
        if save_plan:
            outputs.write(save_plan, json_text(report.plan_document))
    if not quiet:
        _summary(output, report)


def _summary(output: str, report: SparsifyReport) -> None:
    """What was sparsified and the output error, then one line per round."""
    counts = report.to_dict()["counts"]
    errors = ", ".join(f"{k} {v:.3g}" for k, v in report.output_error.items())
    click.echo(f"{output}: {counts['sparsified']} of {counts['candidates']} candidate "
               f"weights {report.pattern} sparse ({counts['eligible']} eligible; "
               f"criterion {report.criterion}); relative output error on sample inputs: "
               f"{errors}; {report.seconds:.1f} s")
    for row in report.rounds or []:
        click.echo(f"round {row['round']}: sparsity {row['sparsity']:.3f} (reached "
                   f"{row['reached']:.3f} on {row['layers']} layers), output error "
                   f"{max(row['output_error'].values(), default=0.0):.4g}")

