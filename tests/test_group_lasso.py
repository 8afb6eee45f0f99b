"""`finetune --group-lasso`: the proximal shrinkage of whole units (all weight slices
coupled to them), exact zeros that `prune --criterion zero` then removes without
changing any output."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from finetune_graphs import convnet, inputs, mlp, transformer  # noqa: E402
from helpers import GraphBuilder  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.analysis import analyze  # noqa: E402
from onnxprune.cli import main  # noqa: E402
from onnxprune.depgraph import Role  # noqa: E402
from onnxprune.train import lasso  # noqa: E402
from onnxprune.verify import run  # noqa: E402

ROLES = (Role.OUT, Role.IN, Role.PARAM)


def weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def statistics(model) -> set[str]:
    return {n.input[i] for n in model.graph.node if n.op_type == "BatchNormalization"
            for i in (3, 4)}


def weakened(model, picks: dict[int, list[int]], factor: float = 0.01):
    """The model with every weight slice of the picked units (group index → units)
    scaled by `factor`; returns it and the picked units as (group id, unit) pairs."""
    dep = analyze(model).dep
    values, skip = weights(model), statistics(model)
    groups = [g for g in dep.groups if g.prunable]
    picked = set()
    for number, units in picks.items():
        group = groups[number]
        for slot, members in group.members.items():
            if group.roles.get(slot) in ROLES and slot.tensor in values and \
                    slot.tensor not in skip:
                moved = np.moveaxis(values[slot.tensor], slot.axis, 0).copy()
                moved[np.isin(members, units)] *= np.float32(factor)
                values[slot.tensor] = np.moveaxis(moved, 0, slot.axis)
        picked |= {(group.id, u) for u in units}
    result = onnx.ModelProto()
    result.CopyFrom(model)
    for t in result.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(values[t.name], t.name))
    return result, picked


def removed(report) -> set[tuple[int, int]]:
    return {(g.id, u) for g in report.groups for u in (g.removed or [])}


def max_difference(a, b, feeds) -> float:
    got, want = run(a, feeds), run(b, feeds)
    return max(float(np.max(np.abs(got[k] - want[k]))) for k in want)


def test_prox_shrinks_each_unit_by_its_norm_and_zeroes_the_small_ones():
    coupling = lasso.Coupled((("a", 0, 1, np.array([0, 1, 2])),
                              ("b", 1, 1, np.array([0, 1, 2]))), 2, 1)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), \
        rng.standard_normal((5, 3)).astype(np.float32)
    a[1] *= 0.01
    b[:, 1] *= 0.01
    got = lasso.make_prox(coupling)({"a": jnp.asarray(a), "b": jnp.asarray(b)}, 0.5)
    for unit in (0, 1):
        norm = np.sqrt(np.sum(a[unit] ** 2) + np.sum(b[:, unit] ** 2))
        factor = max(0.0, 1 - 0.5 / norm)
        np.testing.assert_allclose(got["a"][unit], a[unit] * factor, rtol=1e-5)
        np.testing.assert_allclose(got["b"][:, unit], b[:, unit] * factor, rtol=1e-5)
    assert np.all(np.asarray(got["a"][1]) == 0) and np.all(np.asarray(got["b"][:, 1]) == 0)
    np.testing.assert_array_equal(got["a"][2], a[2])  # index `units`: no unit
    assert lasso.zero_units(coupling, got) == 1
    assert lasso.make_penalty(coupling)({"a": a, "b": b}) == pytest.approx(
        sum(np.sqrt(np.sum(a[u] ** 2) + np.sum(b[:, u] ** 2)) for u in (0, 1)), rel=1e-5)


def test_coupled_slices_are_every_member_but_norm_statistics():
    model = convnet()
    coupling = lasso.coupled(model, set(weights(model)))
    by_tensor = {name: (axis, index) for name, axis, _, index in coupling.slices}
    first = model.graph.node[0].input[1]  # the first Conv's weight: rows of group 0
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    assert by_tensor[first][0] == 0 and set(by_tensor[bn.input[1]][1]) == set(range(8))
    assert not set(bn.input[3:]) & set(by_tensor)
    assert coupling.units == 16 and coupling.groups == 2  # the head Gemm is an output


@pytest.mark.parametrize("build, picks, strength, lr", [
    (convnet, {0: [1, 4], 1: [2]}, 1.0, 1e-2),
    (mlp, {0: [3, 7, 30], 1: [0]}, 4.0, 1e-2),
    (lambda: transformer(), {0: [1]}, 8.0, 1e-3),
])
def test_lasso_then_zero_prunes_the_weak_units_and_keeps_the_outputs(build, picks, strength,
                                                                      lr):
    model, picked = weakened(build(), picks)
    data = inputs(model, 96)
    tuned, report = onnxprune.finetune(model, model, data, steps=60, lr=lr,
                                       batch_size=32, group_lasso=strength, eval_every=20)
    assert report.improved and report.zero_units == len(picked)
    small, pruned = onnxprune.prune(tuned, criterion="zero", round_to=1)
    assert removed(pruned) == picked
    assert pruned.params_after < pruned.params_before
    assert max_difference(small, tuned, data) < 1e-5
    before = weights(model)
    kept = [n for n, v in weights(tuned).items() if np.count_nonzero(v) == v.size]
    assert any(not np.array_equal(weights(tuned)[n], before[n]) for n in kept)


def test_validation_is_the_penalized_objective():
    model = mlp()
    _, plain = onnxprune.finetune(model, model, inputs(model, 64), steps=20, lr=1e-2,
                                  batch_size=16, eval_every=10)
    _, report = onnxprune.finetune(model, model, inputs(model, 64), steps=20, lr=1e-2,
                                   batch_size=16, eval_every=10, group_lasso=0.1)
    coupling = lasso.coupled(model, set(weights(model)))
    norms = lasso.make_penalty(coupling)(weights(model))
    assert plain.validation_before == 0 and not plain.improved  # the teacher itself
    assert report.validation_before == pytest.approx(0.1 * norms, rel=1e-5)
    assert report.improved and report.validation_after < report.validation_before
    assert report.lasso_units == 64 and report.group_lasso == 0.1


def test_a_model_without_prunable_groups_is_refused():
    b = GraphBuilder(seed=1)
    x = b.input("x", ["n", 4])
    model = b.build(b.op("Gemm", [x, b.weight(4, 3)]))
    with pytest.raises(onnxprune.InputError, match="--group-lasso: no prunable"):
        onnxprune.finetune(model, model, inputs(model, 16), steps=2, group_lasso=1.0)


def test_cli_group_lasso_then_prune_zero(tmp_path):
    model, picked = weakened(convnet(), {0: [1, 4]})
    dense, tuned, small = (tmp_path / n for n in ("d.onnx", "t.onnx", "s.onnx"))
    onnx.save(model, dense)
    np.savez(tmp_path / "data.npz", **inputs(model, 64))
    runner = CliRunner()
    result = runner.invoke(main, [
        "finetune", str(dense), "--teacher", str(dense), "--data", str(tmp_path / "data.npz"),
        "-o", str(tuned), "--steps", "60", "--lr", "1e-2", "--group-lasso", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["zero_units"] == 2
    result = runner.invoke(main, ["prune", str(tuned), "-o", str(small), "--criterion",
                                  "zero", "--round-to", "1", "-q"])
    assert result.exit_code == 0, result.output
    feeds = inputs(model, 8, seed=3)
    assert max_difference(onnx.load(small), onnx.load(tuned), feeds) < 1e-5
    result = runner.invoke(main, [
        "finetune", str(dense), "--teacher", str(dense), "--data", str(tmp_path / "data.npz"),
        "-o", str(tmp_path / "x.onnx"), "--group-lasso", "-1"])
    assert result.exit_code == 2 and "--group-lasso" in result.output
