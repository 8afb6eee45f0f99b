"""Einsum as a compute op (`ops/einsum.py`): its channel rule, cost, refit, sparsity
view and latency probe, checked on small graphs and against the same graphs written
with MatMul."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import GraphBuilder, analyze, assert_mask_equivalent, prunable, prune_all
from test_reconstruct import calibration, linear_channel, mlp_with_constant_unit, refit_errors

import onnxprune
from onnxprune.cost import concrete, model_cost
from onnxprune.latency_table import layer_config, layer_model
from onnxprune.ops.einsum import Product, product
from onnxprune.sparsity.layers import WeightStore, effective, find_layers, to_matrix
from onnxprune.sparsity.pattern import parse_pattern, violations
from onnxprune.verify import relative_error, run


def mlp(first: str, second: str, transposed=(False, False), seed: int = 0):
    """x[2, 5, 8] → Einsum(first) to 16 (+ bias, Relu) → Einsum(second) to 4."""
    b = GraphBuilder(opset=17, seed=seed)
    x = b.input("x", [2, 5, 8])
    w1 = b.weight(16, 8) if transposed[0] else b.weight(8, 16)
    h = b.op("Relu", [b.op("Add", [b.op("Einsum", [x, w1], equation=first), b.weight(16)])])
    w2 = b.weight(4, 16) if transposed[1] else b.weight(16, 4)
    operands = [w2, h] if second.startswith("o") else [h, w2]
    return b.build(b.op("Einsum", operands, equation=second))


def matmul_mlp(seed: int = 0):
    """The same network as `mlp("bsd,df->bsf", "bsf,fo->bso")`, written with MatMul."""
    b = GraphBuilder(opset=17, seed=seed)
    x = b.input("x", [2, 5, 8])
    w1 = b.weight(8, 16)
    h = b.op("Relu", [b.op("Add", [b.op("MatMul", [x, w1]), b.weight(16)])])
    return b.build(b.op("MatMul", [h, b.weight(16, 4)]))


@pytest.mark.parametrize("first, second, transposed", [
    ("bsd,df->bsf", "bsf,fo->bso", (False, False)),
    ("bsd,fd->bsf", "of,bsf->bso", (True, True)),
    ("...d,df->...f", "...f,fo->...o", (False, False)),
])
def test_hidden_units_prune_mask_equivalently(first, second, transposed):
    model = mlp(first, second, transposed)
    dep = analyze(model)
    hidden = [g for g in prunable(dep) if g.units == 16]
    assert len(hidden) == 1 and hidden[0].kind == "neuron"
    roles = {slot.tensor: role.value for slot, role in hidden[0].roles.items()}
    assert sorted(roles.values()) == ["act", "act", "act", "in", "out", "param"]
    _, pruned = prune_all(model)
    sizes = sorted(int(np.prod(t.dims)) for t in pruned.graph.initializer)
    assert sizes == [8, 4 * 8, 8 * 8]  # half of the 16 hidden units gone everywhere


def test_attention_scores_and_summed_axes_block():
    b = GraphBuilder()
    x = b.input("x", [1, 4, 8])
    q, k = (b.op("Einsum", [x, b.weight(8, 6)], equation="bsd,df->bsf") for _ in range(2))
    scores = b.op("Einsum", [q, k], equation="bsf,btf->bst")
    h = b.op("Einsum", [x, b.weight(8, 6)], equation="bsd,df->bsf")
    summed = b.op("Einsum", [h, b.weight(2, 5)], equation="bsf,ab->bsa")
    dep = analyze(b.build([scores, summed]))
    reasons = " ".join(r for g in dep.groups for r in g.blocked)
    assert "only two operands, one of them a constant weight" in reasons
    assert "summed within one operand" in reasons
    assert not prunable(dep)


def test_macs_equal_the_matmul_network():
    """One multiply-accumulate per output element and summed index, as MatMul."""
    einsum, matmul = mlp("bsd,df->bsf", "bsf,fo->bso"), matmul_mlp()
    costs = []
    for model in (einsum, matmul):
        dep = analyze(model)
        costs.append(model_cost(dep.view.graph, concrete(dep.view.shapes)).macs)
    assert costs[0] == costs[1] == 2 * 5 * (8 * 16 + 16 * 4)
    _, report = onnxprune.prune(einsum, 0.5, round_to=1, min_channels=1)
    assert report.macs_after == 2 * 5 * (8 * 8 + 8 * 4)


def test_least_squares_refit_is_exact_through_einsum():
    """A removed hidden unit that is an affine function of kept ones is recovered by
    refitting the Einsum that absorbs it, the bias shift going to the Add after it."""
    b = GraphBuilder(seed=9)
    h = linear_channel(b, b.input("x", ["n", 8]), (8,), removed=5)
    weight = b.weight(4, 16)
    y = b.op("Add", [b.op("Einsum", [h, weight], equation="nf,of->no"), b.weight(4)])
    refit_error, plain_error, refit = refit_errors(b.build(y), (5, 8), 1 / 16, 5)
    assert refit_error < 1e-4 and plain_error > 1e-2
    shapes = {t.name: tuple(t.dims) for t in refit.graph.initializer}
    assert shapes[weight] == (4, 15)


def test_bias_compensation_folds_a_constant_unit_into_the_add_after_einsum():
    model = mlp_with_constant_unit(
        lambda b, x, w: b.op("Einsum", [x, w], equation="nd,df->nf"))
    kwargs = dict(criterion="variance", calib=calibration((5, 8)), round_to=1, min_channels=1)
    plain, _ = onnxprune.prune(model, 1 / 16, reconstruct="none", **kwargs)
    fixed, _ = onnxprune.prune(model, 1 / 16, reconstruct="bias", **kwargs)
    feeds = calibration((5, 8), 1)[0]
    want = next(iter(run(model, feeds).values()))
    assert relative_error(want, next(iter(run(fixed, feeds).values()))) < 1e-5
    assert relative_error(want, next(iter(run(plain, feeds).values()))) > 1e-2


@pytest.mark.parametrize("equation, weight, expected", [
    ("bsd,df->bsf", 1, Product(1, 0, 2, True)),
    ("bsd,fd->bsf", 1, Product(1, 1, 2, True)),
    ("fd,bsd->bfs", 0, Product(0, 1, 2, False)),
    ("...k,nk->...n", 1, Product(1, 1, -1, True)),
    ("ik,kj", 0, Product(0, 1, 0, False)),
    ("bhqd,bhkd->bhqk", 1, None),
    ("bsd,dfg->bsfg", 1, None),
    ("bsd,df->bf", 1, None),
])
def test_matrix_products_are_recognized_from_the_equation(equation, weight, expected):
    assert product(equation, weight) == expected


def test_sparsity_sees_the_matrix_view_of_matmul():
    """Same weights, same grouped axis and matrix view; calibrated Wanda masks agree."""
    einsum, matmul = mlp("bsd,df->bsf", "bsf,fo->bso", seed=3), matmul_mlp(seed=3)
    layers = [find_layers(m) for m in (einsum, matmul)]
    for mine, theirs in zip(*layers, strict=True):
        assert (mine.input_index, mine.axis, mine.outputs, mine.reduction) == (
            theirs.input_index, theirs.axis, theirs.outputs, theirs.reduction)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((2, 5, 8)).astype(np.float32)} for _ in range(2)]
    masks = []
    for model in (einsum, matmul):
        sparse, _ = onnxprune.sparsify(model, pattern="2:4", criterion="wanda", calib=calib,
                                       all_layers=True)
        store = WeightStore(sparse)
        matrices = [to_matrix(effective(layer, store), layer.axis)
                    for layer in find_layers(sparse)]
        assert not any(violations(m, parse_pattern("2:4")) for m in matrices)
        masks.append([m != 0 for m in matrices])
    for mine, theirs in zip(*masks, strict=True):
        assert np.array_equal(mine, theirs)


def test_latency_probe_is_a_runnable_one_node_einsum():
    model = mlp("bsd,df->bsf", "bsf,fo->bso")
    dep = analyze(model)
    shape_of = concrete(dep.view.shapes)
    configs = [layer_config(node, shape_of) for node in dep.view.graph.nodes]
    timed = [c for c in configs if c is not None]
    assert len(timed) == 2 and all('"op": "Einsum"' in c for c in timed)
    one = layer_model(timed[0], 17)
    out = run(one, {"i0": np.ones((2, 5, 8), np.float32)})
    assert next(iter(out.values())).shape == (2, 5, 16)


def test_mask_equivalence_holds_for_a_weight_on_the_left():
    b = GraphBuilder(seed=2)
    x = b.input("x", [3, 8])
    h = b.op("Relu", [b.op("Einsum", [b.weight(12, 8), x], equation="fd,nd->nf")])
    model = b.build(b.op("Einsum", [h, b.weight(12, 4)], equation="nf,fo->no"))
    dep = analyze(model)
    group = next(g for g in prunable(dep) if g.units == 12)
    assert_mask_equivalent(model, {group.id: np.array([0, 5, 7])})
