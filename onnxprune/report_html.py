"""Readable reports of a prune run: one self-contained HTML page (inline CSS and
SVG, no external assets) or Markdown, rendered from `reporting.report_document`.

Sections: summary (MACs, parameters, latency before and after), kept and removed
channels per group (a bar chart), fidelity (when calibration data was given),
blocked and skipped groups with their reasons, and sensitivity (when given).
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from .reporting import ROUND_COLUMNS, round_cells

KEPT, REMOVED = "#2b6cb0", "#e05252"
ROW, LABEL_WIDTH, BAR_WIDTH = 18, 260, 420
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#1a202c;max-width:60em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #cbd5e0;padding:.3em .6em;
text-align:right}th:first-child,td:first-child{text-align:left}h2{margin-top:1.6em}
.text td{text-align:left}.legend span{display:inline-block;width:1em;height:1em;margin:0 .3em 0 1em;
vertical-align:middle}"""


def number(value: int | float) -> str:
    """Integers with thousands separators; other values with three decimals."""
    return f"{value:,}" if isinstance(value, int) else f"{value:,.3f}"


def fidelity_caption(fidelity: dict) -> str:
    """What the fidelity figures were measured on, plainly."""
    if fidelity.get("held_out"):
        return f"on {fidelity['samples']} held-out samples (--eval), never used to fit"
    return (f"on {fidelity['samples']} calibration samples: the samples the criterion "
            "and reconstruction were fit to, not held out (give --eval DATA for held-out "
            "figures)")

def summary_rows(document: dict) -> list[tuple[str, str, str, str]]:
    """(quantity, before, after, change) for MACs, parameters and latency."""
    report, latency = document["report"], document.get("latency")
    rows = [("MACs", number(report["macs_before"]), number(report["macs_after"]),
             f"{report['macs_reduction']:.2f}× fewer"),
            ("parameters", number(report["params_before"]), number(report["params_after"]),
             f"{report['params_before'] / max(report['params_after'], 1):.2f}× fewer")]
    if latency:
        rows.append((f"latency (ms, p50, {latency['provider'].removesuffix('ExecutionProvider')}"
                     f", batch {latency['batch_size']})", f"{latency['before_ms']:.3f}",
                     f"{latency['after_ms']:.3f}", f"{latency['speedup']:.2f}× faster"))
    return rows


def cut_groups(document: dict) -> list[dict]:
    """Groups the plan considered (neither blocked nor skipped), in id order."""
    return [g for g in document["report"]["groups"]
            if "blocked" not in g and "skipped" not in g]


def group_label(group: dict) -> str:
    producer = group["producers"][0] if group["producers"] else group["root"]
    return f"{group['id']} {group['kind']} {producer}"


def html_table(header: list[str], rows: list, css: str = "") -> str:
    """An HTML table of escaped cells."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table class=\"{css}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def channels_chart(groups: list[dict]) -> str:
    """A horizontal bar per group: kept units (blue) then removed units (red), each
    bar the group's full size; the label and `kept/size` are text in the SVG."""
    width = LABEL_WIDTH + BAR_WIDTH + 90
    height = ROW * len(groups) + 4
    bars = []
    for row, group in enumerate(groups):
        y = row * ROW + 2
        kept = group["kept"] / max(group["size"], 1) * BAR_WIDTH
        tip = (f"group {group['id']}: kept {group['kept']} of {group['size']} units "
               f"({group['size'] - group['kept']} removed)")
        label = group_label(group)
        label = label if len(label) <= 40 else label[:39] + "…"
        bars.append(
            f'<g class="group" data-group="{group["id"]}"><title>{escape(tip)}</title>'
            f'<text x="0" y="{y + 12}" font-size="11">{escape(label)}</text>'
            f'<rect class="kept" x="{LABEL_WIDTH}" y="{y}" width="{kept:.1f}" height="14" '
            f'fill="{KEPT}"/><rect class="removed" x="{LABEL_WIDTH + kept:.1f}" y="{y}" '
            f'width="{BAR_WIDTH - kept:.1f}" height="14" fill="{REMOVED}"/>'
            f'<text x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{y + 12}" font-size="11">'
            f'{group["kept"]}/{group["size"]}</text></g>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="kept and removed units per group">{"".join(bars)}</svg>')


