"""`--ridge auto`: the least-squares refit chooses each layer's damping on held-out
calibration batches."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import GraphBuilder

import onnxprune
from onnxprune.cli import main
from onnxprune.refit import DEFAULT_RIDGE, HOLD_EVERY, RIDGES

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"


def mlp(seed: int = 3) -> onnx.ModelProto:
    """x·W1 + b1, Relu, ·W2 + b2 with 16 hidden units."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", ["n", 8])
    h = b.op("Relu", [b.op("Add", [b.op("MatMul", [x, b.weight(8, 16)]), b.weight(16)])])
    y = b.op("Add", [b.op("MatMul", [h, b.weight(16, 4)]), b.weight(4)])
    return b.build(y)


def batches(count: int, rows: int = 3, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((rows, 8)).astype(np.float32)} for _ in range(count)]


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def prune(model, calib, ridge):
    return onnxprune.prune(model, 0.5, criterion="l1", calib=calib, reconstruct="lsq",
                           ridge=ridge, round_to=1)


def reference_ridge(model: onnx.ModelProto, calib, removed: list[int]) -> float:
    """The ridge a direct computation chooses: fit the second layer on the batches not
    held out, for each ridge, and score it on the held-out batches' raw rows."""
    w1, b1, w2 = (onnx.numpy_helper.to_array(t).astype(np.float64)
                  for t in model.graph.initializer[:3])
    kept = np.setdiff1d(np.arange(16), removed)
    hidden = [np.maximum(feeds["x"].astype(np.float64) @ w1 + b1, 0) for feeds in calib]
    held = [h for n, h in enumerate(hidden) if n % HOLD_EVERY == 1]
    fit = [h for n, h in enumerate(hidden) if n % HOLD_EVERY != 1]

    def features(rows):
        return np.hstack([rows[:, kept], np.ones((len(rows), 1))])

    x_fit, y_fit = features(np.vstack(fit)), np.vstack(fit) @ w2
    x_held, y_held = features(np.vstack(held)), np.vstack(held) @ w2
    gram = x_fit.T @ x_fit / len(x_fit)
    damp_scale = np.trace(gram[:-1, :-1]) / len(kept)
    errors = []
    for ridge in RIDGES:
        damp = np.r_[np.full(len(kept), ridge * damp_scale), 0.0]
        prior = np.vstack([w2[kept], np.zeros((1, 4))])
        theta = np.linalg.solve(gram + np.diag(damp),
                                x_fit.T @ y_fit / len(x_fit) + damp[:, None] * prior)
        errors.append(np.mean(np.sum((x_held @ theta - y_held) ** 2, axis=1)))
    return RIDGES[int(np.argmin(errors))]


@pytest.mark.parametrize("rows, seed", [(3, 0), (3, 1), (40, 2)])
def test_auto_chooses_the_ridge_a_direct_held_out_fit_chooses(rows, seed):
    model, calib = mlp(seed), batches(8, rows, seed)
    _, report = prune(model, calib, "auto")
    details = report.reconstruction
    assert details["ridge"] == "auto" and details["layers_refit"] == 1
    (chosen, count), = details["ridges_chosen"].items()
    removed = next(g.removed for g in report.groups if g.removed)
    assert count == 1 and float(chosen) == reference_ridge(model, calib, removed)


def test_auto_writes_the_weights_of_the_ridge_it_chose():
    model, calib = mlp(), batches(8)
    auto, report = prune(model, calib, "auto")
    chosen = float(next(iter(report.reconstruction["ridges_chosen"])))
    fixed, _ = prune(model, calib, chosen)
    assert weights(auto).keys() == weights(fixed).keys()
    assert all(np.array_equal(weights(auto)[k], v) for k, v in weights(fixed).items())


def test_one_batch_leaves_nothing_to_hold_out_and_keeps_the_default():
    model, calib = mlp(), batches(1, rows=12)
    auto, report = prune(model, calib, "auto")
    fixed, _ = prune(model, calib, DEFAULT_RIDGE)
    assert report.reconstruction["ridges_chosen"] == {f"{DEFAULT_RIDGE:g}": 1}
    assert all(np.array_equal(weights(auto)[k], v) for k, v in weights(fixed).items())


def test_a_replayed_plan_replays_auto():
    model, calib = mlp(), batches(8)
    auto, report = prune(model, calib, "auto")
    assert report.plan_document["options"]["ridge"] == "auto"
    replayed, again = onnxprune.prune(model, plan=report.plan_document, calib=calib)
    assert again.reconstruction["ridges_chosen"] == report.reconstruction["ridges_chosen"]
    assert all(np.array_equal(weights(auto)[k], v) for k, v in weights(replayed).items())


def test_cli_ridge_auto_on_the_shipped_classifier(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(5)
    np.savez("c.npz", x=rng.uniform(-1, 1, (6, 3, 48, 192)).astype(np.float32))
    result = CliRunner().invoke(main, shlex.split(
        f"prune {DEMO} -o o.onnx --ratio 0.3 --criterion l1 --calib c.npz --batch-size 2 "
        "--ridge auto --report r.json"))
    assert result.exit_code == 0, result.output
    details = json.loads(Path("r.json").read_text())["reconstruction"]
    assert details["ridge"] == "auto" and details["layers_refit"] > 0
    assert sum(details["ridges_chosen"].values()) == details["layers_refit"]
    assert {float(r) for r in details["ridges_chosen"]} <= set(RIDGES)


@pytest.mark.parametrize("value", ["fast", "-1", "nan"])
def test_cli_refuses_a_ridge_that_is_neither_a_number_nor_auto(tmp_path, value):
    result = CliRunner().invoke(main, ["prune", str(DEMO), "-o", str(tmp_path / "o.onnx"),
                                       "--ratio", "0.3", "--ridge", value])
    assert result.exit_code == 2 and "--ridge" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o.onnx").exists()
