"""Plan files: decoded contents, bit-identical replay on another export of the same
network, refusal on a different network or a malformed file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from model_files import ZOO, zoo_model
from onnx import numpy_helper

from onnxprune import InputError, prune
from onnxprune.cli import main
from onnxprune.shapes import sample_shapes
from onnxprune.verify import relative_error, run, sample_feeds

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"
PAIRS = [("resnet18", "resnet18_dynamo", {"ratio": 0.4}),
         ("bert_tiny_ts", "bert_tiny_dynamo", {"ratio": 0.5, "head_ratio": 0.5}),
         ("llama_gqa_ts", "llama_gqa_dynamo", {"ratio": 0.5, "head_ratio": 0.5})]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def same_weights(first: str, second: str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Two exports of one network, filled with the same weights: the second export's
    stripped weights take the first's values, matched by shape and statistics."""
    raw = [onnx.load(str(ZOO / f"{name}.onnx")) for name in (first, second)]
    filled = zoo_model(first)
    values = {(tuple(t.dims), t.doc_string): f for t, f in
              zip(raw[0].graph.initializer, filled.graph.initializer, strict=True)
              if t.doc_string.startswith("{")}
    other = raw[1]
    for tensor in other.graph.initializer:
        if tensor.doc_string.startswith("{"):
            source = values[(tuple(tensor.dims), tensor.doc_string)]
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(source), tensor.name))
    del other.metadata_props[:]
    return filled, other


def renamed(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with every node and inner tensor renamed."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    keep = {v.name for v in list(graph.input) + list(graph.output)} | {""}
    names = {}
    for node in graph.node:
        node.name = f"n{len(names)}_{node.op_type}"
        for field in (node.input, node.output):
            for i, name in enumerate(field):
                if name not in keep:
                    field[i] = names.setdefault(name, f"t{len(names)}")
    for tensor in graph.initializer:
        tensor.name = names.get(tensor.name, tensor.name)
    for value in graph.value_info:
        value.name = names.get(value.name, value.name)
    return copy


def outputs(model: onnx.ModelProto, feeds) -> list[np.ndarray]:
    return list(run(model, feeds).values())


def removed_by_key(document: dict) -> dict[str, list[int]]:
    return {entry["key"]: entry["removed"] for entry in document["groups"]}


def test_saved_plan_records_decisions_and_replays_bit_identically(tmp_path):
    first, plan = tmp_path / "a.onnx", tmp_path / "plan.json"
    report = tmp_path / "r.json"
    result = invoke("prune", DEMO, "-o", first, "--ratio", "0.5", "--save-plan", plan,
                    "--report", report, "-q")
    assert result.exit_code == 0, result.output
    document = json.loads(plan.read_text())
    assert document["kind"] == "prune" and document["format"] == "onnxprune-plan"
    assert document["tool_version"] == "0.1.0"
    assert document["model"]["fingerprint"].startswith("sha256:")
    assert document["options"]["ratio"] == 0.5 and document["options"]["criterion"] == "l1"
    groups = json.loads(report.read_text())["groups"]
    assert [e["removed"] for e in document["groups"]] == [g["removed"] for g in groups
                                                          if g["removed"]]
    second = tmp_path / "b.onnx"
    result = invoke("prune", DEMO, "-o", second, "--plan", plan, "-q")
    assert result.exit_code == 0, result.output
    assert first.read_bytes() == second.read_bytes()


def test_replay_on_renamed_export_gives_bit_identical_outputs():
    model = zoo_model("mobilenet_v2")
    pruned, report = prune(model, 0.3)
    other = renamed(model)
    assert {n.name for n in other.graph.node}.isdisjoint({n.name for n in model.graph.node})
    replayed, again = prune(other, plan=report.plan_document)
    assert removed_by_key(again.plan_document) == removed_by_key(report.plan_document)
    feeds = sample_feeds(model, sample_shapes(model), seed=3)
    for want, got in zip(outputs(pruned, feeds), outputs(replayed, feeds), strict=True):
        assert np.array_equal(want, got)


@pytest.mark.parametrize("first, second, options", PAIRS, ids=[p[0] for p in PAIRS])
def test_plan_from_one_exporter_replays_on_the_other(first, second, options):
    model, other = same_weights(first, second)
    shapes = sample_shapes(model)
    pruned, report = prune(model, **options, input_shapes=shapes)
    replayed, again = prune(other, plan=report.plan_document, input_shapes=shapes)
    assert removed_by_key(again.plan_document) == removed_by_key(report.plan_document)
    assert again.macs_after == report.macs_after
    assert again.params_before - again.params_after == report.params_before - report.params_after
    feeds = sample_feeds(model, shapes, seed=3)
    dense_gaps = [relative_error(a, b) for a, b in
                  zip(outputs(model, feeds), outputs(other, feeds), strict=True)]
    pruned_pairs = zip(outputs(pruned, feeds), outputs(replayed, feeds), strict=True)
    for gap, (want, got) in zip(dense_gaps, pruned_pairs, strict=True):
        # the exporters' graphs round differently (resnet18, llama: ~1e-7 dense)
        assert np.array_equal(want, got) if gap == 0 else relative_error(want, got) < 10 * gap


def test_plan_is_refused_on_a_different_network(tmp_path):
    _, report = prune(zoo_model("resnet18"), 0.3)
    with pytest.raises(InputError, match="does not match this model"):
        prune(zoo_model("resnet50"), plan=report.plan_document)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(report.plan_document))
    out = tmp_path / "out.onnx"
    result = invoke("prune", DEMO, "-o", out, "--plan", plan)
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.count("\n") == 1 and "does not match this model" in result.stderr


