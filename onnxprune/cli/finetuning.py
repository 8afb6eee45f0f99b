"""`onnxprune finetune`, and the `--finetune-steps/--finetune-minutes` chain that
`prune` and `sparsify` run on their result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import model as model_io
from ..errors import InputError
from ..files import check_outputs, transaction
from . import main
from .common import (
    FiniteFloat,
    handle_errors,
    image_flags,
    image_options,
    json_text,
    seed_option,
)

if TYPE_CHECKING:
    from onnx import ModelProto

    from ..images import ImageOptions
    from ..train.report import FinetuneReport
    from .common import Command


@main.command()
@click.argument("student", type=click.Path(dir_okay=True))
@click.option("--teacher", required=True, help="The dense model the student is fit to.")
@click.option("--data", required=True, help="Inputs to distill on: an .npz file (one array "
              "per model input, first axis = samples; optional 'labels'), a directory of "
              "them, or a directory of images.")
@click.option("-o", "--output", required=True, help="Where to write the fine-tuned model.")
@click.option("--steps", type=click.IntRange(min=1), help="Optimizer steps at most "
              "[default: 500 without --minutes].")
@click.option("--minutes", type=FiniteFloat(0.0), help="Wall-clock minutes at most.")
@click.option("--lr", type=FiniteFloat(0.0), default=1e-4, show_default=True,
              help="Adam's learning rate.")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant",
              show_default=True, help="Hold the learning rate, or decay it to 0 along a "
              "cosine over the --steps/--minutes budget.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Samples per step.")
@click.option("--loss", default="mse", show_default=True, help="mse, kl or cosine "
              "(see README).")
@click.option("--temperature", type=FiniteFloat(0.0), default=1.0, show_default=True,
              help="Softmax temperature of --loss kl.")
@click.option("--match-hidden", is_flag=True, help="Also fit the intermediate tensors that "
              "both graphs hold with the same name and shape.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Fraction of the samples held out for validation (chosen with --seed).")
@click.option("--augment", help="Comma-separated: flip, crop, noise (4-D image inputs).")
@click.option("--eval-every", type=click.IntRange(min=1), default=25, show_default=True,
              help="Validate every this many steps.")
@click.option("--patience", type=click.IntRange(min=1), default=8, show_default=True,
              help="Stop after this many validations without improvement.")
@click.option("--group-lasso", type=FiniteFloat(0.0), default=0.0,
              show_default=True, help="Strength λ of a group lasso that drives whole "
              "channel groups' units to exact zeros (then prune --criterion zero).")
@image_flags
@seed_option
@click.option("--report", "report_path", help="Write a report here: JSON, or an HTML page "
              "(with the loss curves) when the name ends in .html.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@handle_errors
def finetune(student: str, teacher: str, data: str, output: str, steps: int | None,
             minutes: float | None, lr: float, lr_schedule: str, batch_size: int, loss: str,
             temperature: float, match_hidden: bool, val_fraction: float, augment: str | None,
             eval_every: int, patience: int, group_lasso: float, image_size: str | None,
             image_mean: str, image_std: str, image_layout: str, bgr: bool, seed: int,
             report_path: str | None, as_json: bool, quiet: bool) -> None:
    """Distill STUDENT toward --teacher on --data, keeping its structure and zeros."""
    quiet = quiet or as_json
    check_outputs({"-o": output, "--report": report_path},
                  {"STUDENT": student, "--teacher": teacher, "--data": data})
    keywords = dict(steps=steps, minutes=minutes, lr=lr, lr_schedule=lr_schedule,
                    batch_size=batch_size, loss=loss,
                    temperature=temperature, match_hidden=match_hidden,
                    val_fraction=val_fraction, augment=tuple((augment or "").split(",")),
                    seed=seed, eval_every=eval_every, patience=patience,
                    group_lasso=group_lasso,
                    images=image_options(image_size, image_mean, image_std, image_layout, bgr))
    tuned, report = run_finetune(student, teacher, data, keywords, quiet)
    with transaction() as outputs:
        model_io.stage(tuned, output, outputs)
        if report_path:
            outputs.write(report_path, report_text(report, report_path, student))
    if as_json:
        click.echo(json_text(report.to_dict()))
    elif not quiet:
        click.echo(f"{output}: {summary(report)}")


def run_finetune(student: ModelProto | str, teacher: str, data: str, keywords: dict,
                 quiet: bool) -> tuple[ModelProto, FinetuneReport]:
    """api.finetune with a progress bar showing the current loss."""
    from ..progress import bar
    from ..train.finetune import FinetuneOptions, finetune

    options = FinetuneOptions(**keywords)
    with bar("fine-tuning", options.steps, quiet) as advance:
        progress = None if advance is None else (
            lambda loss: advance(1, status=f"(loss {loss:.4g})"))
        return finetune(student, teacher, data, FinetuneOptions(**keywords,
                                                                progress=progress))


def summary(report: FinetuneReport) -> str:
    """One line: validation error before and after, steps and the stop reason (and the
    units the group lasso zeroed)."""
    zeros = "" if report.lasso_units is None else (
        f"; {report.zero_units} of {report.lasso_units} units zero")
    return _progress_line(report) + zeros


def _progress_line(report: FinetuneReport) -> str:
    if not report.improved:
        return (f"no step improved on the input (validation error "
                f"{report.validation_before:.4g}); the input weights were kept; "
                f"{report.steps} steps ({report.stop_reason}), {report.seconds:.1f} s")
    gain = report.validation_before / max(report.validation_after, 1e-30)
    return (f"validation error {report.validation_before:.4g} -> "
            f"{report.validation_after:.4g} ({gain:.2f}× lower) "
            f"at step {report.best_step} of {report.steps} ({report.stop_reason}); "
            f"{report.seconds:.1f} s")


def report_text(report: FinetuneReport, path: str, student: ModelProto | str) -> str:
    """JSON, or an HTML page with the loss curves when `path` ends in .html."""
    if not str(path).lower().endswith((".html", ".htm")):
        return json_text(report.to_dict())
    from ..report_html import render_finetune_html

    name = Path(student).name if isinstance(student, str) else "model"
    return render_finetune_html(report.to_dict(), f"onnxprune finetune: {name}",
                                loss_plot(report))


def loss_plot(report: FinetuneReport) -> str | None:
    """The loss curves as a PNG data URI, or None without matplotlib."""
    try:
        from ..plot import data_uri, loss_curves_png

        return data_uri(loss_curves_png(report.loss_curve, report.validation_curve))
    except InputError:
        return None


def finetune_section(report: FinetuneReport) -> dict:
    """What a prune report page shows of a chained fine-tuning."""
    return {"report": report.to_dict(), "plot_png": loss_plot(report)}


def chain_flags(func: Command) -> Command:
    """--finetune-steps and --finetune-minutes of prune and sparsify."""
    for option in reversed([
        click.option("--finetune-steps", type=click.IntRange(min=1), help="Then fine-tune "
                     "the result by distillation from MODEL on --calib for at most this "
                     "many steps (see finetune)."),
        click.option("--finetune-minutes", type=FiniteFloat(0.0), help="Then fine-tune for "
                     "at most this many minutes."),
    ]):
        func = option(func)
    return func


def check_chain(steps: int | None, minutes: float | None, calib: str | None) -> bool:
    """Whether to chain fine-tuning; refuses it without calibration data."""
    if steps is None and minutes is None:
        return False
    if calib is None:
        raise InputError("--finetune-steps and --finetune-minutes need --calib (the data "
                         "to fine-tune on)")
    from .. import train  # noqa: F401  (refuses now, before any work, without JAX)

    return True


def chained(result: ModelProto, model: str, calib: str, steps: int | None,
            minutes: float | None, seed: int, images: ImageOptions | None, quiet: bool
            ) -> tuple[ModelProto, FinetuneReport]:
    """The result fine-tuned from MODEL on the calibration data, and its report."""
    return run_finetune(result, model, calib, dict(steps=steps, minutes=minutes, seed=seed,
                                                   images=images), quiet)


def split_budget(steps: int | None, minutes: float | None, rounds: int
                 ) -> list[tuple[int | None, float | None]]:
    """Each round's share of a fine-tuning budget: the steps in near-equal whole parts
    (the larger ones last, at least one each), the minutes in equal parts."""
    if steps is None:
        shares: list[int | None] = [None] * rounds
    else:
        shares = [max(1, steps // rounds + (k >= rounds - steps % rounds))
                  for k in range(rounds)]
    return [(share, None if minutes is None else minutes / rounds) for share in shares]


@dataclass
class RoundTuning:
    """Fine-tuning between rounds (`between_rounds`): each round's share of the budget
    spent distilling from MODEL on the calibration data; the reports kept in order."""

    model: str
    calib: str
    budgets: list[tuple[int | None, float | None]]
    seed: int
    images: ImageOptions | None
    quiet: bool
    reports: list[FinetuneReport] = field(default_factory=list)

    def __call__(self, current: ModelProto, number: int) -> ModelProto:
        steps, minutes = self.budgets[number - 1]
        tuned, report = chained(current, self.model, self.calib, steps, minutes, self.seed,
                                self.images, self.quiet)
        self.reports.append(report)
        return tuned

    def finish(self, result: ModelProto, rows: list[dict] | None
               ) -> tuple[ModelProto, FinetuneReport]:
        """The last round's share spent on the final result; each round's fine-tuning,
        in brief, added to its report row (`rows`: one per round, or None)."""
        tuned = self(result, len(self.budgets))
        for row, report in zip(rows or [], self.reports, strict=False):
            row["finetune"] = {"steps": report.steps,
                               "validation_before": report.validation_before,
                               "validation_after": report.validation_after,
                               "improved": report.improved}
        return tuned, self.reports[-1]


def round_tuning(model: str, calib: str | None, steps: int | None, minutes: float | None,
                 rounds: int, seed: int, images: ImageOptions | None, quiet: bool
                 ) -> RoundTuning | None:
    """The chained fine-tuning of prune and sparsify, its budget shared out over the
    rounds; None when not asked (refused without calibration data)."""
    if not check_chain(steps, minutes, calib):
        return None
    return RoundTuning(model, calib, split_budget(steps, minutes, rounds), seed, images,
                       quiet)
