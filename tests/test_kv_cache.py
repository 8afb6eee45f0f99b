"""Key/value-cache models: heads whose axis reaches paired past/present tensors prune on
both sides, the changed graph inputs and outputs are reported, runtime configurations
beside the model get the pruned sizes, and a cached greedy generation from the pruned
model equals the masked reference's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune import inspect, prune
from onnxprune.bench import fitted
from onnxprune.cache import cache_pairs, cut_feeds, io_changes
from onnxprune.cli import main
from onnxprune.depgraph import analyze
from onnxprune.errors import VerificationError
from onnxprune.rewrite import removed_slots
from onnxprune.shapes import sample_shapes
from onnxprune.targets.onnxruntime import session
from onnxprune.verify import reference_model, relative_error, run, sample_feeds
from onnxprune.verify.generation import check_generation, generate, prompt_for

FIXTURE = Path(__file__).resolve().parent.parent / "models" / "llama_kv"
DYNAMO = FIXTURE.with_name("llama_kv_dynamo")
HEADS, SIZE, HIDDEN = 2, 8, 16


def _project(nodes: list, inits: list, x: str, name: str, rng) -> str:
    """x @ W, split into heads: [1, HEADS, seq, SIZE]."""
    inits.append(numpy_helper.from_array(
        rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32), f"W{name}"))
    nodes += [helper.make_node("MatMul", [x, f"W{name}"], [f"{name}_p"]),
              helper.make_node("Reshape", [f"{name}_p", "split"], [f"{name}_r"]),
              helper.make_node("Transpose", [f"{name}_r"], [f"{name}_h"], perm=[0, 2, 1, 3])]
    return f"{name}_h"


def cached_attention(paired: bool = True, seed: int = 0) -> onnx.ModelProto:
    """One attention block with a key/value cache. Unpaired: the joined keys reach the
    graph output through an Identity, so the past has no present partner."""
    rng = np.random.default_rng(seed)
    nodes: list = []
    inits = [numpy_helper.from_array(np.array([0, -1, HEADS, SIZE], np.int64), "split"),
             numpy_helper.from_array(np.array([0, -1, HIDDEN], np.int64), "merge")]
    q, k, v = (_project(nodes, inits, "x", name, rng) for name in "qkv")
    key_out = "present.key" if paired else "joined_key"
    nodes += [helper.make_node("Concat", ["past.key", k], [key_out], axis=2),
              helper.make_node("Concat", ["past.value", v], ["present.value"], axis=2),
              helper.make_node("Transpose", [key_out], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", [q, "kt"], ["scores"]),
              helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", "present.value"], ["ctx"]),
              helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ctx_t", "merge"], ["ctx_m"]),
              helper.make_node("MatMul", ["ctx_m", "Wo"], ["y"])]
    if not paired:
        nodes.append(helper.make_node("Identity", ["joined_key"], ["present.key"]))
    inits.append(numpy_helper.from_array(
        rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32), "Wo"))
    cache = [1, HEADS, "past", SIZE]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", HIDDEN]),
              helper.make_tensor_value_info("past.key", TensorProto.FLOAT, cache),
              helper.make_tensor_value_info("past.value", TensorProto.FLOAT, cache)]
    total = [1, HEADS, "total", SIZE]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", HIDDEN]),
               helper.make_tensor_value_info("present.key", TensorProto.FLOAT, total),
               helper.make_tensor_value_info("present.value", TensorProto.FLOAT, total)]
    graph = helper.make_graph(nodes, "cached", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _head_group(groups):
    return next(g for g in groups if any(s.tensor == "past.value" for s in g.members))


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]


def test_cache_pairs_are_found_by_the_graph_not_by_names():
    assert [(p.past, p.present, p.axis) for p in cache_pairs(cached_attention())] == [
        ("past.key", "present.key", 2), ("past.value", "present.value", 2)]
    assert [p.past for p in cache_pairs(cached_attention(paired=False))] == ["past.value"]
    shapes = sample_shapes(cached_attention())
    assert shapes["past.key"] == (1, HEADS, 64, SIZE) and shapes["x"] == (1, 64, HIDDEN)


def test_a_head_reaching_a_cache_pair_is_prunable_on_both_sides():
    group = _head_group(inspect(cached_attention()))
    assert group.kind == "head" and group.prunable and group.units == HEADS
    tensors = {s.tensor for s in group.members}
    assert {"past.key", "present.key", "past.value", "present.value"} <= tensors


def test_an_unpaired_cache_input_stays_blocked_with_its_reason():
    group = _head_group(inspect(cached_attention(paired=False)))
    assert not group.prunable
    assert "past.key is a graph input" in group.blocked
    assert "present.key is a graph output" in group.blocked


def test_pruned_cache_tensors_lose_the_same_heads_and_equal_the_masked_reference():
    model = cached_attention()
    pruned, report = prune(model, head_ratio=0.5)
    changed = {(c["name"], c["kind"], c["before"], c["after"]) for c in report.io_changes}
    assert changed == {("past.key", "input", 2, 1), ("past.value", "input", 2, 1),
                       ("present.key", "output", 2, 1), ("present.value", "output", 2, 1)}
    removed = {c["name"]: c["removed"] for c in report.io_changes}
    assert len({tuple(r) for r in removed.values()}) == 1
    shapes = {v.name: _dims(v) for v in list(pruned.graph.input) + list(pruned.graph.output)}
    assert shapes["past.key"] == [1, 1, "past", SIZE]
    assert shapes["present.value"] == [1, 1, "total", SIZE]
    assert shapes["y"] == [1, "seq", HIDDEN]
    feeds = sample_feeds(model, {"x": (1, 5, HIDDEN), "past.key": (1, 2, 3, SIZE),
                                 "past.value": (1, 2, 3, SIZE)}, seed=4)
    dep = analyze(model)
    units = {g.id: np.array(g.removed) for g in report.groups if g.removed}
    changes = io_changes(model, removed_slots(dep, units))
    want = cut_feeds(run(reference_model(dep, units, model), feeds), changes, "output")
    got = run(pruned, cut_feeds(feeds, changes, "input"))
    assert got["present.key"].shape == (1, 1, 8, SIZE)
    for name, value in want.items():
        assert got[name].shape == value.shape
        assert relative_error(value, got[name]) < 1e-5, name


@pytest.fixture(scope="module")
def llama_pruned():
    model = onnx.load(str(FIXTURE / "model.onnx"))
    pruned, report = prune(model, 0.3, head_ratio=0.5)
    units = {g.id: np.array(g.removed) for g in report.groups if g.removed}
    return model, pruned, report, reference_model(analyze(model), units, model)


def test_llama_fixture_prunes_heads_and_neurons_with_its_cache(llama_pruned):
    model, pruned, report, _ = llama_pruned
    kinds = {(g.kind, g.size, g.kept) for g in report.groups if g.removed}
    assert kinds == {("head", 4, 2), ("neuron", 128, 96)}
    assert len(report.io_changes) == 8  # 2 layers x key/value x past/present
    for value in list(pruned.graph.input) + list(pruned.graph.output):
        if "past" in value.name or "present" in value.name:
            assert _dims(value)[1] == 2, value.name
    assert report.macs_after < report.macs_before


def test_llama_fixture_generates_the_masked_reference_tokens(llama_pruned):
    model, pruned, _, reference = llama_pruned
    prompt = prompt_for(model)
    want, got = generate(reference, prompt, steps=8), generate(pruned, prompt, steps=8)
    assert len(got.tokens) == 9 and got.tokens == want.tokens
    for expected, value in zip(want.logits, got.logits, strict=True):
        assert relative_error(expected, value) < 1e-4
    dense = generate(model, prompt, steps=8)
    assert max(relative_error(a, b) for a, b in zip(dense.logits, got.logits,
                                                    strict=True)) > 1e-3  # it did change


def test_cached_generation_check_catches_a_wrong_cut(llama_pruned):
    _, pruned, _, reference = llama_pruned
    check_generation(pruned, reference)
    broken = onnx.ModelProto()
    broken.CopyFrom(pruned)
    node = next(n for n in broken.graph.node if "layers.1/self_attn/v_proj" in n.name)
    weight = next(t for t in broken.graph.initializer if t.name == node.input[1])
    values = numpy_helper.to_array(weight)
    # the two kept value heads swapped: a cut at the wrong indices
    head = values.shape[1] // 2
    swapped = np.concatenate([values[:, head:], values[:, :head]], axis=1)
    weight.CopyFrom(numpy_helper.from_array(swapped, weight.name))
    with pytest.raises(VerificationError, match="cached generation"):
        check_generation(broken, reference)


def test_prune_command_writes_pruned_runtime_configs(tmp_path):
    source = tmp_path / "in"
    shutil.copytree(FIXTURE, source)
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(main, ["prune", str(source / "model.onnx"), "-o",
                                       str(out / "model.onnx"), "--ratio", "0.3",
                                       "--head-ratio", "0.5", "--report", str(out / "r.json")])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"],
            config["intermediate_size"], config["hidden_size"]) == (4, 2, 96, 64)
    decoder = json.loads((out / "genai_config.json").read_text())["model"]["decoder"]
    assert (decoder["num_attention_heads"], decoder["num_key_value_heads"],
            decoder["head_size"]) == (4, 2, 8)
    assert json.loads((source / "config.json").read_text())["num_key_value_heads"] == 4
    names = {c["name"] for c in json.loads((out / "r.json").read_text())["io_changes"]}
    assert "present.1.value" in names and "past_key_values.0.key" in names


def test_verify_command_compares_a_model_whose_cache_shrank(tmp_path, llama_pruned):
    _, pruned, _, _ = llama_pruned
    onnx.save(pruned, str(tmp_path / "small.onnx"))
    args = ["verify", str(FIXTURE / "model.onnx"), str(tmp_path / "small.onnx")]
    result = CliRunner().invoke(main, args + ["--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [o["name"] for o in data["outputs"]] == ["logits"]
    assert data["generation"]["tokens"] == 16
    assert len(data["generation"]["pruned"]) == 16
    assert data["macs_pruned"] < data["macs_original"]
    np.save(tmp_path / "ids.npy", np.zeros((1, 4), np.int64))
    refused = CliRunner().invoke(main, args + ["--calib", str(tmp_path / "ids.npy")])
    assert refused.exit_code == 2 and "smaller key/value cache" in refused.output


def test_bench_times_a_pruned_cache_on_its_own_cache_size(tmp_path, llama_pruned):
    _, pruned, _, _ = llama_pruned
    onnx.save(pruned, str(tmp_path / "small.onnx"))
    result = CliRunner().invoke(main, ["bench", str(FIXTURE / "model.onnx"),
                                       str(tmp_path / "small.onnx"), "--runs", "2", "--json"])
    assert result.exit_code == 0, result.output
    feeds = sample_feeds(onnx.load(str(FIXTURE / "model.onnx")),
                         sample_shapes(onnx.load(str(FIXTURE / "model.onnx"))))
    own = fitted(feeds, session(pruned))
    assert own["past_key_values.1.value"].shape == (1, 2, 64, 8)
    assert own["attention_mask"].shape == feeds["attention_mask"].shape == (1, 128)


def test_configs_in_the_model_folder_are_never_overwritten(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "m")
    before = (tmp_path / "m" / "config.json").read_text()
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "m" / "model.onnx"), "-o",
                                       str(tmp_path / "m" / "small.onnx"), "--head-ratio",
                                       "0.5", "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "config.json").read_text() == before
    warnings = json.loads((tmp_path / "r.json").read_text())["warnings"]
    assert any("config.json is not rewritten" in w for w in warnings)
    assert any("genai_config.json is not rewritten" in w for w in warnings)


def test_prune_runs_the_cached_generation_check(monkeypatch):
    calls = []

    def failing(pruned, reference):
        calls.append(len(pruned.graph.input))
        raise VerificationError("cached generation: tokens differ")

    monkeypatch.setattr("onnxprune.verify.reference.check_generation", failing)
    with pytest.raises(VerificationError, match="cached generation"):
        prune(str(FIXTURE / "model.onnx"), head_ratio=0.5)
    assert calls


def test_dynamo_export_prunes_and_generates_like_the_masked_reference():
    model = onnx.load(str(DYNAMO / "model.onnx"))
    pruned, report = prune(model, 0.3, head_ratio=0.5)
    assert {(g.kind, g.size, g.kept) for g in report.groups if g.removed} == {
        ("head", 4, 2), ("neuron", 128, 96)}
    assert {c["after"] for c in report.io_changes} == {2} and len(report.io_changes) == 8
    units = {g.id: np.array(g.removed) for g in report.groups if g.removed}
    reference = reference_model(analyze(model), units, model)
    prompt = prompt_for(model)
    assert generate(pruned, prompt, 8).tokens == generate(reference, prompt, 8).tokens


def test_calibrated_prune_of_a_cache_model_takes_prompts_with_empty_caches():
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 256, (4, 12)),
             "attention_mask": np.ones((4, 12), np.int64),
             "position_ids": np.tile(np.arange(12), (4, 1))}
    feeds |= {f"past_key_values.{i}.{kind}": np.zeros((4, 4, 0, 8), np.float32)
              for i in range(2) for kind in ("key", "value")}
    pruned, report = prune(str(FIXTURE / "model.onnx"), 0.3, head_ratio=0.5, calib=[feeds])
    assert report.criterion == "wanda" and report.reconstruct == "lsq"
    assert {c["after"] for c in report.io_changes} == {2}
    assert _dims(pruned.graph.input[3])[1] == 2
