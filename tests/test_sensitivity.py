"""Sensitivity analysis and sensitivity-driven ratios: measured on graphs whose answer
is known, checked against the mask-equivalence reference, and through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import GraphBuilder

import onnxprune
from onnxprune import model as model_io
from onnxprune.cli import main
from onnxprune.depgraph import build, view_of
from onnxprune.errors import InputError
from onnxprune.planning.curves import Curve, measure_curves
from onnxprune.shapes import sample_shapes
from onnxprune.verify import reference_model, relative_error, run


def two_branches(quiet_scale: float = 1e-3):
    """Two parallel MLP branches summed; the first one's output weights are tiny, so
    its hidden units barely matter."""
    b = GraphBuilder(seed=5)
    x = b.input("x", ["n", 8])
    outs = []
    for scale in (quiet_scale, 1.0):
        hidden = b.op("Relu", [b.op("MatMul", [x, b.weight(8, 64)])])
        w2 = (b.rng.standard_normal((64, 4)) * scale).astype(np.float32)
        outs.append(b.op("MatMul", [hidden, b.const(w2)]))
    return b.build(b.op("Add", outs))


def calibration(count=4, rows=16, seed=3):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((rows, 8)).astype(np.float32)} for _ in range(count)]


def test_curve_interpolates_and_extends_linearly():
    curve = Curve(0, "channel", 100, [], [0.25, 0.5], [25, 50], [0.1, 0.3])
    assert curve.error_at(0) == 0.0
    assert curve.error_at(25) == pytest.approx(0.1)
    assert curve.error_at(40) == pytest.approx(0.1 + 0.2 * 15 / 25)
    assert curve.error_at(75) == pytest.approx(0.5)


def test_quiet_branch_is_measured_insensitive():
    curves = onnxprune.sensitivity(two_branches(), calibration(), ratios=(0.5,), round_to=1)
    by_size = sorted(curves, key=lambda c: c.errors[0])
    assert len(curves) == 2 and all(c.removed == [32] for c in curves)
    assert by_size[0].errors[0] < 1e-2 < by_size[1].errors[0]


def test_measured_error_equals_the_masked_reference():
    model = two_branches(quiet_scale=1.0)
    feeds = calibration(2)
    shapes = sample_shapes(model, {"x": (16, 8)})
    dep = build(view_of(model_io.normalize(model), model, shapes))
    group = next(g for g in dep.groups if g.prunable)
    units = np.array([1, 4, 9, 30])
    curve = measure_curves(dep, model, [group], lambda g, r: units, feeds, (0.5,))[0]
    masked = reference_model(dep, {group.id: units}, model)
    want = np.concatenate([next(iter(run(model, f).values())).ravel() for f in feeds])
    got = np.concatenate([next(iter(run(masked, f).values())).ravel() for f in feeds])
    assert curve.errors[0] == pytest.approx(relative_error(want, got), rel=1e-5)


def test_sensitivity_planning_cuts_the_quiet_branch_harder_at_equal_macs():
    model, data = two_branches(), calibration()
    kwargs = dict(calib=data, round_to=1, reconstruct="none")
    uniform, plain = onnxprune.prune(model, 0.5, criterion="wanda", **kwargs)
    allocated, report = onnxprune.prune(model, 0.5, criterion="sensitivity", **kwargs)
    assert report.macs_after <= plain.macs_after
    kept = sorted(g.kept for g in report.groups if g.size == 64)
    assert kept[0] < 32 < kept[1]  # quiet branch below half, loud branch above
    feeds = calibration(1)[0]
    want = next(iter(run(model, feeds).values()))
    err_uniform = relative_error(want, next(iter(run(uniform, feeds).values())))
    err_allocated = relative_error(want, next(iter(run(allocated, feeds).values())))
    assert err_allocated < 0.5 * err_uniform
    assert report.sensitivity and {c["group"] for c in report.sensitivity} == {
        g.id for g in report.groups if g.size == 64}


def test_sensitivity_needs_calibration_and_valid_ratios():
    with pytest.raises(InputError, match="calibration"):
        onnxprune.sensitivity(two_branches(), None)
    with pytest.raises(InputError, match="ratios"):
        onnxprune.sensitivity(two_branches(), calibration(), ratios=(0.5, 1.2))
    with pytest.raises(InputError, match="--ratio or --target-macs"):
        onnxprune.prune(two_branches(), criterion="sensitivity", calib=calibration(),
                        target_energy=0.5)


def test_sensitivity_command_writes_json_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    model_path, data_path = tmp_path / "m.onnx", tmp_path / "calib.npz"
    model_io.save(two_branches(), str(model_path))
    np.savez(data_path, x=np.concatenate([f["x"] for f in calibration()]))
    out, plot = tmp_path / "sens.json", tmp_path / "sens.png"
    result = CliRunner().invoke(main, ["sensitivity", str(model_path), "--calib",
                                       str(data_path), "--ratios", "0.25,0.5", "--round-to",
                                       "1", "-o", str(out), "--plot", str(plot), "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["ratios"] == [0.25, 0.5]
    assert [g["removed"] for g in data["groups"]] == [[16, 32], [16, 32]]
    assert all(g["errors"][0] <= g["errors"][1] for g in data["groups"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = CliRunner().invoke(main, ["sensitivity", str(model_path)])
    assert missing.exit_code == 2