def _tampered(document: dict, **changes) -> dict:
    copy = json.loads(json.dumps(document))
    for key, value in changes.items():
        if key == "removed":
            copy["groups"][0]["removed"] = value
        else:
            copy[key] = value
    return copy


@pytest.mark.parametrize("changes, words", [
    ({"format": "other"}, "not an onnxprune plan"),
    ({"format_version": 99}, "newer than this onnxprune"),
    ({"kind": "sparsify"}, "a 'sparsify' plan"),
    ({"removed": [3, 1]}, "malformed"),
    ({"removed": [0, 10_000]}, "malformed"),
    ({"removed": []}, "malformed"),
])
def test_malformed_plans_are_refused(changes, words):
    model = zoo_model("resnet18")
    _, report = prune(model, 0.3)
    with pytest.raises(InputError, match=words):
        prune(model, plan=_tampered(report.plan_document, **changes))


def test_plan_options_conflict_and_unreadable_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = tmp_path / "o.onnx"
    result = invoke("prune", DEMO, "-o", out, "--plan", bad)
    assert result.exit_code == 2 and "not a readable plan file" in result.stderr
    result = invoke("prune", DEMO, "-o", out, "--plan", bad, "--ratio", "0.3")
    assert result.exit_code == 2 and "do not give ratio" in result.stderr
    result = invoke("prune", DEMO, "-o", out, "--plan", tmp_path / "none.json")
    assert result.exit_code == 2 and "no such plan file" in result.stderr


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def calibrated_chain(tmp_path: Path) -> tuple[Path, Path]:
    """A conv chain as a file, and calibration data for it."""
    from helpers import GraphBuilder

    b = GraphBuilder(seed=6)
    x = b.input("x", ["n", 3, 8, 8])
    h = b.op("Relu", [b.conv(x, 3, 16)])
    h = b.op("Relu", [b.conv(h, 16, 16)])
    onnx.save(b.build(b.conv(h, 16, 4)), str(tmp_path / "m.onnx"))
    rng = np.random.default_rng(6)
    np.savez(tmp_path / "c.npz", x=rng.standard_normal((12, 3, 8, 8)).astype(np.float32))
    return tmp_path / "m.onnx", tmp_path / "c.npz"


