"""Plots of sensitivity curves, sweeps and fine-tuning loss curves (matplotlib, an
optional extra: `pip install 'onnxprune[plot]'`)."""

from __future__ import annotations

import base64
import io

from .errors import InputError


def sensitivity_png(curves: list[dict], title: str = "Sensitivity") -> bytes:
    """Output error against the fraction removed, one line per group, as PNG bytes."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(8, 5), dpi=100)
    for curve in curves:
        ratios = [0.0] + [r / curve["units"] for r in curve["removed"]]
        errors = [0.0, *curve["errors"]]
        axes.plot(ratios, errors, marker="o", linewidth=1,
                  label=f"group {curve['group']} ({curve['kind']}, {curve['units']})")
        axes.annotate(str(curve["group"]), (ratios[-1], errors[-1]), fontsize=7,
                      xytext=(3, 0), textcoords="offset points")
    axes.set_xlabel("fraction of the group removed")
    axes.set_ylabel("relative L2 output error")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if len(curves) <= 20:
        axes.legend(fontsize=7, ncol=2)
    return _png(figure, pyplot)


def loss_curves_png(losses: list, validation: list, title: str = "Fine-tuning") -> bytes:
    """The training loss per step and the validation error per validation, as PNG
    bytes (logarithmic loss axis)."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
    if losses:
        axes.plot(*zip(*losses, strict=True), linewidth=0.8, alpha=0.7, label="training loss")
    axes.plot(*zip(*validation, strict=True), marker="o", linewidth=1.2,
              label="validation error")
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure, pyplot)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def pareto_png(rows: list[dict], title: str = "Sweep") -> bytes:
    """Relative L2 error on held-out samples against MACs and against measured latency,
    one point per row (`setting`, `macs`, `latency_ms`, `relative_l2`, `pareto`,
    `pareto_latency`), the Pareto front of each panel joined by a line; PNG bytes."""
    pyplot = _pyplot()
    figure, panels = pyplot.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    for axes, key, flag, label in ((panels[0], "macs", "pareto", "MACs"),
                                   (panels[1], "latency_ms", "pareto_latency",
                                    "latency (ms, median)")):
        xs, ys = [r[key] for r in rows], [r["relative_l2"] for r in rows]
        axes.scatter(xs, ys, s=18, color="#2b6cb0")
        front = sorted((r[key], r["relative_l2"]) for r in rows if r[flag])
        axes.plot([p[0] for p in front], [p[1] for p in front], color="#e05252",
                  drawstyle="steps-post", linewidth=1, label="Pareto front")
        for index, (x, y) in enumerate(zip(xs, ys, strict=True)):
            axes.annotate(str(index), (x, y), fontsize=7, xytext=(3, 2),
                          textcoords="offset points")
        axes.set_xlabel(label)
        axes.set_ylabel("relative L2 error (held-out)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    return _png(figure, pyplot)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise InputError("plots need matplotlib: pip install 'onnxprune[plot]'") from None
    return pyplot


def _png(figure, pyplot) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    pyplot.close(figure)
    return buffer.getvalue()
