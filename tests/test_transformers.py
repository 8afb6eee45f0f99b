"""Attention heads, FFN neurons and hidden groups through exported transformers.

Every model prunes at --head-ratio / --ratio to a valid model that keeps dynamic
batch and sequence axes, and equals the original with the removed heads' context
(and neurons' activations) zeroed before the output projection (rel. error ≤ 1e-5).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_files import real_inputs, real_path, zoo_model

import onnxprune
from onnxprune.depgraph import analyze
from onnxprune.errors import VerificationError
from onnxprune.shapes import sample_shapes
from onnxprune.verify import HIDDEN_TOLERANCE, reference_model, relative_error, run

TOKENS = {"input_ids": (2, 16), "attention_mask": (2, 16)}


def token_feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - 2:] = 0  # some padding
    return {"input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64),
            "attention_mask": mask}


def check_head_equivalence(model, report, input_shapes, feeds_list, tol=1e-5):
    removed = {g.id: np.array(g.removed) for g in report.groups if g.removed}
    dep = analyze(model, sample_shapes(model, input_shapes))
    reference = reference_model(dep, removed, model)
    return removed, [(run(reference, feeds), feeds) for feeds in feeds_list], tol


def assert_equivalent(pruned, model, report, input_shapes, feeds_list, tol=1e-5):
    removed, references, tol = check_head_equivalence(model, report, input_shapes, feeds_list,
                                                      tol)
    for want, feeds in references:
        got = run(pruned, feeds)
        for name, value in want.items():
            assert got[name].shape == value.shape
            assert relative_error(value, got[name]) <= tol, (name, relative_error(value,
                                                                                  got[name]))
    return removed


def without_zero_weights(model):
    """torchvision starts some layers (ViT's head) at zero: give them values so the
    outputs depend on every channel."""
    rng = np.random.default_rng(0)
    for tensor in model.graph.initializer:
        values = onnx.numpy_helper.to_array(tensor)
        if values.dtype == np.float32 and values.size >= 16 and not values.any():
            noise = (rng.standard_normal(values.shape) * 0.02).astype(np.float32)
            tensor.CopyFrom(onnx.numpy_helper.from_array(noise, tensor.name))
    return model


def kinds(report, kind):
    return [g for g in report.groups if g.kind == kind]


def test_minilm_lists_head_and_neuron_groups():
    groups = onnxprune.inspect(str(real_path("paraphrase_minilm_l3")), TOKENS)
    heads = [g for g in groups if g.kind == "head"]
    neurons = [g for g in groups if g.kind == "neuron" and g.prunable]
    assert sum(g.units for g in heads) == 36 and all(g.units == 12 for g in heads)
    assert all(g.prunable and g.channels_per_unit == 32 for g in heads)
    assert [g.units for g in neurons] == [1536, 1536, 1536]


def test_minilm_prunes_heads_and_neurons_equivalently():
    model = onnx.load(str(real_path("paraphrase_minilm_l3")))
    pruned, report = onnxprune.prune(model, 0.3, head_ratio=0.25, input_shapes=TOKENS)
    assert [g.kept for g in kinds(report, "head")] == [9, 9, 9]
    assert all(g.kept < g.size for g in kinds(report, "neuron") if not g.blocked)
    assert report.macs_after < report.macs_before
    assert_equivalent(pruned, model, report, TOKENS, [token_feeds(1, 7), token_feeds(3, 40)])


ZOO_TRANSFORMERS = ["bert_tiny_ts", "bert_tiny_dynamo", "bert_tiny_ts_fused",
                    "bert_tiny_dynamo_fused", "llama_gqa_ts", "llama_gqa_dynamo"]


@pytest.mark.parametrize("name", ZOO_TRANSFORMERS)
def test_exported_transformer_prunes_heads_equivalently(name):
    model = zoo_model(name)
    pruned, report = onnxprune.prune(model, 0.3, head_ratio=0.5, input_shapes=TOKENS)
    heads = kinds(report, "head")
    assert len(heads) == 2 and all(g.kept < g.size and not g.blocked for g in heads)
    assert all(g.kept < g.size for g in kinds(report, "neuron") if not g.blocked)
    assert_equivalent(pruned, model, report, TOKENS, [token_feeds(1, 5), token_feeds(3, 19)])


def test_gqa_removes_a_key_value_head_with_all_its_query_heads():
    model = zoo_model("llama_gqa_ts")
    pruned, report = onnxprune.prune(model, head_ratio=0.5, input_shapes=TOKENS)
    weights = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    projections = {n.name.split("/")[-2]: weights[n.input[1]] for n in pruned.graph.node
                   if n.op_type == "MatMul" and n.input[1] in weights and "_proj" in n.name}
    assert projections["q_proj"] == (64, 32)  # 4 query heads of 16 → 2
    assert projections["k_proj"] == projections["v_proj"] == (64, 16)  # 2 kv heads → 1
    assert projections["o_proj"] == (32, 64)


def test_fused_attention_rewrites_num_heads():
    pruned, _ = onnxprune.prune(zoo_model("bert_tiny_ts_fused"), head_ratio=0.5,
                                input_shapes=TOKENS)
    attention = [n for n in pruned.graph.node if n.op_type == "Attention"]
    assert len(attention) == 2
    for node in attention:
        heads = next(a.i for a in node.attribute if a.name == "num_heads")
        assert heads == 2
    weights = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    assert all(weights[n.input[1]] == (64, 96) for n in attention)


@pytest.mark.parametrize("name", ["swin_t", "vit_b_16"])
def test_vision_transformer_structures_prune_equivalently(name):
    model = without_zero_weights(zoo_model(name))
    pruned, report = onnxprune.prune(model, 0.3, head_ratio=0.25)
    feeds = {model.graph.input[0].name: np.random.default_rng(0).standard_normal(
        (2, 3, 224, 224)).astype(np.float32)}
    assert report.macs_after < report.macs_before
    assert_equivalent(pruned, model, report, None, [feeds])
    heads = kinds(report, "head")  # vit: nn.MultiheadAttention folds heads into the batch
    assert len(heads) == 12 and all(g.kept < g.size and not g.blocked for g in heads)


def test_ppocr_recognizer_prunes_its_svtr_heads():
    name = "ppocr_rec_v4"
    model = onnx.load(str(real_path(name)))
    pruned, report = onnxprune.prune(model, 0.3, head_ratio=0.25, input_shapes=real_inputs(name))
    heads = kinds(report, "head")
    assert [g.size for g in heads] == [8, 8] and all(g.kept == 6 for g in heads)
    feeds = [{"x": np.random.default_rng(s).standard_normal((b, 3, 48, w)).astype(np.float32)}
             for s, (b, w) in enumerate([(1, 192), (2, 320)])]
    assert_equivalent(pruned, model, report, real_inputs(name), feeds)


def decomposed_layernorm_model(hidden: int = 16, ffn: int | None = None, seed: int = 0):
    """x → MatMul → LayerNorm written out (ReduceMean/Sub/Pow/Sqrt/Div) → MatMul, with an
    FFN (MatMul → Relu → MatMul: a neuron group) after the norm when `ffn` is given."""
    from helpers import GraphBuilder

    b = GraphBuilder(opset=17, seed=seed)
    x = b.input("x", ["batch", 5, 8])
    h = b.op("MatMul", [x, b.weight(8, hidden)])
    centered = b.op("Sub", [h, b.op("ReduceMean", [h], axes=[-1])])
    var = b.op("ReduceMean", [b.op("Pow", [centered, b.const(np.array(2.0, np.float32))])],
               axes=[-1])
    std = b.op("Sqrt", [b.op("Add", [var, b.const(np.array(1e-5, np.float32))])])
    gamma, beta = b.weight(hidden), b.weight(hidden)
    normed = b.op("Add", [b.op("Mul", [b.op("Div", [centered, std]), gamma]), beta])
    if ffn:
        normed = b.op("Relu", [b.op("MatMul", [normed, b.weight(hidden, ffn)])])
    w2 = b.weight(ffn or hidden, 4)
    return b.build(b.op("MatMul", [normed, w2])), gamma, w2


def random_feeds(model, shape, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {model.graph.input[0].name: rng.standard_normal(shape).astype(np.float32)}


def hidden_errors(model, pruned, report, feeds, input_shapes=None) -> tuple[float, float]:
    """Relative errors of the pruned model (largest over outputs) against the original
    with every cut unit zeroed at its consumers, and against the original with the
    hidden cuts applied and the other cut units zeroed (exact for a sound rewrite)."""
    dep = analyze(model, sample_shapes(model, input_shapes))
    hidden = {g.id: np.array(g.removed) for g in report.groups
              if g.removed and g.kind == "hidden"}
    other = {g.id: np.array(g.removed) for g in report.groups
             if g.removed and g.kind != "hidden"}
    got = run(pruned, feeds)
    masked = run(reference_model(dep, hidden | other, model), feeds)
    exact = run(reference_model(dep, other, model, hidden), feeds)
    return (max(relative_error(masked[k], got[k]) for k in got),
            max(relative_error(exact[k], got[k]) for k in got))


def test_decomposed_layernorm_makes_a_hidden_group_cut_only_when_asked():
    model, gamma, w2 = decomposed_layernorm_model()
    groups = onnxprune.inspect(model)
    hidden = [g for g in groups if g.kind == "hidden"]
    assert len(hidden) == 1 and hidden[0].units == 16 and hidden[0].prunable
    assert any("ReduceMean" in reason for reason in hidden[0].approximate)
    _, report = onnxprune.prune(model, 0.5)
    assert all(g.kept == g.size for g in report.groups)
    pruned, report = onnxprune.prune(model, hidden_ratio=0.5, round_to=1)
    weights = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    assert weights[gamma] == (8,) and weights[w2] == (8, 4)
    feeds = random_feeds(model, (3, 5, 8))
    assert next(iter(run(pruned, feeds).values())).shape == (3, 5, 4)
    bounded, _ = hidden_errors(model, pruned, report, feeds)
    assert 0.01 < bounded <= HIDDEN_TOLERANCE  # approximate, yet close


def test_hidden_cuts_are_bounded_and_channel_cuts_of_the_same_plan_stay_exact():
    model, gamma, w2 = decomposed_layernorm_model(hidden=32, ffn=64, seed=4)
    pruned, report = onnxprune.prune(model, 0.5, hidden_ratio=0.5, round_to=1)
    assert sorted((g.kind, g.size, g.kept) for g in report.groups if g.removed) == [
        ("hidden", 32, 16), ("neuron", 64, 32)]
    bounded, exact = hidden_errors(model, pruned, report, random_feeds(model, (2, 5, 8)))
    assert 0.01 < bounded <= HIDDEN_TOLERANCE and exact < 1e-5


def tampered_apply(monkeypatch, name: str, change, everywhere: bool):
    """Make the rewrite change constant `name` whenever it slices it: in the pruned
    model only (a faulty channel rule), or in every rewrite, the exact reference's too
    (a faulty hidden rule, which that reference cannot catch)."""
    from onnxprune import analysis, rewrite

    real = rewrite.apply

    def apply(graph, view, removed, values=None):
        out = real(graph, view, removed, values)
        tensor = out.tensors().get(name)
        if tensor is not None and tensor.values.size < view.const(name).size:
            tensor.values = change(np.array(tensor.values))
        return out

    monkeypatch.setattr(analysis, "apply", apply)
    if everywhere:
        monkeypatch.setattr(rewrite, "apply", apply)


def test_a_faulty_rewrite_fails_verification_though_hidden_groups_are_cut(monkeypatch):
    model, gamma, w2 = decomposed_layernorm_model(hidden=32, ffn=64, seed=4)

    def scale_first_row(values):
        values[0] *= 1.05
        return values

    neurons = next(g.id for g in onnxprune.inspect(model) if g.units == 64)
    tampered_apply(monkeypatch, w2, scale_first_row, everywhere=False)
    with pytest.raises(VerificationError, match=rf"zeroed at their consumers\): relative "
                       rf".*; group {neurons} \(produced by MatMul\d+\) fails alone"):
        onnxprune.prune(model, 0.5, hidden_ratio=0.5, round_to=1)
    monkeypatch.undo()
    tampered_apply(monkeypatch, gamma, lambda values: np.roll(values, 1), everywhere=True)
    # A milder cut: the bound is the larger of HIDDEN_TOLERANCE and the masked
    # original's own distance from the dense model (0.59 here, 1.48 at 0.5 / 0.5).
    with pytest.raises(VerificationError, match="beyond the bound for cuts of hidden sizes"):
        onnxprune.prune(model, 0.25, hidden_ratio=0.25, round_to=1)


def test_convnext_hidden_size_prunes_through_channels_last_layernorms():
    model = zoo_model("convnext_tiny")
    pruned, report = onnxprune.prune(model, 0.3, hidden_ratio=0.25)
    hidden = kinds(report, "hidden")
    assert hidden and all(g.kept < g.size for g in hidden if not g.blocked)
    assert any(g.removed for g in report.groups if g.kind == "neuron")
    assert report.macs_after < report.macs_before
    feeds = random_feeds(model, (1, 3, 224, 224))
    assert run(pruned, feeds)[model.graph.output[0].name].shape == (1, 1000)
    bounded, exact = hidden_errors(model, pruned, report, feeds)
    assert bounded <= HIDDEN_TOLERANCE and exact < 1e-4


def test_hidden_bound_grows_with_the_cut_itself():
    from onnxprune.verify import hidden_bounds

    dense = {"y": np.ones(4, np.float32), "z": np.ones(2, np.float32)}
    masked = {"y": np.array([1, 1, 1, 0.1], np.float32), "z": np.zeros(2, np.float32)}
    bounds = hidden_bounds(masked, dense)
    assert bounds["y"] == HIDDEN_TOLERANCE  # a mild cut: the fixed bound
    assert bounds["z"] == pytest.approx(1.0)  # the cut moved z by 100 %