@pytest.mark.parametrize("method", ["bias", "lsq"])
def test_a_plan_replays_its_reconstruction_on_the_calibration_data(tmp_path, method):
    model, calib = calibrated_chain(tmp_path)
    common = ["--input-shape", "x:1x3x8x8", "--round-to", "4", "-q"]
    result = invoke("prune", model, "-o", tmp_path / "a.onnx", "--ratio", "0.5", "--calib",
                    calib, "--reconstruct", method, "--ridge", "0.3", "--save-plan",
                    tmp_path / "plan.json", *common)
    assert result.exit_code == 0, result.output
    options = json.loads((tmp_path / "plan.json").read_text())["options"]
    assert (options["reconstruct"], options["ridge"]) == (method, 0.3)
    result = invoke("prune", model, "-o", tmp_path / "b.onnx", "--plan", tmp_path / "plan.json",
                    "--calib", calib, *common)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    # the reconstruction changed weights: without it the same cut gives others
    plain, _ = prune(str(model), plan=tmp_path / "plan.json", reconstruct="none")
    refit, replayed = weights(onnx.load(str(tmp_path / "b.onnx"))), weights(plain)
    assert sorted(refit) == sorted(replayed)
    assert any(not np.array_equal(refit[k], replayed[k]) for k in refit)
    for k in refit:
        assert refit[k].shape == replayed[k].shape


def test_a_reconstructing_plan_without_calibration_data_is_refused(tmp_path):
    model, calib = calibrated_chain(tmp_path)
    _, report = prune(str(model), 0.5, calib=calib, round_to=4)
    assert report.plan_document["options"]["reconstruct"] == "lsq"
    out = tmp_path / "o.onnx"
    result = invoke("prune", model, "-o", out, "--plan", _write(tmp_path, report.plan_document))
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.splitlines() == [
        "onnxprune: error: the plan was made with --reconstruct lsq, which needs calibration "
        "data: give --calib DATA (the data it was made with gives the same weights) or "
        "--reconstruct none"]


def _write(directory: Path, document: dict) -> Path:
    path = directory / "plan.json"
    path.write_text(json.dumps(document))
    return path


def zero_masks(model: onnx.ModelProto) -> dict[tuple, np.ndarray]:
    """Zero pattern of every initializer, keyed by shape and rank among equals."""
    seen: dict[tuple, int] = {}
    masks = {}
    for tensor in model.graph.initializer:
        shape = tuple(tensor.dims)
        masks[shape, seen.get(shape, 0)] = numpy_helper.to_array(tensor) == 0
        seen[shape] = seen.get(shape, 0) + 1
    return masks


def test_sparsify_plan_replays_the_same_zeros_on_a_renamed_export(tmp_path):
    from onnxprune import sparsify

    model = zoo_model("resnet18")
    sparse, report = sparsify(model, "2:4", all_layers=True)
    document = report.plan_document
    assert document["kind"] == "sparsify" and len(document["layers"]) == len(report.sparsified)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(document))
    replayed, again = sparsify(renamed(model), plan=str(plan))
    assert again.criterion == "plan" and len(again.sparsified) == len(report.sparsified)
    want, got = zero_masks(sparse), zero_masks(replayed)
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)
    feeds = sample_feeds(model, sample_shapes(model, None))
    assert all(np.array_equal(a, b) for a, b in zip(outputs(sparse, feeds),
                                                    outputs(replayed, feeds), strict=True))


def test_sparsify_plan_is_refused_on_another_network_and_by_prune(tmp_path):
    from onnxprune import sparsify

    _, report = sparsify(zoo_model("resnet18"), "2:4", all_layers=True)
    with pytest.raises(InputError, match="does not match this model"):
        sparsify(zoo_model("resnet50"), plan=report.plan_document)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(report.plan_document))
    result = invoke("prune", DEMO, "-o", tmp_path / "o.onnx", "--plan", plan)
    assert result.exit_code == 2 and "'sparsify' plan" in result.stderr
    broken = dict(report.plan_document, layers=[{"key": "x", "matrix": [4, 4], "zeros": "!"}])
    plan.write_text(json.dumps(broken))
    result = invoke("sparsify", DEMO, "-o", tmp_path / "o.onnx", "--plan", plan)
    assert result.exit_code == 2 and "malformed" in result.stderr
