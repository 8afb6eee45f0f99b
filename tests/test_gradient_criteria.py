"""Gradient criteria (taylor, fisher, snip) against independent computations: explicit
numpy formulas on a tiny MLP and finite differences in onnxruntime of each sample's
loss with respect to a unit's mask (a head and a neuron alike)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import GraphBuilder
from onnx import numpy_helper

pytest.importorskip("jax")
import jax  # noqa: E402
import train_graphs  # noqa: E402, F401  (faster XLA compiles for tiny programs)
from finetune_graphs import transformer  # noqa: E402

from onnxprune.analysis import analyze  # noqa: E402
from onnxprune.cli import main  # noqa: E402
from onnxprune.criteria.gradient import mask_scores, snip_scores  # noqa: E402
from onnxprune.verify import run  # noqa: E402

SEED = 7


def mlp(rank3: bool = True, zero_row: int | None = None, det: bool = False,
        batch: int | str = "N"):
    """x → MatMul W1 [4, 8] → Relu → MatMul W2 [8, 3]; outputs [N, 1, 3] (real-valued)
    or [N, 3] (logits); optionally W2's row `zero_row` zero and a Det side output."""
    b = GraphBuilder(seed=3)
    x = b.input("x", [batch, 1, 4] if rank3 else [batch, 4])
    h = b.op("Relu", [b.op("MatMul", [x, b.weight(4, 8)])])
    w2 = b.rng.standard_normal((8, 3)).astype(np.float32)
    if zero_row is not None:
        w2[zero_row] = 0
    outputs = [b.op("MatMul", [h, b.const(w2, "W2")])]
    if det:
        shape = b.const(np.array([4, 2, 2], np.int64))
        outputs.append(b.op("Det", [b.op("Reshape", [x, shape])]))
    return b.build(outputs)


