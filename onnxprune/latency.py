"""Latency tables: measured onnxruntime latency of every compute layer (Conv,
ConvTranspose, Gemm, MatMul with a constant weight) at candidate channel counts,
cached on disk, and the latency budget that plans with them.

A layer is timed alone, as a one-node model with the shapes and attributes it has
in the pruned graph. The candidate counts are those the planner produces at a grid
of uniform ratios; between them a layer's latency is interpolated in its MACs. The
table predicts the layers' share of the model and picks the first plan to time; the
closed loop then searches a fine chain of plans (one group one rounding step further
at a time) on whole-model measurements, dense and pruned taken in turns.

Cache: `$ONNXPRUNE_CACHE_DIR` (default `~/.cache/onnxprune`)/latency/, one JSON file
per (model fingerprint, provider, threads, input shapes), holding seconds per layer
configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import ModelProto, helper, numpy_helper

from .bench import interleaved_times, timing_session
from .cost import ShapeOf, shrunk
from .files import write_atomic

TIMED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
PROBE_WIDTH = 32  # kept counts below a group's size timed for the rounding
PROBED_GROUPS = 3
MULTIPLES = (1, 2, 4, 8, 16, 32)


def cache_dir() -> Path:
    return Path(os.environ.get("ONNXPRUNE_CACHE_DIR") or Path.home() / ".cache" / "onnxprune")


def layer_config(node: gs.Node, shape_of: ShapeOf) -> str | None:
    """A name-free description of a compute layer (op, attributes, input shapes,
    which inputs are constant), as JSON; None for other nodes or unknown shapes."""
    if node.op not in TIMED_OPS or (node.domain or "") not in ("", "ai.onnx"):
        return None
    if len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant):
        return None
    inputs = []
    for tensor in node.inputs:
        shape = shape_of(tensor.name) if tensor.name else None
        if tensor.name and shape is None:
            return None
        inputs.append([isinstance(tensor, gs.Constant), list(shape) if shape else None])
    attrs = {k: _plain(v) for k, v in sorted(node.attrs.items())}
    return json.dumps({"op": node.op, "attrs": attrs, "inputs": inputs}, sort_keys=True)


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def layer_model(config: str, opset: int) -> ModelProto:
    """A one-node float32 model for a layer configuration (seeded random weights)."""
    spec = json.loads(config)
    rng = np.random.default_rng(0)
    names, graph_inputs, weights = [], [], []
    for k, (constant, shape) in enumerate(spec["inputs"]):
        name = f"i{k}" if shape is not None else ""
        names.append(name)
        if shape is None:
            continue
        if constant:
            values = (rng.standard_normal(shape) * 0.05).astype(np.float32)
            weights.append(numpy_helper.from_array(values, name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                              shape))
    node = helper.make_node(spec["op"], names, ["y"], **spec["attrs"])
    graph = helper.make_graph([node], "layer", graph_inputs, [
        helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@dataclass
class LatencyTable:
    """Seconds per layer configuration, for one model, provider, threads and shapes."""

    key: dict
    entries: dict[str, float] = field(default_factory=dict)
    measured: int = 0
    runs: int = 20

    @property
    def path(self) -> Path:
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()
        return cache_dir() / "latency" / f"{digest[:32]}.json"

    @classmethod
    def load(cls, key: dict) -> LatencyTable:
        """The cached table for `key`, or an empty one (an unreadable cache is ignored)."""
        table = cls(key)
        try:
            data = json.loads(table.path.read_text())
            if data.get("key") == json.loads(json.dumps(key)):
                table.entries = {k: float(v) for k, v in data["entries"].items()}
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            pass
        return table

    def save(self) -> None:
        """Write the table atomically; a cache that cannot be written is skipped."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(json.dumps({"key": self.key, "entries": self.entries}), self.path)
        except OSError:
            pass

    def seconds(self, config: str, opset: int) -> float:
        """Median seconds of one layer configuration, measured on a miss."""
        if config not in self.entries:
            sess = timing_session(layer_model(config, opset), self.key["provider"],
                                  self.key["threads"])
            feeds = {i.name: np.random.default_rng(1).standard_normal(
                [d for d in i.shape]).astype(np.float32) for i in sess.get_inputs()}
            times = interleaved_times([sess], feeds, self.runs, block=self.runs, pause=0)
            self.entries[config] = statistics.median(times[0])
            self.measured += 1
        return self.entries[config]


