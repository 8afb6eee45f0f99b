"""Latency and energy budgets: the latency table's cache and keys, the name-free
layer configurations, the energy model, and refusals. Timings are never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_plan_file import renamed

from onnxprune import InputError, prune
from onnxprune import model as model_io
from onnxprune.budget import EnergyModel
from onnxprune.cli import main
from onnxprune.cost import Cost, concrete, model_cost
from onnxprune.latency import (
    LatencyMeter,
    layer_config,
    next_step,
    pick_step,
    plan_chain,
    step_multiple,
)
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


def padded(period: int, slope: float = 1.0, size: int = 96) -> dict[int, float]:
    """Seconds that grow with the kept count rounded up to a multiple of `period`."""
    return {n: 10.0 + slope * period * -(-n // period) for n in range(size - 32, size + 1)}


def slow_off(multiple: int, size: int = 96) -> dict[int, float]:
    """A fast path only at multiples of `multiple`, twice as slow elsewhere."""
    return {n: (1.0 if n % multiple == 0 else 2.0) * (10.0 + n) for n in range(size - 32,
                                                                            size + 1)}


def test_rounding_is_the_multiple_at_which_synthetic_latency_steps_occur():
    assert step_multiple([padded(16)]) == 16
    assert step_multiple([padded(8), padded(8, size=200)]) == 8
    assert step_multiple([slow_off(16)]) == 16
    assert step_multiple([slow_off(8)]) == 8
    assert step_multiple([slow_off(4), padded(4, size=64)]) == 4
    assert step_multiple([{n: 10.0 + 0.01 * n for n in range(64, 97)}]) == 1
    assert step_multiple([{n: 10.0 + 0.01 * n for n in range(1, 16)}]) == 1
    assert step_multiple([]) == 1
    # one curve's fast path every 8 channels, another's every 16: 16 suits both
    assert step_multiple([slow_off(8), slow_off(16)]) == 16
    # a small group whose counts below 16 all take a slower path than 16 itself
    assert step_multiple([{n: (0.6 + 0.03 * n) if n < 16 else 0.6 + 0.01 * n
                           for n in range(1, 25)}]) == 16
    # measurement noise (below 2 % of the curve) does not hide the steps
    rng = np.random.default_rng(0)
    noisy = {n: t * (1 + 0.005 * rng.standard_normal()) for n, t in padded(16, 4.0).items()}
    assert step_multiple([noisy]) == 16


def test_latency_round_to_is_chosen_from_the_tables_unless_given(quick, monkeypatch):
    monkeypatch.setattr(LatencyMeter, "round_to", lambda self, groups: 8)
    _, chosen = prune(str(DEMO), target_latency=0.9, threads=1, input_shapes=SHAPES)
    assert chosen.round_to == 8
    assert chosen.plan_document["options"]["round_to"] == 8
    _, given = prune(str(DEMO), target_latency=0.9, threads=1, input_shapes=SHAPES,
                     round_to=4)
    assert given.round_to == 4


def test_plan_chain_cuts_one_group_one_step_at_a_time():
    def removed_at(ratio: float) -> dict:
        return {g: np.arange(int(ratio * size) // 4 * 4) for g, size in ((0, 64), (1, 32))}

    chain = plan_chain(removed_at, 0.5, steps=50)
    assert [len(chain[0][g]) for g in (0, 1)] == [0, 0]
    assert [len(chain[-1][g]) for g in (0, 1)] == [32, 16]
    for before, after in zip(chain, chain[1:], strict=False):
        changed = [g for g in (0, 1) if len(before[g]) != len(after[g])]
        assert len(changed) == 1 and len(after[changed[0]]) > len(before[changed[0]])


def test_closed_loop_steps_toward_the_crossing_and_keeps_the_closest_plan_below():
    predicted = list(np.linspace(1.0, 0.2, 101))
    # measured latency runs 10 % below the prediction
    assert next_step({0: 1.0, 50: 0.54}, predicted.__getitem__, 101, 0.6, 0.04) in range(26, 50)
    assert next_step({0: 1.0, 50: 0.59}, predicted.__getitem__, 101, 0.6, 0.04) is None
    assert next_step({0: 1.0, 40: 0.65, 41: 0.55}, predicted.__getitem__, 101, 0.6, 0.04) is None
    # noise: a plan measured below the target before the last one above it is ignored
    assert next_step({0: 1.0, 10: 0.5, 40: 0.65, 60: 0.45}, predicted.__getitem__, 101, 0.6, 0.04) \
        in range(41, 60)
    assert pick_step({0: 1.0, 40: 0.65, 45: 0.58, 50: 0.52}, 0.6) == 45
    assert pick_step({0: 1.0, 40: 0.65, 45: 0.62}, 0.6) == 45
