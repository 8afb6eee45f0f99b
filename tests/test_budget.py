"""Latency and energy budgets: the latency table's cache and keys, the name-free
layer configurations, the energy model, and refusals. Timings are never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_plan_file import renamed

from onnxprune import InputError, prune
from onnxprune import model as model_io
from onnxprune.budget import EnergyModel
from onnxprune.cli import main
from onnxprune.cost import Cost, concrete, model_cost
from onnxprune.latency import LatencyMeter, layer_config
from onnxprune.shapes import concrete_shape_table

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"
SHAPES = {"x": (1, 3, 48, 192)}


@pytest.fixture
def quick(monkeypatch, tmp_path):
    """A private cache directory and short measurements."""
    monkeypatch.setenv("ONNXPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(LatencyMeter, "runs", 5)
    monkeypatch.setattr(LatencyMeter, "rounds", 2)
    return tmp_path / "cache" / "latency"


def test_latency_table_is_measured_once_and_cached_per_key(quick):
    _, first = prune(str(DEMO), target_latency=0.9, threads=1, input_shapes=SHAPES)
    assert first.target["target"] == 0.9 and first.target["layers_timed"] > 0
    assert 1 <= len(first.target["rounds"]) <= 2
    cached = json.loads(Path(first.target["table"]).read_text())
    assert cached["key"]["provider"] == "CPUExecutionProvider"
    assert cached["key"]["input_shapes"] == {"x": [1, 3, 48, 192]}
    assert cached["key"]["fingerprint"] == first.plan_document["model"]["fingerprint"]
    assert len(cached["entries"]) == first.target["layers_timed"]
    _, second = prune(str(DEMO), target_latency=0.9, threads=1, input_shapes=SHAPES)
    assert second.target["layers_timed"] == 0 and second.target["table"] == \
        first.target["table"]
    _, other = prune(str(DEMO), target_latency=0.9, threads=1,
                     input_shapes={"x": (1, 3, 48, 96)})
    assert other.target["table"] != first.target["table"]
    assert other.target["layers_timed"] > 0
    assert sorted(p.name for p in quick.iterdir()) == sorted(
        {Path(first.target["table"]).name, Path(other.target["table"]).name})


def test_layer_configurations_do_not_depend_on_names():
    model = model_io.load(str(DEMO))

    def configs(proto):
        graph = model_io.normalize(proto)
        table = concrete_shape_table(model_io.structure_proto(graph, proto), SHAPES,
                                     lambda: model_io.export(graph, proto))
        found = [layer_config(n, concrete(table)) for n in graph.nodes]
        return [c for c in found if c]

    first = configs(model)
    weighted = [n for n in model_io.normalize(model).nodes if n.op in ("Conv", "MatMul")
                and type(n.inputs[1]).__name__ == "Constant"]
    assert len(first) == len(weighted) > 40
    assert first == configs(renamed(model))
    assert all('"op": "Conv"' in c or '"op": "MatMul"' in c for c in first)


def test_unknown_provider_and_out_of_range_targets_are_refused(quick):
    with pytest.raises(InputError, match="not available"):
        prune(str(DEMO), target_latency=0.5, provider="NoSuchExecutionProvider")
    for flags, words in ((["--target-latency", "1.5"], "--target-latency must be in"),
                         (["--target-energy", "0"], "--target-energy must be in"),
                         (["--ratio", "0.3", "--target-latency", "0.5"], "only one of")):
        out = quick.parent.parent / "x.onnx"
        result = CliRunner().invoke(main, ["prune", str(DEMO), "-o", str(out), *flags])
        assert result.exit_code == 2 and words in result.stderr


def energy(proto, shapes) -> float:
    graph = model_io.normalize(proto)
    table = concrete_shape_table(model_io.structure_proto(graph, proto), shapes,
                                 lambda: model_io.export(graph, proto))
    return EnergyModel().joules(model_cost(graph, concrete(table)))


def test_energy_budget_keeps_at_most_the_target_and_close_to_it():
    dense = model_io.load(str(DEMO))
    pruned, report = prune(dense, target_energy=0.5, input_shapes=SHAPES)
    kept = energy(pruned, SHAPES) / energy(dense, SHAPES)
    assert 0.4 < kept <= 0.5 + 1e-9, kept
    assert report.target["target"] == 0.5 and report.target["dense_joules"] > 0


def test_energy_model_constants_follow_horowitz():
    model = EnergyModel()
    assert model.joules(Cost(1, 0, {}, 0)) == pytest.approx(4.6e-12)
    assert model.joules(Cost(0, 1, {}, 0)) == pytest.approx(4 * 162.5e-12)
    assert model.joules(Cost(0, 0, {}, 1)) == pytest.approx(4 * 12.5e-12)