class LatencyMeter:
    """The latency budget: a table-based prediction of the fraction of dense latency a
    plan keeps, settled in a closed loop on whole-model measurements."""

    name = "latency"
    tolerance = 0.04
    rounds = 8
    runs = 400
    seconds = 1.5
    pause = 0.02

    def __init__(self, table: LatencyTable, layers, price, rewrite, feeds, quiet=True,
                 dense: ModelProto | None = None):
        self.table, self.layers, self.price, self.rewrite = table, layers, price, rewrite
        self.dense = dense
        self.feeds, self.quiet = feeds, quiet
        self.curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.dense_layers = 0.0
        self.outcome: dict = {}
        self.removed_at, self.max_ratio = (lambda ratio: {}), GRID[-1]
        self._dense, self._runs = None, self.runs
        self.rounding: dict | None = None

    def prepare(self, removed_at, max_ratio: float = GRID[-1]) -> None:
        """Time every layer at the planner's kept counts for each grid ratio."""
        from .progress import bar

        self.removed_at, self.max_ratio = removed_at, max_ratio

        points: dict[str, list[tuple[float, float]]] = {}
        with bar("latency table (ratios)", len(GRID), self.quiet) as advance:
            for ratio in GRID:
                removed = removed_at(ratio)
                macs = self.price(removed).per_node
                for name, config, opset in self.layers(removed):
                    points.setdefault(name, []).append(
                        (macs[name][0], self.table.seconds(config, opset)))
                if advance:
                    advance(1)
        self.table.save()
        for name, pairs in points.items():
            pairs.sort()
            self.curves[name] = (np.array([p[0] for p in pairs], float),
                                 np.array([p[1] for p in pairs], float))
        self.dense_layers = sum(float(y[-1]) for _, y in self.curves.values()) or 1e-30

    def fraction(self, removed) -> float:
        """Predicted latency of the layers under `removed`, over their dense latency."""
        per_node = self.price(removed).per_node
        total = sum(float(np.interp(per_node[name][0], x, y))
                    for name, (x, y) in self.curves.items())
        return total / self.dense_layers

    __call__ = fraction

    def measured(self, removed, runs: int | None = None) -> float:
        """Measured whole-model latency under `removed` over the given dense model's (the
        user's file, whose form can be slower than the rewritten graph's), timed in
        turns (see `bench.paired_ratio`)."""
        from .bench import paired_ratio

        key = self.table.key
        if self._dense is None:
            dense = self.dense if self.dense is not None else self.rewrite({})
            self._dense = timing_session(dense, key["provider"], key["threads"])
            self._runs = self.run_count(self._dense)
        runs = runs or self._runs
        block = max(5, runs // 20)
        sessions = [self._dense, timing_session(self.rewrite(removed), key["provider"],
                                                key["threads"])]
        times = interleaved_times(sessions, self.feeds, runs, block, pause=self.pause)
        return paired_ratio(times, block)

    def run_count(self, dense) -> int:
        """Runs per model per measurement: about `seconds` of dense runs (timed on the
        second of two), at least 40 and at most `runs`."""
        for _ in range(2):
            start = time.perf_counter()
            dense.run(None, self.feeds)
        each = max(time.perf_counter() - start, 1e-6)
        return min(self.runs, max(40, int(self.seconds / each)))

    def step_curve(self, group_id: int, units: int) -> dict[int, float]:
        """Seconds of the layers that cutting a group changes, for each kept count from
        its size down to `PROBE_WIDTH` fewer (at least 1)."""
        dense = {name: config for name, config, _ in self.layers({})}
        touched = {name for name, config, _ in self.layers({group_id: np.arange(1)})
                   if dense.get(name) != config}
        curve = {}
        for kept in range(units, max(0, units - PROBE_WIDTH - 1), -1):
            removed = {group_id: np.arange(units - kept)} if kept < units else {}
            curve[kept] = sum(self.table.seconds(config, opset)
                              for name, config, opset in self.layers(removed)
                              if name in touched)
        return curve

    def round_to(self, groups: list[tuple[int, int, int]]) -> int:
        """The rounding the tables call for (`step_multiple`), from the step curves of
        the `PROBED_GROUPS` groups that cost most per channel; `groups` holds (group id,
        units, MACs one unit costs) of the channel groups of one channel per unit."""
        from .progress import bar

        chosen = sorted(groups, key=lambda g: (-g[2], g[0]))[:PROBED_GROUPS]
        curves = []
        with bar("latency steps (groups)", len(chosen), self.quiet) as advance:
            for gid, units, _ in chosen:
                curves.append(self.step_curve(gid, units))
                if advance:
                    advance(1)
        self.table.save()
        self.rounding = {"round_to": step_multiple(curves), "groups": [g[0] for g in chosen]}
        return self.rounding["round_to"]

    def settle(self, plan_at, target: float):
        """Start from the table's plan for the target, then search the chain of plans
        (see `plan_chain`) on whole-model measurements (`next_step`); the plan measured
        closest to the target without exceeding it wins and is measured again."""
        from .progress import bar

        first = plan_at(target)
        chain = plan_chain(self.removed_at, self.max_ratio)
        cache: dict[int, float] = {}

        def predict(i: int) -> float:
            if i not in cache:
                cache[i] = self.fraction(chain[i])
            return cache[i]

        known: dict[int, float] = {0: 1.0} if not any(len(v) for v in chain[0].values()) \
            else {}
        step, tried = first_at_most(predict, target, 0, len(chain) - 1), []
        for _ in range(self.rounds):
            with bar(f"timing plan {step} of {len(chain) - 1}", None, self.quiet):
                known[step] = self.measured(chain[step])
            tried.append({"step": step, "predicted": predict(step), "measured": known[step]})
            step = next_step(known, predict, len(chain), target, self.tolerance)
            if step is None:
                break
        pick = pick_step(known, target)
        with bar("timing the chosen plan again", None, self.quiet):
            final = self.measured(chain[pick], 2 * self._runs)
        self.outcome = {"target": target, "measured": final, "first_measured": known[pick],
                        "step": pick, "plans": len(chain), "rounds": tried,
                        "rounding": self.rounding,
                        "layers_timed": self.table.measured, "table": str(self.table.path)}
        return replace(first, removed=chain[pick])


def step_multiple(curves: list[dict[int, float]], multiples=MULTIPLES,
                  share: float = 0.9) -> int:
    """The rounding latency curves call for (seconds per kept channel count, over
    consecutive counts up to a group's size). A count is *efficient* when every larger
    count of its curve is slower: no more channels come for the same time or less. The
    answer is the smallest of `multiples` whose multiples below the groups' sizes are
    efficient at least `share` of the time (else the one most often efficient; 1
    without curves)."""
    efficient: dict[int, list[bool]] = {m: [] for m in multiples}
    for curve in curves:
        counts = sorted(curve, reverse=True)
        cheapest_above = curve[counts[0]] if counts else 0.0
        for n in counts[1:]:
            for m in multiples:
                if n % m == 0:
                    efficient[m].append(curve[n] < cheapest_above)
            cheapest_above = min(cheapest_above, curve[n])
    rated = {m: sum(flags) / len(flags) for m, flags in efficient.items() if flags}
    if not rated:
        return 1
    return next((m for m in multiples if rated.get(m, 0.0) >= share),
                max(rated, key=lambda m: (rated[m], -m)))


def plan_chain(removed_at: Callable[[float], dict], high: float, steps: int = 400
               ) -> list[dict]:
    """Plans from the planner's at ratio 0 to its at `high`, each cutting one group by
    one more rounding step than the one before: the uniform plans on a fine grid of
    ratios, with the groups that change between two of them switched one at a time."""
    chain = [removed_at(0.0)]
    for ratio in np.linspace(0.0, high, steps + 1)[1:]:
        goal = removed_at(float(ratio))
        for gid in sorted(goal):
            now = chain[-1].get(gid)
            if now is None or len(now) != len(goal[gid]) or not np.array_equal(now, goal[gid]):
                chain.append({**chain[-1], gid: goal[gid]})
    return chain


def next_step(known: dict[int, float], predict: Callable[[int], float], size: int,
              target: float, tolerance: float) -> int | None:
    """The next plan of a chain of `size` to time, or None: once a plan measured within
    `tolerance` below the target, or the crossing is between two neighbours. Between the
    last plan measured above the target and the first measured below it after that one,
    the first whose table prediction, rescaled by measured/predicted interpolated from
    the measured plans, meets the target (found by bisection: predictions fall along the
    chain); kept in the middle half of that span."""
    if any(target * (1 - tolerance) <= m <= target for m in known.values()):
        return None
    low = max((i for i, m in known.items() if m > target), default=-1)
    high = min((i for i, m in known.items() if m <= target and i > low), default=size)
    if high - low <= 1:
        return None
    steps = sorted(known)
    scales = [known[i] / max(predict(i), 1e-12) for i in steps]
    guess = first_at_most(lambda i: predict(i) * float(np.interp(i, steps, scales)),
                          target, low + 1, high - 1)
    margin = max((high - low) // 4, 1)
    return int(min(max(guess, low + margin), high - margin))


def first_at_most(value: Callable[[int], float], target: float, low: int, high: int) -> int:
    """The first index in [low, high] whose falling `value` is at most the target (high
    when none is), by bisection."""
    while low < high:
        mid = (low + high) // 2
        if value(mid) <= target:
            high = mid
        else:
            low = mid + 1
    return low


def pick_step(known: dict[int, float], target: float) -> int:
    """The measured plan closest to the target without exceeding it (the fastest one
    when all exceed it)."""
    fits = [i for i, m in known.items() if m <= target]
    if fits:
        return max(fits, key=lambda i: (known[i], -i))
    return min(known, key=lambda i: known[i])


def layers_under(dep, base: ShapeOf, opset: int):
    """A function: removed units → (node name, layer configuration, opset) of every
    compute layer in the pruned graph."""
    from .rewrite import apply, removed_slots

    def layers(removed):
        slots = removed_slots(dep, removed)
        graph = apply(dep.view.graph, dep.view, slots)
        shape_of = shrunk(base, slots)
        for node in graph.nodes:
            config = layer_config(node, shape_of)
            if config is not None:
                yield node.name, config, opset

    return layers


def latency_meter(dep, proto: ModelProto, shapes: dict, base: ShapeOf, price, rewrite,
                  fingerprint: str, provider: str, threads: int, seed: int = 0,
                  quiet: bool = True) -> LatencyMeter:
    """A latency budget for a model at the given input shapes, with its cached table."""
    from .bench import check_provider
    from .verify import sample_feeds

    check_provider(provider)
    key = {"fingerprint": fingerprint, "provider": provider, "threads": threads,
           "input_shapes": {k: list(v) for k, v in sorted(shapes.items())}}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    return LatencyMeter(LatencyTable.load(key), layers_under(dep, base, opset), price,
                        rewrite, sample_feeds(proto, shapes, seed), quiet, dense=proto)
