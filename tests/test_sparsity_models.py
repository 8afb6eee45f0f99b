"""Sparsity on real models, judged by Polygraphy's own 2:4 checker, and the command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from model_files import ROOT, real_inputs, real_path, zoo_model

import onnxprune
from onnxprune.cli import main

CLS = ROOT / "models" / "ppocr_mobile_cls.onnx"


def polygraphy_verdicts(path: Path) -> dict[str, bool]:
    """`polygraphy inspect sparsity`: weight name → follows 2:4 (for the weights it checks)."""
    pytest.importorskip("polygraphy", reason="pip install polygraphy (the test extra)")
    code = ("import sys; from polygraphy.tools import main; "
            f"sys.argv = ['polygraphy', 'inspect', 'sparsity', {str(path)!r}]; sys.exit(main())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    verdicts = {}
    for line in (done.stdout + done.stderr).splitlines():
        found = re.search(r"Found (non-)?sparse tensor: (.+)$", line)
        if found:
            verdicts[found.group(2).strip()] = found.group(1) is None
    return verdicts


def assert_polygraphy_agrees(model: onnx.ModelProto, tmp_path: Path, **kwargs) -> dict:
    """Every sparsified weight is sparse for Polygraphy; every weight it finds dense is in
    the report with a reason."""
    out, report = onnxprune.sparsify(model, "2:4", all_layers=True, **kwargs)
    path = tmp_path / "sparse.onnx"
    onnxprune.model.save(out, path)
    verdicts = polygraphy_verdicts(path)
    targeted = {layer.weight for layer in report.sparsified}
    assert targeted and all(verdicts.get(name) for name in targeted), \
        sorted(name for name in targeted if not verdicts.get(name))
    reasons = {layer.weight: layer.reason for layer in report.layers if not layer.sparsified}
    for name, sparse in verdicts.items():
        assert sparse or reasons.get(name), name
    assert all(layer.reason for layer in report.layers if not layer.sparsified)
    return report.to_dict()


def test_classifier_passes_polygraphy(tmp_path):
    report = assert_polygraphy_agrees(onnx.load(str(CLS)), tmp_path)
    skipped = [layer for layer in report["layers"] if not layer["sparsified"]]
    assert any("not a multiple of 4" in layer["reason"] for layer in skipped)
    assert report["counts"]["sparsified"] >= 10


@pytest.mark.zoo
def test_resnet50_passes_polygraphy(tmp_path):
    report = assert_polygraphy_agrees(zoo_model("resnet50"), tmp_path)
    assert report["counts"] == {"candidates": 54, "eligible": 53, "sparsified": 53}
    first = next(layer for layer in report["layers"] if not layer["sparsified"])
    assert first["shape"] == [64, 3, 7, 7] and "3 entries" in first["reason"]


@pytest.mark.zoo
def test_minilm_passes_polygraphy(tmp_path):
    model = onnx.load(str(real_path("paraphrase_minilm_l3")))
    report = assert_polygraphy_agrees(model, tmp_path,
                                      input_shapes=real_inputs("paraphrase_minilm_l3"))
    matmuls = [layer for layer in report["layers"] if layer["sparsified"]]
    assert len(matmuls) >= 18 and all(layer["op"] == "MatMul" for layer in matmuls)


@pytest.mark.zoo
def test_ppocr_detector_passes_polygraphy(tmp_path):
    model = onnx.load(str(real_path("ppocr_det_v4")))
    assert_polygraphy_agrees(model, tmp_path, input_shapes=real_inputs("ppocr_det_v4"))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_command_writes_model_and_report(tmp_path):
    out, report = tmp_path / "s.onnx", tmp_path / "r.json"
    result = invoke("sparsify", CLS, "-o", out, "--all", "--report", report,
                    "--input-shape", "x:1x3x48x192")
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["pattern"] == "2:4" and data["counts"]["sparsified"] > 0
    assert "sparse" in result.output and out.exists()
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    layer = next(layer for layer in data["layers"] if layer["sparsified"])
    weight = next(t for t in written.graph.initializer if t.name == layer["weight"])
    assert np.mean(onnx.numpy_helper.to_array(weight) == 0) >= 0.5


@pytest.mark.parametrize("args, code, words", [
    (("--pattern", "3:4"), 2, "unknown pattern"),
    (("--criterion", "sparsegpt"), 2, "needs calibration data"),
    (("--pattern", "2:4", "--sparsity", "0.3"), 2, "fixes the sparsity"),
    (("--storage", "packed"), 2, "unknown storage"),
    (("--min-size", "-1"), 2, "--min-size"),
])
def test_command_errors_are_one_line_and_write_nothing(tmp_path, args, code, words):
    out = tmp_path / "s.onnx"
    result = invoke("sparsify", CLS, "-o", out, *args)
    assert result.exit_code == code and words in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
