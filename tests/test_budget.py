"""Latency and energy budgets: the latency planner on deterministic timings (a fake
timer that charges by MACs and counts what it times), the latency table's cache and
keys, the name-free layer configurations, the energy model, and refusals. Real timings
belong to tools/bench_latency_target.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_plan_file import renamed

from onnxprune import InputError, prune
from onnxprune import model as model_io
from onnxprune.cli import main
from onnxprune.cost import Cost, concrete, model_cost, node_macs
from onnxprune.latency_table import layer_config
from onnxprune.planning import latency
from onnxprune.planning.budgets import EnergyModel
from onnxprune.planning.latency_search import next_step, pick_step, plan_chain, step_multiple
from onnxprune.shapes import concrete_shape_table

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"
SHAPES = {"x": (1, 3, 48, 192)}


def charged_macs(proto, shapes: dict, block: int) -> float:
    """MACs of a model's Conv/Gemm/MatMul layers with their output and input channel
    counts padded up to multiples of `block` (a blocked fast path)."""
    graph = model_io.normalize(proto)
    table = concrete_shape_table(model_io.structure_proto(graph, proto), shapes,
                                 lambda: model_io.export(graph, proto))
    shape_of = concrete(table)
    total = 0.0
    for node in graph.nodes:
        macs = node_macs(node, shape_of)
        weight = shape_of(node.inputs[1].name) if macs and len(node.inputs) > 1 else None
        if weight and node.op in ("Conv", "MatMul"):
            out, into = (weight[0], weight[1]) if node.op == "Conv" else weight[::-1][:2]
            macs *= (block * math.ceil(out / block) / out) * (block * math.ceil(into / block)
                                                             / into)
        total += macs
    return total


class MacsTimer:
    """A deterministic stand-in for onnxruntime: a layer takes `b + a·MACs` seconds, a
    whole model `overhead` of the dense time (ops the tables do not see) plus its
    layers; channel counts are padded to multiples of `block`. Counts every timing.
    `layer_load(k)` and `model_load(k)` scale the k-th timing (0-based): load."""

    a, b, overhead = 1e-9, 1e-6, 0.2

    def __init__(self, dense, feeds, block=1, layer_load=None, model_load=None):
        self.shapes = {name: value.shape for name, value in feeds.items()}
        self.block, self.layers, self.models = block, 0, 0
        self.layer_load = layer_load or (lambda k: 1.0)
        self.model_load = model_load or (lambda k: 1.0)
        self.dense = charged_macs(dense, self.shapes, block)

    def layer(self, model) -> float:
        shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim)
                  for i in model.graph.input}
        seconds = self.b + self.a * charged_macs(model, shapes, self.block)
        self.layers += 1
        return seconds * self.layer_load(self.layers - 1)

    def true_ratio(self, pruned) -> float:
        return self.overhead + (1 - self.overhead) * charged_macs(
            pruned, self.shapes, self.block) / self.dense

    def ratio(self, pruned, repeat: int = 1) -> float:
        self.models += 1
        return self.true_ratio(pruned) * self.model_load(self.models - 1)


class Timers:
    """Stands in for `latency.timer_for`: makes `MacsTimer`s with `options` and keeps
    them, newest last."""

    def __init__(self, directory: Path):
        self.made: list[MacsTimer] = []
        self.options: dict = {}
        self.directory = directory

    def __call__(self, dense, feeds, provider, threads) -> MacsTimer:
        self.made.append(MacsTimer(dense, feeds, **self.options))
        return self.made[-1]

    @property
    def last(self) -> MacsTimer:
        return self.made[-1]


@pytest.fixture
def timers(monkeypatch, tmp_path) -> Timers:
    """A private cache directory, and fake timers for every latency budget."""
    monkeypatch.setenv("ONNXPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    fake = Timers(tmp_path / "cache" / "latency")
    monkeypatch.setattr(latency, "timer_for", fake)
    return fake


def test_latency_table_is_measured_once_and_cached_per_key(timers):
    _, first = prune(str(DEMO), target_latency=0.9, threads=1, input_shapes=SHAPES)
    timed = timers.last.layers
    assert timed > 40 and first.target["layers_timed"] == timed
    cached = json.loads(Path(first.target["table"]).read_text())
    assert cached["key"]["provider"] == "CPUExecutionProvider"
    assert cached["key"]["input_shapes"] == {"x": [1, 3, 48, 192]}
    assert cached["key"]["fingerprint"] == first.plan_document["model"]["fingerprint"]
    assert len(cached["entries"]) == timed  # every configuration timed once
    _, second = prune(str(DEMO), target_latency=0.9, threads=1, input_shapes=SHAPES)
    assert timers.last.layers == 0 and second.target["layers_timed"] == 0
    assert second.target["table"] == first.target["table"]
    assert second.target["measured"] == first.target["measured"]
    _, other = prune(str(DEMO), target_latency=0.9, threads=1, round_to=16,
                     input_shapes={"x": (1, 3, 48, 96)})
    assert other.target["table"] != first.target["table"]
    assert other.target["layers_timed"] == timers.last.layers > 0
    assert sorted(p.name for p in timers.directory.iterdir()) == sorted(
        {Path(first.target["table"]).name, Path(other.target["table"]).name})


@pytest.mark.parametrize("target", [0.7, 0.5])
def test_closed_loop_lands_at_or_below_the_target_within_tolerance(timers, target):
    pruned, report = prune(str(DEMO), target_latency=target, input_shapes=SHAPES,
                           round_to=8)
    timer = timers.last
    reached = timer.true_ratio(pruned)
    assert report.target["measured"] == pytest.approx(reached, rel=1e-9)
    assert target * (1 - 2 * latency.LatencyMeter.tolerance) <= reached <= target
    rounds = report.target["rounds"]
    assert 1 <= len(rounds) <= latency.LatencyMeter.rounds
    assert timer.models == len(rounds) + 1  # each round, then the chosen plan again
    # the tables miss the fixed overhead: the loop corrects their first prediction
    assert rounds[0]["predicted"] < rounds[0]["measured"]
def layer_configs(proto) -> list[str]:
    """The configuration of every compute layer of a model, in graph order."""
    graph = model_io.normalize(proto)
    table = concrete_shape_table(model_io.structure_proto(graph, proto), SHAPES,
                                 lambda: model_io.export(graph, proto))
    found = [layer_config(n, concrete(table)) for n in graph.nodes]
    return [c for c in found if c]


def test_layer_configurations_do_not_depend_on_names():
    model = model_io.load(str(DEMO))
    first = layer_configs(model)
    weighted = [n for n in model_io.normalize(model).nodes if n.op in ("Conv", "MatMul")
                and type(n.inputs[1]).__name__ == "Constant"]
    assert len(first) == len(weighted) > 40
    assert first == layer_configs(renamed(model))
    assert all('"op": "Conv"' in c or '"op": "MatMul"' in c for c in first)


def load_after_dense_layers(factor: float):
    """Load that sets in once the dense layers are timed: every later layer timing
    (the pruned configurations) is `factor` times slower."""
    dense = len(set(layer_configs(model_io.load(str(DEMO)))))
    return lambda k: 1.0 if k < dense else factor


def test_a_target_the_loaded_table_puts_out_of_reach_is_timed_before_refusing(timers):
    timers.options = {"layer_load": load_after_dense_layers(4.0),
                      "model_load": lambda k: 3.0 if k == 0 else 1.0}  # one noisy timing
    pruned, report = prune(str(DEMO), target_latency=0.5, input_shapes=SHAPES, round_to=8)
    reached = timers.last.true_ratio(pruned)
    assert 0.5 * (1 - 2 * latency.LatencyMeter.tolerance) <= reached <= 0.5
    rounds, last = report.target["rounds"], report.target["plans"] - 1
    assert [r["step"] for r in rounds[:2]] == [last, last]  # the most pruned plan, twice
    assert rounds[0]["predicted"] > 0.5 and rounds[0]["measured"] > 0.5
    assert rounds[1]["measured"] == pytest.approx(rounds[0]["measured"] / 3)


def test_a_target_out_of_reach_is_refused_after_timing_the_most_pruned_plan_twice(timers):
    timers.options = {"layer_load": load_after_dense_layers(4.0)}
    with pytest.raises(InputError, match=r"latency target cannot be reached.* measures 0\.3"):
        prune(str(DEMO), target_latency=0.25, input_shapes=SHAPES, round_to=8)
    assert timers.last.models == latency.LatencyMeter.retimes
    # the tables say it is reachable, but no timed plan is: refused all the same,
    # rather than returning a plan slower than the target
    timers.options = {}
    with pytest.raises(InputError, match=r"latency target cannot be reached.* measures 0\.3"):
        prune(str(DEMO), target_latency=0.25, input_shapes=SHAPES, round_to=8)
    assert timers.last.models >= latency.LatencyMeter.retimes


def test_unknown_provider_and_out_of_range_targets_are_refused(timers, tmp_path):
    with pytest.raises(InputError, match="not available"):
        prune(str(DEMO), target_latency=0.5, provider="NoSuchExecutionProvider")
    for flags, words in ((["--target-latency", "1.5"], "--target-latency must be in"),
                         (["--target-energy", "0"], "--target-energy must be in"),
                         (["--ratio", "0.3", "--target-latency", "0.5"], "only one of")):
        out = tmp_path / "x.onnx"
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


@pytest.mark.parametrize("block", [8, 16])
def test_latency_round_to_is_chosen_from_the_tables_unless_given(timers, block):
    timers.options["block"] = block  # channel counts run in padded blocks
    _, chosen = prune(str(DEMO), target_latency=0.9, input_shapes=SHAPES)
    assert chosen.round_to == block and chosen.target["rounding"]["round_to"] == block
    assert len(chosen.target["rounding"]["groups"]) == latency.PROBED_GROUPS
    assert chosen.plan_document["options"]["round_to"] == block
    kept = [g.kept for g in chosen.groups if g.removed and g.kind == "channel"]
    assert kept and all(k % block == 0 for k in kept)
    _, given = prune(str(DEMO), target_latency=0.9, input_shapes=SHAPES, round_to=4)
    assert given.round_to == 4 and given.target["rounding"] is None


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
