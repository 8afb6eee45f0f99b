"""`onnxprune verify`: fidelity, cost and latency of a pruned model against its original."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import onnxprune
from onnxprune import compare as compare_module
from onnxprune.cli import main
from onnxprune.compare import compare
from onnxprune.errors import InputError
from onnxprune.verify import relative_error, run

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"
SHAPES = {"x": (1, 3, 48, 192)}


def fake_clock(*milliseconds: float) -> SimpleNamespace:
    """A `time` module for code that reads the clock before and after each run, the
    models taking turns: every run of model k lasts `milliseconds[k]`."""
    state = {"calls": 0, "now": 0.0}

    def perf_counter() -> float:
        call = state["calls"]
        state["calls"] += 1
        if call % 2:
            state["now"] += milliseconds[(call // 2) % len(milliseconds)] * 1e-3
        return state["now"]

    return SimpleNamespace(perf_counter=perf_counter)


def test_a_model_against_itself_agrees_exactly(monkeypatch):
    monkeypatch.setattr(compare_module, "time", fake_clock(1.0, 1.0))
    result = compare(DEMO, DEMO)
    row = result.outputs[0]
    assert row.cosine == pytest.approx(1.0) and row.relative_l2 == 0.0
    assert row.top1_agreement == 1.0 and result.macs_pruned == result.macs_original
    assert result.latency_ratio == 1.0 and result.samples == 1


def test_pruned_model_reports_lower_cost_and_imperfect_fidelity(tmp_path, monkeypatch):
    pruned, report = onnxprune.prune(str(DEMO), 0.5, input_shapes=SHAPES)
    onnx.save(pruned, str(tmp_path / "p.onnx"))
    data = np.random.default_rng(0).standard_normal((12, 3, 48, 192)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=data)
    monkeypatch.setattr(compare_module, "time", fake_clock(2.0, 0.5))
    result = compare(DEMO, tmp_path / "p.onnx", tmp_path / "c.npz", batch_size=4)
    assert result.samples == 12 and result.latency_ratio == 0.25
    assert result.macs_original / result.macs_pruned == pytest.approx(
        report.macs_before / report.macs_after, rel=1e-6)
    assert (result.params_original, result.params_pruned) == (report.params_before,
                                                               report.params_after)
    want = run(onnx.load(str(DEMO)), {"x": data})
    got = run(pruned, {"x": data})
    (name, a), b = next(iter(want.items())), next(iter(got.values()))
    row = result.outputs[0]
    assert row.name == name and a.shape == (12, 2)
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert row.cosine == pytest.approx(cosines.mean(), rel=1e-5) and row.cosine < 1.0
    assert row.relative_l2 == pytest.approx(relative_error(a, b), rel=1e-5)
    assert row.relative_l2 > 1e-3
    assert row.max_abs_error == pytest.approx(np.abs(a - b).max(), rel=1e-5)
    assert row.top1_agreement == np.mean(a.argmax(1) == b.argmax(1))


def test_models_with_different_inputs_are_refused(tmp_path):
    model = onnx.load(str(DEMO))
    model.graph.input[0].name = "renamed"
    for node in model.graph.node:
        node.input[:] = ["renamed" if i == "x" else i for i in node.input]
    onnx.save(model, str(tmp_path / "r.onnx"))
    with pytest.raises(InputError, match="different inputs"):
        compare(DEMO, tmp_path / "r.onnx")


def test_cli_prints_json(tmp_path, monkeypatch):
    monkeypatch.setattr(compare_module, "time", fake_clock(1.0, 3.0))
    data = np.random.default_rng(1).standard_normal((3, 3, 48, 192)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=data)
    result = CliRunner().invoke(main, ["verify", str(DEMO), str(DEMO), "--json", "--calib",
                                       str(tmp_path / "c.npz"), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["samples"] == 3 and data["latency_ratio"] == 3.0
    assert data["macs_original"] == data["macs_pruned"] > 0
    assert data["params_original"] == data["params_pruned"] > 0
    (row,) = data["outputs"]
    assert row["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert (row["relative_l2"], row["max_abs_error"], row["top1_agreement"]) == (0, 0, 1)


def test_cosine_counts_two_all_zero_samples_as_agreeing():
    from onnxprune.compare import _cosines

    a = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [-1.0, -1.0]])
    assert _cosines(a, b).tolist() == pytest.approx([1.0, 1.0, 0.0, -1.0])
