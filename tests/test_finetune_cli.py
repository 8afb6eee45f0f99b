"""`onnxprune finetune` and `prune/sparsify --finetune-steps` on the command line:
outputs and reports, and bad input refused with one line, exit 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

pytest.importorskip("optax")
from click.testing import CliRunner  # noqa: E402
from finetune_graphs import convnet, inputs, mlp, pruned  # noqa: E402
from helpers import GraphBuilder  # noqa: E402

from onnxprune.cli import main  # noqa: E402


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def files(tmp_path):
    """dense.onnx, its pruned student.onnx and data.npz (64 samples) in tmp_path."""
    dense = mlp()
    onnx.save(dense, str(tmp_path / "dense.onnx"))
    onnx.save(pruned(dense), str(tmp_path / "student.onnx"))
    np.savez(tmp_path / "data.npz", **inputs(dense, 64))
    return tmp_path


def finetune_args(d, *extra):
    return ("finetune", d / "student.onnx", "--teacher", d / "dense.onnx", "--data",
            d / "data.npz", "-o", d / "out.onnx", *extra)


def test_finetune_writes_model_and_reports(files):
    result = invoke(*finetune_args(files, "--steps", "20", "--lr", "1e-2", "--eval-every",
                                   "10", "--report", files / "r.json"))
    assert result.exit_code == 0, result.output
    assert "validation error" in result.output and "lower" in result.output
    onnx.checker.check_model(onnx.load(str(files / "out.onnx")), full_check=True)
    data = json.loads((files / "r.json").read_text())
    for key in ("loss_curve", "validation_curve", "steps", "stop_reason",
                "validation_before", "validation_after", "improved", "validation_samples"):
        assert key in data
    assert data["validation_after"] < data["validation_before"] and data["steps"] == 20
    html = files / "r.html"
    result = invoke(*finetune_args(files, "--steps", "5", "--eval-every", "5", "--report",
                                   html, "-q", "--lr-schedule", "cosine"))
    assert result.exit_code == 0 and result.output == ""
    page = html.read_text()
    assert "validation error before" in page and "data:image/png;base64," in page
    assert "0.0001 (cosine)" in page
    assert not list(files.glob(".onnxprune-*"))


@pytest.mark.parametrize("extra, message", [
    (("--loss", "l1"), "--loss 'l1'"),
    (("--val-fraction", "1.5"), "--val-fraction"),
    (("--augment", "flip"), "image-like"),
    (("--augment", "rotate"), "--augment"),
    (("--steps", "0"), "--steps"),
    (("--lr-schedule", "linear"), "--lr-schedule"),
])
def test_bad_flags_are_refused(files, extra, message):
    result = invoke(*finetune_args(files, *extra))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("onnxprune: error:") and message in result.output
    assert not (files / "out.onnx").exists()


def _bad_data(d, kind: str) -> None:
    x = inputs(mlp(), 16)["x"]
    if kind == "nan":
        x[3, 2] = np.nan
        np.savez(d / "data.npz", x=x)
    elif kind == "shape":
        np.savez(d / "data.npz", x=x[:, :5])
    elif kind == "name":
        np.savez(d / "data.npz", y=x)
    elif kind == "missing":
        (d / "data.npz").unlink()


@pytest.mark.parametrize("kind, message", [
    ("nan", "sample 3: holds NaN"), ("shape", "has shape [16, 5]"),
    ("name", "no such input"), ("missing", "no such calibration file")])
def test_bad_data_is_refused(files, kind, message):
    _bad_data(files, kind)
    result = invoke(*finetune_args(files))
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (files / "out.onnx").exists()


def test_teacher_output_mismatch_and_untranslated_op_are_refused(files):
    other = GraphBuilder(seed=3)
    x = other.input("x", ["n", 16])
    onnx.save(other.build(other.op("Gemm", [x, other.weight(16, 5)])), str(files / "t.onnx"))
    result = invoke("finetune", files / "student.onnx", "--teacher", files / "t.onnx",
                    "--data", files / "data.npz", "-o", files / "out.onnx")
    assert result.exit_code == 2 and "output" in result.output, result.output
    shrink = GraphBuilder()
    y = shrink.op("Gemm", [shrink.input("x", ["n", 16]), shrink.weight(16, 8)])
    onnx.save(shrink.build(shrink.op("Shrink", [y], lambd=0.1)), str(files / "s.onnx"))
    result = invoke("finetune", files / "s.onnx", "--teacher", files / "s.onnx",
                    "--data", files / "data.npz", "-o", files / "out.onnx")
    assert result.exit_code == 2 and "Shrink" in result.output, result.output
    result = invoke(*finetune_args(files, "--teacher", files / "missing.onnx"))
    assert result.exit_code == 2, result.output
    assert not (files / "out.onnx").exists()


def test_prune_chains_finetuning_on_calib_and_refuses_without(tmp_path):
    dense = convnet()
    onnx.save(dense, str(tmp_path / "dense.onnx"))
    np.savez(tmp_path / "calib.npz", **inputs(dense, 48))
    base = ("prune", tmp_path / "dense.onnx", "-o", tmp_path / "p.onnx", "--ratio", "0.5",
            "--round-to", "1", "--report", tmp_path / "r.json", "-q")
    result = invoke(*base, "--finetune-steps", "10")
    assert result.exit_code == 2 and "--calib" in result.output
    assert not (tmp_path / "p.onnx").exists()
    result = invoke(*base, "--calib", tmp_path / "calib.npz", "--finetune-steps", "10",
                    "--report-html", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Fine-tuning</h2>" in page and page.count("data:image/png;base64,") == 1
    report = json.loads((tmp_path / "r.json").read_text())["finetune"]
    assert report["steps"] == 10 and report["validation_after"] <= report["validation_before"]
    result = invoke("sparsify", tmp_path / "dense.onnx", "-o", tmp_path / "s.onnx", "--all",
                    "--pattern", "unstructured", "--finetune-minutes", "1", "-q")
    assert result.exit_code == 2 and "--calib" in result.output
