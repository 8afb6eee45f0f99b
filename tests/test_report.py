"""Readable reports: the page a reader sees in a browser carries the figures of the
JSON report; the chart shows each group's kept and removed units."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from browser import rendered_dom, screenshot, visible_text
from click.testing import CliRunner
from model_files import real_path

from onnxprune import prune
from onnxprune.cli import main
from onnxprune.report_html import KEPT, REMOVED, render_html, render_markdown
from onnxprune.reporting import report_document

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"


def text_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Dark strokes of varied length on light backgrounds, normalized as PP-OCR does."""
    rng = np.random.default_rng(seed)
    images = np.full((count, 3, size, size), 0.9, np.float32)
    for image in images:
        for _ in range(40):
            y, x = rng.integers(0, size - 8, 2)
            image[:, y:y + rng.integers(2, 8), x:x + rng.integers(4, size // 3)] = 0.1
    return (images - 0.5) / 0.5


def row_numbers(text: str, label: str) -> list[str]:
    """The figures on the summary line that starts with `label`."""
    line = next(line for line in text.splitlines() if line.strip().startswith(label))
    return re.findall(r"[\d,]+\.\d+|[\d,]+", line[len(line) - len(line.lstrip()) + len(label):])


def test_html_report_of_ppocr_detector_shows_the_json_figures(tmp_path):
    model = real_path("ppocr_det_v4")
    np.savez(tmp_path / "calib.npz", x=text_images(4, 320))
    page, data = tmp_path / "report.html", tmp_path / "report.json"
    result = CliRunner().invoke(main, [
        "prune", str(model), "-o", str(tmp_path / "small.onnx"), "--ratio", "0.3",
        "--input-shape", "x:1x3x320x320", "--calib", str(tmp_path / "calib.npz"),
        "--report", str(data), "--report-html", str(page), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(data.read_text())
    text = visible_text(rendered_dom(page))
    assert row_numbers(text, "MACs")[:2] == [f"{report['macs_before']:,}",
                                             f"{report['macs_after']:,}"]
    assert row_numbers(text, "parameters")[:2] == [f"{report['params_before']:,}",
                                                   f"{report['params_after']:,}"]
    latency = report["latency"]
    assert row_numbers(text, "latency")[-3:] == [
        f"{latency['before_ms']:.3f}", f"{latency['after_ms']:.3f}", f"{latency['speedup']:.2f}"]
    fidelity = report["fidelity"]["outputs"][0]
    assert f"{fidelity['name']} {fidelity['cosine']:.5f}" in " ".join(text.split())
    considered = [g for g in report["groups"] if "blocked" not in g and "skipped" not in g]
    shown = re.findall(r"(\d+)/(\d+)", text.split("Channels per group")[1].split("Fidelity")[0])
    assert [(int(k), int(s)) for k, s in shown] == [(g["kept"], g["size"]) for g in considered]
    blocked = next(g for g in report["groups"] if "blocked" in g)
    assert blocked["blocked"] in " ".join(text.split())
    _check_bar_colours(page, tmp_path / "shot.png", considered)


def _check_bar_colours(page: Path, shot: Path, groups: list[dict]) -> None:
    """Removed (red) over all bar pixels matches the mean removed fraction."""
    from PIL import Image

    pixels = np.asarray(Image.open(screenshot(page, shot, height=900 + 20 * len(groups)))
                        .convert("RGB")).reshape(-1, 3)
    counts = [int((pixels == np.frombuffer(bytes.fromhex(c[1:]), np.uint8)).all(1).sum())
              for c in (KEPT, REMOVED)]
    assert min(counts) > 0, "the chart is not drawn"
    removed = float(np.mean([1 - g["kept"] / g["size"] for g in groups]))
    assert abs(counts[1] / sum(counts) - removed) < 0.02


def _document(**extra):
    _, report = prune(str(DEMO), 0.5, input_shapes={"x": (1, 3, 48, 192)})
    return report_document(report, title="a <b> report", **extra)


def test_chart_has_one_bar_per_considered_group_and_escapes_names():
    document = _document()
    html = render_html(document)
    considered = [g for g in document["report"]["groups"]
                  if "blocked" not in g and "skipped" not in g]
    assert html.count('class="group"') == len(considered)
    assert "a &lt;b&gt; report" in html and "a <b> report" not in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    widths = [float(w) for w in re.findall(r'class="kept" x="\d+" y="\d+" width="([\d.]+)"',
                                           html)]
    expected = [g["kept"] / g["size"] * 420 for g in considered]
    assert np.allclose(widths, expected, atol=0.06)
    assert "Fidelity" not in html and "Sensitivity" not in html and "latency" not in html


def test_markdown_report_tables_and_bars():
    document = _document(latency={"provider": "CPUExecutionProvider", "batch_size": 1,
                                  "runs": 3, "before_ms": 2.0, "after_ms": 1.0,
                                  "speedup": 2.0})
    text = render_markdown(document)
    report = document["report"]
    assert f"| MACs | {report['macs_before']:,} | {report['macs_after']:,} |" in text
    assert "| latency (ms, p50, CPU, batch 1) | 2.000 | 1.000 | 2.00× faster |" in text
    half = next(g for g in report["groups"] if g["kept"] * 2 == g["size"])
    assert f"{half['kept']}/{half['size']} | " + "█" * 10 + "░" * 10 in text


def test_sensitivity_slot_renders_table_and_inline_plot(tmp_path):
    from PIL import Image

    plot = tmp_path / "s.png"
    Image.new("RGB", (4, 4), "white").save(plot)
    rows = [{"group": 3, "ratio": 0.5, "error": 0.0125}]
    html = render_html(_document(sensitivity={"rows": rows, "plot_png": str(plot)}))
    assert "<h2>Sensitivity</h2>" in html and "<td>0.0125</td>" in html
    assert 'src="data:image/png;base64,' in html and str(plot) not in html


@pytest.mark.parametrize("flag", ["--report-html", "--report-md"])
def test_unwritable_report_path_is_refused_before_work(tmp_path, flag):
    result = CliRunner().invoke(main, ["prune", str(DEMO), "-o", str(tmp_path / "o.onnx"),
                                       "--ratio", "0.5", flag, "/no/such/dir/r.html"])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_html_report_of_ppocr_detector_shows_its_sensitivity(tmp_path):
    """Pruned with measured sensitivity: the page shows each measured point of the JSON
    report and the plot."""
    pytest.importorskip("matplotlib")
    model = real_path("ppocr_det_v4")
    np.savez(tmp_path / "calib.npz", x=text_images(4, 96))
    page, data = tmp_path / "report.html", tmp_path / "report.json"
    result = CliRunner().invoke(main, [
        "prune", str(model), "-o", str(tmp_path / "small.onnx"), "--ratio", "0.3",
        "--criterion", "sensitivity", "--input-shape", "x:1x3x96x96", "--calib",
        str(tmp_path / "calib.npz"), "--report", str(data), "--report-html", str(page), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(data.read_text())
    dom = rendered_dom(page)
    section = " ".join(visible_text(dom).split("Sensitivity")[1].split())
    points = {(c["group"], removed, c["units"], error) for c in report["sensitivity"]
              for removed, error in zip(c["removed"], c["errors"], strict=True)}
    assert len(report["sensitivity"]) > 10 and len(points) >= len(report["sensitivity"])
    for group, removed, units, error in points:
        assert f"{group} {removed} of {units} {removed / units:.2f} {error:.4g}" in section
    assert section.count(" of ") == len(points)  # each distinct cut once
    assert re.search(r'<img alt="output error against ratio per group" '
                     r'src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', dom)


class PageReader(HTMLParser):
    """What a reader finds on a page, without a browser: the tables under each heading
    (cell texts), the chart's bars, the text of paragraphs, and every external link."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.bars: list[dict] = []
        self.paragraphs: list[str] = []
        self.links: list[str] = []
        self.heading, self._text, self._row, self._cell = "", None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [v for k, v in attrs.items() if k in ("src", "href")
                       and not v.startswith("data:")]
        if tag in ("h2", "p", "td", "th") or (tag == "text" and self.bars):
            self._text = []
        if tag == "tr":
            self._row = []
        elif tag == "g" and attrs.get("class") == "group":
            self.bars.append({"id": int(attrs["data-group"])})
        elif tag == "rect" and self.bars:
            self.bars[-1][attrs["class"]] = float(attrs["width"])

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        text = "".join(self._text or []).strip()
        if tag == "h2":
            self.heading = text
        elif tag == "p":
            self.paragraphs.append(text)
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(text)
        elif tag == "tr":
            self.tables.setdefault(self.heading, []).append(self._row)
            self._row = None
        elif tag == "text" and self.bars:
            self.bars[-1].setdefault("texts", []).append(text)
        if tag in ("h2", "p", "td", "th", "text"):
            self._text = None


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """The rows (header included, separator left out) of each table under a `##`."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("|") and not line.startswith("| ---") and "--- |" not in line:
            tables.setdefault(heading, []).append(
                [cell.strip() for cell in line.strip()[1:-1].split(" | ")])
    return tables


def test_html_and_markdown_reports_from_the_cli_carry_the_json_figures(tmp_path, monkeypatch):
    from test_bench import fake_times

    from onnxprune import bench

    monkeypatch.setattr(bench, "interleaved_times", fake_times(2.0, 0.5))
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(4).standard_normal(
        (6, 3, 48, 192)).astype(np.float32))
    paths = {flag: tmp_path / name for flag, name in (
        ("--report", "r.json"), ("--report-html", "r.html"), ("--report-md", "r.md"))}
    result = CliRunner().invoke(main, [
        "prune", str(DEMO), "-o", str(tmp_path / "s.onnx"), "--ratio", "0.5", "--calib",
        str(tmp_path / "c.npz"), "--criterion", "l1", "--reconstruct", "none",
        "--input-shape", "x:1x3x48x192", "-q",
        *[str(a) for pair in paths.items() for a in pair]])
    assert result.exit_code == 0, result.output
    report = json.loads(paths["--report"].read_text())
    page = PageReader()
    page.feed(paths["--report-html"].read_text())
    tables = markdown_tables(paths["--report-md"].read_text())
    assert page.links == []  # self-contained

    latency, fidelity = report["latency"], report["fidelity"]
    middle = (latency["runs"] + 1) / 2  # the faked runs take 1, 2, 3, … × 2 ms and 0.5 ms
    assert (latency["before_ms"], latency["after_ms"], latency["speedup"]) == (
        pytest.approx(middle * 2.0), pytest.approx(middle * 0.5), pytest.approx(4.0))
    summary = [["", "before", "after", "change"],
               ["MACs", f"{report['macs_before']:,}", f"{report['macs_after']:,}",
                f"{report['macs_before'] / report['macs_after']:.2f}× fewer"],
               ["parameters", f"{report['params_before']:,}", f"{report['params_after']:,}",
                f"{report['params_before'] / report['params_after']:.2f}× fewer"],
               ["latency (ms, p50, CPU, batch 1)", f"{middle * 2.0:.3f}", f"{middle * 0.5:.3f}",
                "4.00× faster"]]
    assert page.tables["Summary"] == tables["Summary"] == summary

    considered = [g for g in report["groups"] if "blocked" not in g and "skipped" not in g]
    assert [b["id"] for b in page.bars] == [g["id"] for g in considered]
    for bar, group in zip(page.bars, considered, strict=True):
        assert bar["texts"][-1] == f"{group['kept']}/{group['size']}"
        assert bar["kept"] / (bar["kept"] + bar["removed"]) == pytest.approx(
            group["kept"] / group["size"], abs=1e-3)
    cut = sum(g["kept"] < g["size"] for g in considered)
    units = sum(g["size"] - g["kept"] for g in considered)
    assert f"{len(considered)} groups considered, {cut} cut, {units} units removed." in \
        page.paragraphs
    rows = tables["Channels per group"][1:]
    assert [r[1] for r in rows] == [f"{g['kept']}/{g['size']}" for g in considered]
    assert [r[2].count("█") for r in rows] == [round(20 * g["kept"] / g["size"])
                                                for g in considered]

    (output,) = fidelity["outputs"]
    expected = [output["name"], f"{output['cosine']:.5f}", f"{output['relative_l2']:.3e}",
                f"{output['max_abs_error']:.3e}", f"{output['top1_agreement']:.3f}"]
    assert page.tables["Fidelity"][1:] == tables["Fidelity"][1:] == [expected]
    caption = (f"on {fidelity['samples']} calibration samples: the samples the criterion "
               "and reconstruction were fit to, not held out (give --eval DATA for held-out "
               "figures)")
    assert caption in page.paragraphs
    assert fidelity["samples"] == 6 and fidelity["held_out"] is False

    alone = [g for g in report["groups"] if "blocked" in g or "skipped" in g]
    html_alone, md_alone = page.tables["Groups left alone"][1:], tables["Groups left alone"][1:]
    assert [int(r[0]) for r in html_alone] == [int(r[0]) for r in md_alone] == \
        [g["id"] for g in alone]
    assert [r[4] for r in html_alone] == [
        ("blocked: " + g["blocked"]) if "blocked" in g else "skipped: " + g["skipped"]
        for g in alone]


def test_fidelity_of_the_report_comes_from_held_out_data_with_eval(tmp_path, monkeypatch):
    from test_bench import fake_times

    from onnxprune import bench
    from onnxprune.compare import compare

    monkeypatch.setattr(bench, "interleaved_times", fake_times(2.0, 0.5))
    rng = np.random.default_rng(5)
    for name, count in (("c", 6), ("e", 4)):
        np.savez(tmp_path / f"{name}.npz",
                 x=rng.standard_normal((count, 3, 48, 192)).astype(np.float32))
    out, report_path = tmp_path / "s.onnx", tmp_path / "r.json"
    result = CliRunner().invoke(main, [
        "prune", str(DEMO), "-o", str(out), "--ratio", "0.5", "--calib",
        str(tmp_path / "c.npz"), "--eval", str(tmp_path / "e.npz"), "--input-shape",
        "x:1x3x48x192", "-q", "--report", str(report_path),
        "--report-md", str(tmp_path / "r.md")])
    assert result.exit_code == 0, result.output
    fidelity = json.loads(report_path.read_text())["fidelity"]
    assert fidelity["held_out"] is True and fidelity["samples"] == 4
    assert "on 4 held-out samples (--eval), never used to fit" in \
        (tmp_path / "r.md").read_text()
    expected = compare(onnx.load(DEMO), onnx.load(out), str(tmp_path / "e.npz"), runs=1)
    assert [o["cosine"] for o in fidelity["outputs"]] == pytest.approx(
        [o.cosine for o in expected.outputs], rel=1e-6)


def test_eval_equal_to_the_output_is_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "s.onnx"
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 3, 48, 192), np.float32))
    result = CliRunner().invoke(main, [
        "prune", str(DEMO), "-o", str(out), "--ratio", "0.5", "--calib",
        str(tmp_path / "c.npz"), "--eval", str(out), "--report-md", str(tmp_path / "r.md")])
    assert result.exit_code == 2 and "--eval" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]
