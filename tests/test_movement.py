"""`sparsify --criterion movement`: scores accumulated over distillation steps, the
pattern chosen from them instead of |w|."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
import train_graphs  # noqa: E402, F401  (faster XLA compiles for tiny programs)
from click.testing import CliRunner  # noqa: E402
from helpers import GraphBuilder  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.cli import main  # noqa: E402
from onnxprune.sparsity.movement import tracker  # noqa: E402
from onnxprune.sparsity.pattern import parse_pattern, violations  # noqa: E402
from onnxprune.verify import run  # noqa: E402


def linear(dead: list[int]) -> onnx.ModelProto:
    """y = x · W, W [8, 4]: large weights on the `dead` input features, small on the
    others."""
    rng = np.random.default_rng(4)
    w = rng.uniform(0.2, 0.5, (8, 4)).astype(np.float32)
    w[dead] = rng.uniform(2.0, 3.0, (len(dead), 4)).astype(np.float32)
    b = GraphBuilder(seed=4)
    x = b.input("x", ["n", 8])
    return b.build(b.op("MatMul", [x, b.const(w, "W")]))


def data(dead: list[int], count: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Samples whose `dead` features are always zero."""
    x = np.random.default_rng(seed).standard_normal((count, 8)).astype(np.float32)
    x[:, dead] = 0
    return {"x": x}


def kept_rows(model) -> set[int]:
    w = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "W")
    return {int(i) for i in np.flatnonzero(np.any(w != 0, axis=1))}


@pytest.mark.parametrize("pattern, sparsity, dead", [
    ("unstructured", 0.5, [0, 1, 2, 3]),
    ("2:4", None, [0, 1, 4, 5]),
])
def test_movement_keeps_what_the_gradient_needs_where_magnitude_does_not(
        tmp_path, pattern, sparsity, dead):
    model, feeds = linear(dead), data(dead)
    np.savez(tmp_path / "calib.npz", **feeds)
    keywords = dict(sparsity=sparsity, all_layers=True, calib=str(tmp_path / "calib.npz"))
    by_size, _ = onnxprune.sparsify(model, pattern, **keywords)
    moved, report = onnxprune.sparsify(model, pattern, criterion="movement",
                                       movement_budget=(30, None), **keywords)
    assert kept_rows(by_size) == set(dead)
    assert kept_rows(moved) == set(range(8)) - set(dead)
    assert report.layers[0].criterion == "movement" and report.layers[0].zeros == 0.5
    w = next(numpy_helper.to_array(t) for t in moved.graph.initializer if t.name == "W")
    assert violations(w.T, parse_pattern(pattern, sparsity)) == 0
    held = data(dead, 16, seed=1)  # the kept weights fit: outputs equal the dense model's
    got, want = run(moved, held), run(model, held)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


def test_tracker_accumulates_minus_weight_times_gradient():
    dense = {"w": np.array([1.0, 2.0, -3.0], np.float32)}
    track = tracker(dense)
    params = {"w": jnp.array([0.5, 0.0, -1.0]), "other": jnp.ones(2)}
    state = track.init(params)
    assert sorted(state) == ["w"]
    grads = {"w": jnp.array([1.0, -1.0, 2.0]), "other": jnp.ones(2)}
    out, state = track.update(grads, state, params)
    out, state = track.update(grads, state, params)
    assert out is grads
    np.testing.assert_allclose(state["w"], [-1.0, 4.0, 4.0])  # zero: the dense value


def test_cli_movement_takes_its_steps_from_finetune_steps(tmp_path):
    dead = [0, 1, 2, 3]
    onnx.save(linear(dead), tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", **data(dead))
    result = CliRunner().invoke(main, [
        "sparsify", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--pattern",
        "unstructured", "--criterion", "movement", "--calib", str(tmp_path / "c.npz"),
        "--finetune-steps", "20", "--report", str(tmp_path / "r.json"), "-q"])
    assert result.exit_code == 0, result.output
    assert kept_rows(onnx.load(tmp_path / "o.onnx")) == {4, 5, 6, 7}
    result = CliRunner().invoke(main, [
        "sparsify", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "p.onnx"), "--pattern",
        "unstructured", "--criterion", "movement"])
    assert result.exit_code == 2 and "needs calibration data" in result.output
