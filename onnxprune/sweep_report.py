"""What `onnxprune sweep` writes besides the models: the table (`sweep.json`,
`sweep.csv`), a plot (`sweep.png`, the plot extra) and one self-contained HTML page
(`sweep.html`)."""

from __future__ import annotations

import csv
import io
from html import escape

from .report_html import STYLE, html_table
from .sweep import Outcome, pareto_front, relative_error

COLUMNS = ["setting", "file", "macs", "macs_reduction", "params", "params_reduction",
           "relative_l2", "cosine", "top1_agreement", "latency_ms", "speedup", "pareto",
           "pareto_latency"]
# Measured on this machine at this moment: left out wherever results must repeat.
MEASURED = ("latency_ms", "speedup", "pareto_latency")


def table(dense: Outcome, outcomes: list[Outcome]) -> list[dict]:
    """One row per model, the dense one first: cost, fidelity on the held-out samples,
    latency, and whether it is on the Pareto front of (MACs, error) and of (latency,
    error)."""
    everything = [dense, *outcomes]
    errors = [relative_error(o) for o in everything]
    front = pareto_front([(o.macs, e) for o, e in zip(everything, errors, strict=True)])
    timed = pareto_front([(o.latency_ms or 0.0, e)
                          for o, e in zip(everything, errors, strict=True)])
    rows = []
    for index, outcome in enumerate(everything):
        outputs = outcome.fidelity["outputs"]
        top1 = [o["top1_agreement"] for o in outputs if o.get("top1_agreement") is not None]
        rows.append({
            "setting": outcome.setting.name,
            "file": f"{outcome.setting.stem}.onnx" if index else None,
            **outcome.setting.options,
            "macs": outcome.macs, "macs_reduction": dense.macs / max(outcome.macs, 1),
            "params": outcome.params,
            "params_reduction": dense.params / max(outcome.params, 1),
            "relative_l2": errors[index],
            "cosine": min((o["cosine"] for o in outputs), default=1.0),
            "top1_agreement": top1[0] if top1 else (1.0 if not index else None),
            "latency_ms": outcome.latency_ms,
            "speedup": (dense.latency_ms or 0.0) / max(outcome.latency_ms or 0.0, 1e-12),
            "pareto": front[index], "pareto_latency": timed[index],
            "warnings": list(outcome.warnings)})
    return rows


def document(model: str, grid: str, rows: list[dict], counts: tuple[int, int],
             latency: dict) -> dict:
    """The whole sweep as plain data (`sweep.json`)."""
    calibrated, held_out = counts
    return {
        "model": model, "grid": grid, "settings": len(rows) - 1,
        "samples": {"calibration": calibrated, "held_out": held_out},
        "held_out": held_out_statement(calibrated, held_out),
        "fidelity": "relative L2 error and cosine (lowest over float outputs) against the "
                    "dense model, top-1 agreement of the first classifier output",
        "pareto": "pareto: no other model has fewer or equal MACs and a lower or equal "
                  "error (one of them lower); pareto_latency: the same with measured latency",
        "latency": latency, "rows": rows}


def held_out_statement(calibrated: int, held_out: int) -> str:
    """What was held out, in words (the table and the page say it)."""
    return (f"fidelity is measured on the last {held_out} samples of the calibration data, "
            f"held out: never used for calibration, which used the first {calibrated}")


def csv_text(rows: list[dict]) -> str:
    """The table as CSV, one column per grid key after the fixed ones."""
    keys = [k for row in rows for k in row if k not in COLUMNS and k != "warnings"]
    header = COLUMNS[:2] + list(dict.fromkeys(keys)) + COLUMNS[2:]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _cells(row: dict) -> list[str]:
    top1 = row["top1_agreement"]
    return [row["setting"], f"{row['macs']:,}", f"{row['macs_reduction']:.2f}×",
            f"{row['params']:,}", f"{row['relative_l2']:.4f}", f"{row['cosine']:.4f}",
            "" if top1 is None else f"{top1:.3f}", f"{row['latency_ms']:.3f}",
            f"{row['speedup']:.2f}×", "●" if row["pareto"] else "",
            "●" if row["pareto_latency"] else ""]


HEADER = ["setting", "MACs", "fewer MACs", "parameters", "relative L2", "cosine", "top-1",
          "latency (ms)", "speedup", "Pareto (MACs)", "Pareto (latency)"]


def render_html(data: dict, plot_uri: str | None) -> str:
    """The sweep as one self-contained HTML page: the table, the plot, what was held
    out and how latency was measured."""
    latency = data["latency"]
    title = f"onnxprune sweep: {data['model']}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
             f"{escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(title)}</h1>",
             f"<p>grid <code>{escape(data['grid'])}</code>: {data['settings']} settings, "
             f"each pruned and verified. {escape(data['held_out'].capitalize())}.</p>",
             f"<p>Latency: median of {latency['runs']} runs on "
             f"{escape(latency['provider'])}, every model timed in turns with the others "
             "after all settings finished.</p>",
             "<h2>Models</h2>", html_table(HEADER, [_cells(r) for r in data["rows"]]),
             f"<p>{escape(data['pareto'])}.</p>"]
    if plot_uri:
        parts.append(f'<h2>Plot</h2><img alt="error against MACs and latency" '
                     f'src="{escape(plot_uri)}">')
    return "\n".join([*parts, "</body></html>"])
