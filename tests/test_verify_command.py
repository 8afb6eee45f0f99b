"""`onnxprune verify`: fidelity, cost and latency of a pruned model against its original."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import onnxprune
from onnxprune.cli import main
from onnxprune.compare import compare
from onnxprune.errors import InputError

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"
SHAPES = {"x": (1, 3, 48, 192)}


def test_a_model_against_itself_agrees_exactly():
    result = compare(DEMO, DEMO)
    row = result.outputs[0]
    assert row.cosine == pytest.approx(1.0) and row.relative_l2 == 0.0
    assert row.top1_agreement == 1.0 and result.macs_pruned == result.macs_original


def test_pruned_model_reports_lower_cost_and_imperfect_fidelity(tmp_path):
    pruned, report = onnxprune.prune(str(DEMO), 0.5, input_shapes=SHAPES)
    onnx.save(pruned, str(tmp_path / "p.onnx"))
    data = np.random.default_rng(0).standard_normal((12, 3, 48, 192)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=data)
    result = compare(DEMO, tmp_path / "p.onnx", tmp_path / "c.npz", batch_size=4)
    assert result.samples == 12
    assert result.macs_pruned < result.macs_original and result.params_pruned < \
        result.params_original
    assert result.macs_original / result.macs_pruned == pytest.approx(
        report.macs_before / report.macs_after, rel=1e-6)
    assert result.outputs[0].relative_l2 > 0 and result.outputs[0].cosine < 1.0
    assert result.latency_ratio > 0


def test_models_with_different_inputs_are_refused(tmp_path):
    model = onnx.load(str(DEMO))
    model.graph.input[0].name = "renamed"
    for node in model.graph.node:
        node.input[:] = ["renamed" if i == "x" else i for i in node.input]
    onnx.save(model, str(tmp_path / "r.onnx"))
    with pytest.raises(InputError, match="different inputs"):
        compare(DEMO, tmp_path / "r.onnx")


def test_cli_prints_json():
    result = CliRunner().invoke(main, ["verify", str(DEMO), str(DEMO), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"outputs", "macs_original", "macs_pruned", "latency_ratio"} <= set(data)


def test_cosine_counts_two_all_zero_samples_as_agreeing():
    from onnxprune.compare import _cosines

    a = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [-1.0, -1.0]])
    assert _cosines(a, b).tolist() == pytest.approx([1.0, 1.0, 0.0, -1.0])
