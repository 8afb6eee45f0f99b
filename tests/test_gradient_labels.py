"""Class labels in the calibration data: `taylor`, `fisher` and `snip` take the
supervised cross-entropy on the classification output instead of pseudo-labels, and
labels that do not fit are refused with one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("jax")
from click.testing import CliRunner  # noqa: E402
from test_gradient_criteria import (  # noqa: E402
    SEED,
    feeds_for,
    mlp,
    unit_gradients,
    weights,
)

from onnxprune.analysis import analyze  # noqa: E402
from onnxprune.cli import main  # noqa: E402
from onnxprune.criteria.gradient import mask_scores, snip_scores  # noqa: E402
from onnxprune.errors import InputError  # noqa: E402
from onnxprune.verify import run  # noqa: E402


def labeled(tmp_path, model, labels) -> tuple:
    """The calibration file with `labels`, its analysis and prunable groups."""
    feeds = feeds_for(model)
    path = tmp_path / "calib.npz"
    np.savez(path, labels=labels, **feeds)
    analysis = analyze(model, calib=str(path))
    return feeds, analysis, [g for g in analysis.dep.groups if g.prunable]


def test_taylor_and_fisher_use_the_given_labels(tmp_path):
    model = mlp(rank3=False)
    logits = run(model, feeds_for(model))[model.graph.output[0].name]
    labels = (logits.argmin(-1) + 1) % 3  # not what the model predicts, nor drawn
    feeds, analysis, groups = labeled(tmp_path, model, labels)
    grads = unit_gradients(model, feeds, labels)
    group = groups[0]
    np.testing.assert_allclose(mask_scores("fisher", groups, analysis, SEED)[group.id],
                               (grads ** 2).sum(0), rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(mask_scores("taylor", groups, analysis, 99)[group.id],
                               np.abs(grads).sum(0), rtol=2e-3, atol=1e-6)  # any seed


def test_snip_uses_the_given_labels(tmp_path):
    model = mlp(rank3=False)
    labels = np.array([2, 0, 1, 2])
    feeds, analysis, groups = labeled(tmp_path, model, labels)
    values = weights(model)
    w1 = next(v for v in values.values() if v.shape == (4, 8))
    w2, x = values["W2"], feeds["x"].astype(np.float64)
    pre = x @ w1
    logits = np.maximum(pre, 0) @ w2
    p = np.exp(logits - logits.max(-1, keepdims=True))
    delta = p / p.sum(-1, keepdims=True) - np.eye(3)[labels]
    grad_w2, grad_w1 = np.maximum(pre, 0).T @ delta, x.T @ ((delta @ w2.T) * (pre > 0))
    want = np.abs(w1 * grad_w1).sum(0) + np.abs(w2 * grad_w2).sum(1)
    np.testing.assert_allclose(snip_scores(groups, analysis, SEED)[groups[0].id], want,
                               rtol=1e-4)


@pytest.mark.parametrize("labels, rank3, message", [
    (np.array([0, 1, 3, 2]), False, r"class indices in \[0, 3\).*span \[0, 3\]"),
    (np.array([0, 1, -1, 2]), False, r"class indices in \[0, 3\)"),
    (np.array([0, 1, 2]), False, "one integer class index per sample"),
    (np.array([0.0, 1.0, 2.0, 1.0]), False, "one integer class index per sample"),
    (np.array([[0], [1], [2], [1]]), False, "one integer class index per sample"),
    (np.array([0, 1, 2, 1]), True, "need a classification output"),
])
def test_labels_that_do_not_fit_are_refused(tmp_path, labels, rank3, message):
    model = mlp(rank3=rank3)
    feeds, analysis, groups = labeled(tmp_path, model, labels) if labels.ndim == 1 and \
        labels.dtype.kind == "i" and len(labels) == 4 else (None, None, None)
    if analysis is not None:
        with pytest.raises(InputError, match=message):
            mask_scores("fisher", groups, analysis, SEED)
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", labels=labels, **feeds_for(model))
    for command in (["prune", "--ratio", "0.5", "--criterion", "taylor"],
                    ["sparsify", "--pattern", "unstructured", "--sparsity", "0.5",
                     "--criterion", "snip", "--all"]):
        result = CliRunner().invoke(main, [command[0], str(tmp_path / "m.onnx"), "-o",
                                           str(tmp_path / "o.onnx"), "--calib",
                                           str(tmp_path / "c.npz"), *command[1:]])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("onnxprune: error: ")
        assert not (tmp_path / "o.onnx").exists()


def test_labels_leave_other_criteria_and_the_stream_alone(tmp_path):
    model = mlp(rank3=False)
    feeds, analysis, _ = labeled(tmp_path, model, np.array([0, 1, 2, 1]))
    (batch,) = list(analysis.stream())
    assert sorted(batch) == ["x"]
    np.testing.assert_array_equal(batch["x"], feeds["x"])
    np.testing.assert_array_equal(analysis.labels(), [0, 1, 2, 1])
    assert analyze(model, calib=[feeds]).labels() is None
