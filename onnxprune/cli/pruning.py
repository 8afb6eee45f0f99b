"""`onnxprune prune`, and the readable reports it writes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import api
from .. import model as model_io
from ..errors import InputError
from ..external import check_targets
from ..files import check_outputs, transaction
from ..reporting import FidelityData
from . import main
from .common import (
    RidgeValue,
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
    warn,
)
from .finetuning import chain_flags, finetune_section, round_tuning

if TYPE_CHECKING:
    from ..reporting import Report
    from ..train.report import FinetuneReport


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
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="Intra-op threads for --target-latency, and the numerical threads "
                   "(BLAS, onnxruntime) of each process that works (0: the libraries' "
                   "defaults; one per worker with --workers).")
@click.option("--criterion", help="l1, l2, bn_scale, random, zero; with --calib: activation, "
              "apoz, variance, wanda, sensitivity (per-group ratios from measured output "
              "error), and with the train extra taylor, fisher, snip (gradients) "
              "[default: l1, or wanda with --calib].")
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
@click.option("--calib-samples", type=click.IntRange(min=1),
              help="Use at most this many calibration samples.")
@click.option("--eval", "eval_data", help="Held-out data (same forms as --calib) for the "
              "fidelity figures of --report-html/--report-md; never used to choose or refit "
              "[default: the calibration samples, which the report then says were fit to].")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Calibration batch size.")
@click.option("--reconstruct", help="none; bias: fold removed channels' mean contributions "
              "into the consumers' biases; lsq: least-squares refit of the kept weights (both "
              "need --calib) [default: none, or lsq with --calib].")
@click.option("--ridge", type=RidgeValue(0.0), default="0.1", show_default=True,
              help="Damping of the least-squares refit, relative to the mean channel "
                   "energy; auto: chosen per layer from 0.001-10 on held-out calibration "
                   "batches.")
@max_memory_option
@click.option("--sensitivity-samples", type=int, default=32, show_default=True,
              help="Calibration samples each sensitivity measurement runs on.")
@seed_option
@distributed_flags
@click.option("--report", "report_path", help="Write a JSON report here.")
@click.option("--save-plan", help="Write the decisions (groups, removed units, options, "
              "model fingerprint) to this JSON plan file.")
@click.option("--plan", "plan_path", help="Replay a saved plan instead of planning.")
@click.option("--report-html", help="Write a readable report (one self-contained HTML page): "
              "MACs, parameters and measured latency before and after, a chart of kept and "
              "removed channels per group, fidelity with --calib, groups left alone.")
@click.option("--report-md", help="The same report in Markdown.")
@rounds_option
@chain_flags
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout "
              "(no progress bars).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@handle_errors
def prune(model: str, output: str, ratio: float | None, head_ratio: float | None,
          hidden_ratio: float | None, target_macs: float | None,
          target_latency: float | None, target_energy: float | None, provider: str,
          threads: int, criterion: str | None, global_ranking: bool, max_ratio: float,
          round_to: int | None, min_channels: int, ignore: tuple[str, ...],
          input_shape: tuple[str, ...], calib: str | None, image_size: str | None,
          image_mean: str, image_std: str, image_layout: str, bgr: bool,
          calib_samples: int | None, eval_data: str | None, batch_size: int,
          reconstruct: str | None, ridge: float | str, max_memory: int | None,
          sensitivity_samples: int, seed: int, workers: int, ray_address: str | None,
          report_path: str | None, save_plan: str | None,
          plan_path: str | None, report_html: str | None, report_md: str | None,
          rounds: int, finetune_steps: int | None, finetune_minutes: float | None,
          as_json: bool, quiet: bool) -> None:
    """Remove channels from MODEL and write a verified, smaller model to OUTPUT."""
    quiet = quiet or as_json
    check_outputs({"-o": output, "--report": report_path, "--save-plan": save_plan,
                   "--report-html": report_html, "--report-md": report_md},
                  {"MODEL": model, "--calib": calib, "--eval": eval_data, "--plan": plan_path})
    check_targets(model, output)
    images = image_options(image_size, image_mean, image_std, image_layout, bgr)
    tuning = round_tuning(model, calib, finetune_steps, finetune_minutes, rounds, seed,
                          images, quiet)
    with fanout(workers, ray_address, threads, calib is not None) as runner, \
            calibration_progress(quiet or calib is None) as advance:
        pruned, report = api.prune(
            model, ratio, target_macs=target_macs, head_ratio=head_ratio,
            hidden_ratio=hidden_ratio, criterion=criterion, global_ranking=global_ranking,
            max_ratio=max_ratio, round_to=round_to, min_channels=min_channels, ignore=ignore,
            input_shapes=parse_input_shapes(input_shape), seed=seed, calib=calib,
            calib_samples=calib_samples, batch_size=batch_size, reconstruct=reconstruct,
            ridge=ridge, sensitivity_samples=sensitivity_samples, images=images,
            progress=advance, plan=plan_path,
            target_latency=target_latency, target_energy=target_energy, provider=provider,
            threads=threads, max_memory=max_memory, show_progress=not quiet,
            executor=runner, rounds=rounds, between_rounds=tuning if rounds > 1 else None)
    tuned = tuning.finish(pruned, report.rounds) if tuning else None
    pruned = tuned[0] if tuned else pruned
    fidelity_data = FidelityData(eval_data or calib, None if eval_data else calib_samples,
                                 held_out=eval_data is not None)
    readable = _readable_report(model, pruned, report, report_html or report_md,
                                fidelity_data, batch_size, images, quiet)
    configs = _runtime_configs(model, output, report)
    data = dict(report.to_dict(), **_extra(readable, tuned[1] if tuned else None))
    _write_outputs(pruned, output, configs, {report_path: json_text(data),
                   save_plan: json_text(report.plan_document)}, readable, report_html, report_md)
    _announce(report, data, output, as_json, quiet)


def _extra(readable: dict | None, tuned: FinetuneReport | None) -> dict:
    """What the JSON report adds to the prune report: the readable report's latency and
    fidelity, and the chained fine-tuning's report (also added to the readable one)."""
    extra = {k: readable[k] for k in ("latency", "fidelity")} if readable else {}
    if tuned:
        extra["finetune"] = tuned.to_dict()
        if readable:
            readable["finetune"] = finetune_section(tuned)
    return extra