def fidelity_rows(document: dict) -> list[list[str]]:
    """Per output: cosine, relative L2 error, largest absolute error, top-1 agreement."""
    fidelity = document.get("fidelity") or {"outputs": []}
    return [[o["name"], f"{o['cosine']:.5f}", f"{o['relative_l2']:.3e}",
             f"{o['max_abs_error']:.3e}",
             "" if o.get("top1_agreement") is None else f"{o['top1_agreement']:.3f}"]
            for o in fidelity["outputs"]]


def left_alone_rows(document: dict) -> list[list[str]]:
    """Groups not cut: id, kind, size, produced by, and why."""
    return [[str(g["id"]), g["kind"], str(g["size"]), ", ".join(g["producers"][:2]) or g["root"],
             ("blocked: " + g["blocked"]) if "blocked" in g else ("skipped: " + g["skipped"])]
            for g in document["report"]["groups"] if "blocked" in g or "skipped" in g]


SENSITIVITY_HEADER = ["group", "units removed", "fraction removed", "output error"]


def sensitivity_rows(rows: list[dict]) -> list[list[str]]:
    """One row per distinct cut of a group (ratios that round to the same number of
    removed units measure the same model, so they are shown once)."""
    shown, seen = [], set()
    for row in rows:
        removed = row.get("removed", row["ratio"])
        if (row["group"], removed) in seen:
            continue
        seen.add((row["group"], removed))
        units = f"{removed} of {row['units']}" if "units" in row else ""
        shown.append([row["group"], units, f"{row['ratio']:.2f}", f"{row['error']:.4g}"])
    return shown


def sensitivity_html(sensitivity: dict | None) -> str:
    """The sensitivity section: `{"rows": [{"group", "removed", "units", "ratio",
    "error"}...], "plot_png": path or data URI}` (either may be absent); empty
    without data."""
    if not sensitivity:
        return ""
    parts = ["<h2>Sensitivity</h2>"]
    rows = sensitivity.get("rows") or []
    if rows:
        parts.append(html_table(SENSITIVITY_HEADER, sensitivity_rows(rows)))
    plot = sensitivity.get("plot_png")
    if plot:
        parts.append(f'<img alt="output error against ratio per group" '
                     f'src="{escape(_data_uri(plot))}">')
    return "".join(parts)


def _data_uri(plot: str) -> str:
    if plot.startswith("data:"):
        return plot
    return "data:image/png;base64," + base64.b64encode(Path(plot).read_bytes()).decode()


def render_html(document: dict) -> str:
    """The whole report as one self-contained HTML page."""
    report, groups = document["report"], cut_groups(document)
    removed = sum(g["size"] - g["kept"] for g in groups)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{escape(document['title'])}</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(document['title'])}</h1>",
             f"<p>criterion {escape(report['criterion'])}, reconstruction "
             f"{escape(report['reconstruct'])}, kept counts rounded to multiples of "
             f"{report['round_to']}; {report['seconds']:.2f} s.</p>",
             "<h2>Summary</h2>", html_table(["", "before", "after", "change"],
                                        summary_rows(document)),
             f"<h2>Channels per group</h2><p>{len(groups)} groups considered, "
             f"{sum(g['kept'] < g['size'] for g in groups)} cut, {removed} units removed."
             f"</p><p class=\"legend\"><span style=\"background:{KEPT}\"></span>kept"
             f"<span style=\"background:{REMOVED}\"></span>removed</p>",
             channels_chart(groups)]
    if document.get("fidelity"):
        parts += [f"<h2>Fidelity</h2><p>{escape(fidelity_caption(document['fidelity']))}"
                  "</p>", html_table(["output", "cosine", "relative L2", "max |error|",
                                         "top-1 agreement"], fidelity_rows(document))]
    alone = left_alone_rows(document)
    if alone:
        parts += ["<h2>Groups left alone</h2>",
                  html_table(["group", "kind", "size", "produced by", "reason"], alone, "text")]
    if report.get("rounds"):
        parts += ["<h2>Rounds</h2>", html_table(list(ROUND_COLUMNS), [
            round_cells(row) for row in report["rounds"]])]
    parts += [sensitivity_html(document.get("sensitivity")),
              finetune_html(document.get("finetune")), "</body></html>"]
    return "\n".join(parts)