def feeds_for(model, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = [d.dim_value or 4 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {model.graph.input[0].name: rng.standard_normal(shape).astype(np.float32)}


def prunable(model, feeds):
    analysis = analyze(model, calib=[feeds])
    return analysis, [g for g in analysis.dep.groups if g.prunable]


def noise(index: int, shape) -> np.ndarray:
    """The loss's ε for sample `index` (train/saliency.py: one float output)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(SEED), index), 0)
    return np.asarray(jax.random.normal(key, shape, np.float32), np.float64)


def weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}


def mlp_terms(model, feeds):
    """x, hidden pre-activation, Relu output, W1, W2 and the noise of each sample."""
    values = weights(model)
    w1 = next(v for k, v in values.items() if v.shape == (4, 8))
    w2 = values["W2"]
    x = feeds["x"].astype(np.float64)[:, 0]
    pre = x @ w1
    eps = np.stack([noise(s, (1, 1, 3))[0, 0] for s in range(len(x))])
    return x, pre, np.maximum(pre, 0), w1, w2, eps


def test_fisher_and_taylor_match_the_mask_gradient_formula():
    model = mlp()
    feeds = feeds_for(model)
    analysis, groups = prunable(model, feeds)
    (group,) = groups
    _, _, r, _, w2, eps = mlp_terms(model, feeds)
    per_sample = r * (eps @ w2.T)  # g_su = r_su · (W2[u] · ε_s)
    fisher = mask_scores("fisher", groups, analysis, SEED)[group.id]
    taylor = mask_scores("taylor", groups, analysis, SEED)[group.id]
    np.testing.assert_allclose(fisher, (per_sample ** 2).sum(0), rtol=1e-4)
    np.testing.assert_allclose(taylor, np.abs(per_sample).sum(0), rtol=1e-4)


def test_a_fixed_batch_is_differentiated_one_batch_at_a_time():
    model = mlp(batch=4)
    feeds = feeds_for(model)
    analysis, groups = prunable(model, feeds)
    _, _, r, _, w2, _ = mlp_terms(model, feeds)
    eps = noise(0, (4, 1, 3))[:, 0]  # one draw for the batch, numbered 0
    batch_grad = (r * (eps @ w2.T)).sum(0)
    fisher = mask_scores("fisher", groups, analysis, SEED)[groups[0].id]
    np.testing.assert_allclose(fisher, batch_grad ** 2, rtol=1e-4)


def test_snip_matches_the_weight_gradient_formula():
    model = mlp()
    feeds = feeds_for(model)
    analysis, groups = prunable(model, feeds)
    x, pre, r, w1, w2, eps = mlp_terms(model, feeds)
    grad_w2 = r.T @ eps
    grad_w1 = x.T @ ((eps @ w2.T) * (pre > 0))
    want = np.abs(w1 * grad_w1).sum(0) + np.abs(w2 * grad_w2).sum(1)
    got = snip_scores(groups, analysis, SEED)[groups[0].id]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def unit_gradients(model, feeds, labels, step: float = 1e-2) -> np.ndarray:
    """∂(per-sample cross-entropy)/∂(scale of each of W2's 8 rows), by central
    differences: [samples, units]."""
    w2 = weights(model)["W2"]
    grads = []
    for unit in range(8):
        up, down = w2.copy(), w2.copy()
        up[unit] *= 1 + step
        down[unit] *= 1 - step
        grads.append((logits_loss(model, feeds, up, labels)
                      - logits_loss(model, feeds, down, labels)) / (2 * step))
    return np.array(grads).T


def logits_loss(model, feeds, w2, labels) -> np.ndarray:
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    for tensor in changed.graph.initializer:
        if tensor.name == "W2":
            tensor.CopyFrom(numpy_helper.from_array(w2.astype(np.float32), "W2"))
    logits = run(changed, feeds)[changed.graph.output[0].name].astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


def test_taylor_and_fisher_match_finite_differences_with_pseudo_labels():
    model = mlp(rank3=False)
    feeds = feeds_for(model)
    analysis, groups = prunable(model, feeds)
    logits = run(model, feeds)[model.graph.output[0].name]
    key = jax.random.PRNGKey(SEED)
    labels = np.array([int(jax.random.categorical(
        jax.random.fold_in(jax.random.fold_in(key, s), 0), logits[s:s + 1], axis=-1)[0])
        for s in range(len(logits))])
    grads = unit_gradients(model, feeds, labels)
    group = groups[0]
    np.testing.assert_allclose(mask_scores("taylor", groups, analysis, SEED)[group.id],
                               np.abs(grads).sum(0), rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(mask_scores("fisher", groups, analysis, SEED)[group.id],
                               (grads ** 2).sum(0), rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("name", ["fisher", "taylor", "snip"])
def test_a_unit_with_zero_weights_scores_zero(name):
    model = mlp(zero_row=5)
    feeds = feeds_for(model)
    analysis, groups = prunable(model, feeds)
    scores = (snip_scores(groups, analysis, SEED) if name == "snip"
              else mask_scores(name, groups, analysis, SEED))[groups[0].id]
    assert scores[5] == 0
    assert np.all(np.delete(scores, 5) > 0)


def masked_loss(model, feeds, tensor: str, rows: np.ndarray, factor: float) -> np.ndarray:
    """Each sample's loss ⟨ε_s, y_s⟩ with the rows `rows` of weight `tensor` scaled."""
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    for t in changed.graph.initializer:
        if t.name == tensor:
            values = numpy_helper.to_array(t).copy()
            values[rows] *= factor
            t.CopyFrom(numpy_helper.from_array(values, tensor))
    y = run(changed, feeds)[changed.graph.output[0].name].astype(np.float64)
    return np.array([(noise(s, (1,) + y.shape[1:])[0] * y[s]).sum() for s in range(len(y))])


def consumer_weight(group, role_in) -> str:
    return next(s.tensor for s in group.slots(role_in))


def test_fisher_of_heads_and_neurons_is_one_quantity():
    """A head's and a neuron's Fisher scores both equal Σ_s (∂ℓ_s/∂m)², with ∂ℓ_s/∂m
    measured by finite differences of the unit's consumer rows in onnxruntime."""
    from onnxprune.depgraph import Role

    model = transformer()
    feeds = feeds_for(model)
    analysis, groups = prunable(model, feeds)
    scores = mask_scores("fisher", groups, analysis, SEED)
    head = next(g for g in groups if g.kind == "head")
    neuron = next(g for g in groups if g.kind == "neuron" and g.units == 6)
    step = 1e-2
    for group, rows_of in ((head, lambda u: np.arange(2 * u, 2 * u + 2)),
                           (neuron, lambda u: np.array([u]))):
        tensor = consumer_weight(group, Role.IN)
        for unit in range(group.units):
            grad = (masked_loss(model, feeds, tensor, rows_of(unit), 1 + step)
                    - masked_loss(model, feeds, tensor, rows_of(unit), 1 - step)) / (2 * step)
            np.testing.assert_allclose(scores[group.id][unit], (grad ** 2).sum(), rtol=2e-3)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_global_fisher_ranks_neurons_of_every_layer_on_one_scale(tmp_path):
    model, out, calib = transformer(2), tmp_path / "out.onnx", tmp_path / "c.npz"
    onnx.save(model, tmp_path / "m.onnx")
    feeds = feeds_for(model)
    np.savez(calib, **feeds)
    result = invoke("prune", tmp_path / "m.onnx", "-o", out, "--criterion", "fisher",
                    "--global", "--head-ratio", "0.5", "--ratio", "0.5", "--round-to", "1",
                    "--calib", calib, "--reconstruct", "none", "--json")
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(onnx.load(out), full_check=True)
    report = {g["id"]: g for g in json.loads(result.output)["groups"]}
    analysis, groups = prunable(model, feeds)
    scores = mask_scores("fisher", groups, analysis, int(np.random.default_rng(0).integers(
        2 ** 31)))
    assert [len(report[g.id]["removed"]) for g in groups if g.kind == "head"] == [2, 2]
    removed, kept = [], []
    for group in (g for g in groups if g.kind != "head"):
        cut = set(report[group.id]["removed"])
        removed += [scores[group.id][u] for u in cut]
        if len(cut) + 1 <= 0.9 * group.units:  # below the --max-ratio cap
            kept += [scores[group.id][u] for u in range(group.units) if u not in cut]
    assert len({len(report[g.id]["removed"]) for g in groups if g.kind != "head"}) > 1
    assert max(removed) <= min(kept)


def test_cli_sparsify_snip_keeps_the_highest_connection_sensitivity(tmp_path):
    model, out, calib = mlp(rank3=False), tmp_path / "out.onnx", tmp_path / "c.npz"
    onnx.save(model, tmp_path / "m.onnx")
    feeds = feeds_for(model)
    np.savez(calib, **feeds)
    result = invoke("sparsify", tmp_path / "m.onnx", "-o", out, "--pattern", "2:4", "--all",
                    "--criterion", "snip", "--calib", calib, "--quiet")
    assert result.exit_code == 0, result.output
    sparse = weights(onnx.load(out))
    dense = weights(model)
    for name, values in sparse.items():
        groups = (values.T.reshape(values.shape[1], -1, 4) != 0).sum(-1)
        assert groups.max() <= 2, name
        assert np.all((values == 0) | (values == dense[name]))


@pytest.mark.parametrize("command", ["prune", "sparsify"])
def test_cli_refuses_an_untranslatable_model_naming_the_op(tmp_path, command):
    model, out, calib = mlp(rank3=False, det=True), tmp_path / "out.onnx", tmp_path / "c.npz"
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(calib, **feeds_for(model))
    extra = ["--ratio", "0.5", "--criterion", "fisher"] if command == "prune" else \
        ["--all", "--criterion", "snip"]
    result = invoke(command, tmp_path / "m.onnx", "-o", out, "--calib", calib, *extra)
    assert result.exit_code == 2
    assert "Det" in result.output and not out.exists()


@pytest.mark.parametrize("command", ["prune", "sparsify"])
def test_cli_refuses_gradient_criteria_without_jax_or_data(tmp_path, monkeypatch, command):
    model, out = mlp(rank3=False), tmp_path / "out.onnx"
    onnx.save(model, tmp_path / "m.onnx")
    criterion = ["--criterion", "snip"] + (["--ratio", "0.5"] if command == "prune" else [])
    result = invoke(command, tmp_path / "m.onnx", "-o", out, *criterion)
    assert result.exit_code == 2 and "calibration data" in result.output
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jax" else find_spec(name, *a))
    np.savez(tmp_path / "c.npz", **feeds_for(model))
    result = invoke(command, tmp_path / "m.onnx", "-o", out, "--calib", tmp_path / "c.npz",
                    *criterion)
    assert result.exit_code == 2 and "onnxprune[train]" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_output_kinds_follow_the_producing_op():
    from onnxprune.train import translate
    from onnxprune.train.saliency import output_kinds

    b = GraphBuilder(seed=1)
    x = b.input("x", [4, 4])
    logits = b.op("MatMul", [x, b.weight(4, 3)])
    probs = b.op("Softmax", [logits], axis=-1)
    pooled = b.op("ReduceMean", [b.op("MatMul", [x, b.weight(4, 6)])], axes=[1], keepdims=1)
    flat = b.op("Flatten", [logits])
    kinds = output_kinds(translate(b.build([logits, probs, pooled, flat])))
    assert list(kinds.values()) == ["logits", "probabilities", "values", "logits"]