def _announce(report: Report, data: dict, output: str, as_json: bool, quiet: bool) -> None:
    """The report's warnings, then the report as JSON or a summary."""
    warn(report.warnings, quiet)
    if as_json:
        click.echo(json_text(data))
    elif not quiet:
        from ..display import prune_summary

        prune_summary(report, output)
        if report.rounds:
            from ..display import rounds_table

            rounds_table(report.rounds)


def _write_outputs(pruned, output: str, configs: dict[Path, str], texts: dict,
                   readable: dict | None, report_html: str | None, report_md: str | None
                   ) -> None:
    """The model, runtime configurations, JSON texts (by path; None: not asked) and
    readable reports, written together or not at all."""
    with transaction() as outputs:
        model_io.stage(pruned, output, outputs)
        for path, text in [*configs.items(), *texts.items()]:
            if path:
                outputs.write(path, text)
        _write_readable(outputs, readable, report_html, report_md)


def _runtime_configs(model, output, report) -> dict[Path, str]:
    """Runtime configurations beside MODEL with their pruned sizes, to go beside OUTPUT
    (never over MODEL's own: a warning says so); their warnings join the report's."""
    from ..files import same_file
    from ..runtime_config import pruned_configs

    texts, notes = pruned_configs(model, report)
    configs = {}
    for name, text in texts.items():
        target = Path(output).parent / name
        if target.exists() and same_file(target, Path(model).parent / name):
            notes.append(f"{name} is not rewritten: OUTPUT is in MODEL's folder, whose "
                         f"{name} states the original sizes")
        else:
            configs[target] = text
    report.warnings += notes
    return configs


def _readable_report(model, pruned, report, wanted, data: FidelityData, batch_size: int,
                     images, quiet: bool) -> dict | None:
    """Measure what the HTML/Markdown report shows beyond the prune report."""
    if not wanted:
        return None
    from ..progress import bar
    from ..reporting import measured_fidelity, measured_latency, report_document

    original = model_io.load(model)
    with bar("timing dense and pruned (runs)", 60, quiet) as advance:
        latency = measured_latency(original, pruned, report, progress=advance)
    fidelity = None
    if data.source is not None:
        with bar("fidelity on " + data.label, None, quiet):
            fidelity = measured_fidelity(original, pruned, data, batch_size, images)
    return report_document(report, latency, fidelity, _sensitivity_section(report),
                           title=f"onnxprune: {Path(model).name}")


def _sensitivity_section(report) -> dict | None:
    """The measured sensitivity curves (criterion sensitivity) as report rows, each
    distinct cut of a group once, and an inline plot (when matplotlib is installed)."""
    if not report.sensitivity:
        return None
    rows = []
    for curve in report.sensitivity:
        cuts = dict(zip(curve["removed"], curve["errors"], strict=True))
        rows += [{"group": curve["group"], "removed": removed, "units": curve["units"],
                  "ratio": removed / curve["units"], "error": error}
                 for removed, error in cuts.items()]
    try:
        from ..plot import data_uri, sensitivity_png

        plot = data_uri(sensitivity_png(report.sensitivity))
    except InputError:
        plot = None
    return {"rows": rows, "plot_png": plot}


def _write_readable(outputs, document: dict | None, html_path: str | None,
                    md_path: str | None) -> None:
    from ..report_html import render_html, render_markdown

    if document and html_path:
        outputs.write(html_path, render_html(document))
    if document and md_path:
        outputs.write(md_path, render_markdown(document))