def _md_table(header: list[str], rows: list) -> list[str]:
    clean = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + \
        ["| " + " | ".join(row) + " |" for row in clean] + [""]


def text_bar(kept: int, size: int, width: int = 20) -> str:
    """Kept units as filled blocks, removed as light ones."""
    filled = round(kept / max(size, 1) * width)
    return "█" * filled + "░" * (width - filled)


def render_markdown(document: dict) -> str:
    """The report as Markdown (the chart as text bars)."""
    report, groups = document["report"], cut_groups(document)
    lines = [f"# {document['title']}", "",
             f"criterion {report['criterion']}, reconstruction {report['reconstruct']}, kept "
             f"counts rounded to multiples of {report['round_to']}.", "", "## Summary", ""]
    lines += _md_table(["", "before", "after", "change"], summary_rows(document))
    lines += ["## Channels per group", "", "█ kept, ░ removed", ""]
    lines += _md_table(["group", "kept/size", "chart"],
                       [[group_label(g), f"{g['kept']}/{g['size']}",
                         text_bar(g["kept"], g["size"])] for g in groups])
    if document.get("fidelity"):
        lines += ["## Fidelity", "", fidelity_caption(document["fidelity"]), ""]
        lines += _md_table(["output", "cosine", "relative L2", "max |error|",
                            "top-1 agreement"], fidelity_rows(document))
    alone = left_alone_rows(document)
    if alone:
        lines += ["## Groups left alone", ""]
        lines += _md_table(["group", "kind", "size", "produced by", "reason"], alone)
    if report.get("rounds"):
        lines += ["## Rounds", ""] + _md_table(list(ROUND_COLUMNS), [
            round_cells(row) for row in report["rounds"]])
    lines += sensitivity_markdown(document.get("sensitivity"))
    return "\n".join(lines)


def sensitivity_markdown(sensitivity: dict | None) -> list[str]:
    """The sensitivity section in Markdown (a table, and the plot by path)."""
    if not sensitivity:
        return []
    lines = ["## Sensitivity", ""]
    if sensitivity.get("rows"):
        lines += _md_table(SENSITIVITY_HEADER, sensitivity_rows(sensitivity["rows"]))
    plot = sensitivity.get("plot_png")
    if plot and not plot.startswith("data:"):
        lines += [f"![output error against ratio per group]({plot})", ""]
    return lines


def finetune_rows(report: dict) -> list[tuple[str, str]]:
    """(quantity, value) rows of a fine-tuning report."""
    gain = report["validation_reduction"]
    return [("loss", report["loss"]),
            ("learning rate", f"{report['lr']:g} ({report.get('lr_schedule', 'constant')})"),
            ("steps", str(report["steps"])),
            ("stopped by", report["stop_reason"]),
            ("best step", f"{report['best_step']}" + ("" if report["improved"] else
                                                      " (input weights kept)")),
            ("validation error before", f"{report['validation_before']:.4g}"),
            ("validation error after", f"{report['validation_after']:.4g}"),
            ("reduction", f"{gain:.2f}×" if gain else "-"),
            ("samples (training / validation)",
             f"{report['train_samples']} / {len(report['validation_samples'])}"),
            ("trainable weights", number(report["trainable"])),
            ("zeros kept", number(report["masked_zeros"])),
            ("seconds", f"{report['seconds']:.1f}")]


def render_finetune_html(report: dict, title: str, plot: str | None = None) -> str:
    """A fine-tuning report as one self-contained HTML page (with the loss-curve plot,
    a PNG data URI, when given)."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(title)}</h1>", "<h2>Summary</h2>",
             html_table(["", "value"], finetune_rows(report), "text")]
    if plot:
        parts.append(f"<h2>Loss curves</h2><img alt=\"loss curves\" src=\"{plot}\">")
    parts += ["<h2>Checks</h2><ul>"] + [f"<li>{escape(c)}</li>" for c in report["checks"]]
    return "\n".join([*parts, "</ul></body></html>"])


def finetune_html(section: dict | None) -> str:
    """The fine-tuning section of a prune page: its summary and loss curves."""
    if not section:
        return ""
    plot = section.get("plot_png")
    return "\n".join(["<h2>Fine-tuning</h2>",
                      html_table(["", "value"], finetune_rows(section["report"]), "text")]
                     + ([f"<img alt=\"loss curves\" src=\"{plot}\">"] if plot else []))
