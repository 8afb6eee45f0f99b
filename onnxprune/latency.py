"""Latency tables: measured onnxruntime latency of every compute layer (Conv,
ConvTranspose, Gemm, MatMul with a constant weight) at candidate channel counts,
cached on disk, and the latency budget that plans with them.

A layer is timed alone, as a one-node model with the shapes and attributes it has
in the pruned graph. The candidate counts are those the planner produces at a grid
of uniform ratios; between them a layer's latency is interpolated in its MACs. The
table predicts the layers' share of the model; whole-model measurements, dense and
pruned taken in turns, correct the prediction in a closed loop.

Cache: `$ONNXPRUNE_CACHE_DIR` (default `~/.cache/onnxprune`)/latency/, one JSON file
per (model fingerprint, provider, threads, input shapes), holding seconds per layer
configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import ModelProto, helper, numpy_helper

from .bench import interleaved_times, timing_session
from .cost import ShapeOf
from .files import write_atomic

TIMED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


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
    rounds = 5
    runs = 60

    def __init__(self, table: LatencyTable, layers, price, rewrite, feeds, quiet=True,
                 dense: ModelProto | None = None):
        self.table, self.layers, self.price, self.rewrite = table, layers, price, rewrite
        self.dense = dense
        self.feeds, self.quiet = feeds, quiet
        self.curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.dense_layers = 0.0
        self.outcome: dict = {}

    def prepare(self, removed_at) -> None:
        """Time every layer at the planner's kept counts for each grid ratio."""
        from .progress import bar

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

    def measured(self, removed) -> float:
        """Measured whole-model latency under `removed` over the given dense model's (the
        user's file, whose form can be slower than the rewritten graph's), timed in
        turns of a few runs; the median of the turns' ratios."""
        from .bench import paired_ratio

        key, block = self.table.key, 5
        dense = self.dense if self.dense is not None else self.rewrite({})
        sessions = [timing_session(m, key["provider"], key["threads"])
                    for m in (dense, self.rewrite(removed))]
        return paired_ratio(interleaved_times(sessions, self.feeds, self.runs, block), block)

    def settle(self, plan_at, target: float):
        """Plan to the table's prediction, measure the whole model, and correct the
        goal (rescaled by target / measured, or interpolated between the goals whose
        measurements bracket the target) until a measurement is within tolerance; the
        plan measured closest to the target wins."""
        from .errors import InputError
        from .progress import bar

        goal, best, tried = target, None, []
        for _ in range(self.rounds):
            try:
                plan = plan_at(goal)
            except InputError:
                if best is None:
                    raise
                break
            with bar(f"timing the model pruned to goal {goal:.3f}", None, self.quiet):
                measured = self.measured(plan.removed)
            tried.append({"goal": goal, "predicted": self.fraction(plan.removed),
                          "measured": measured})
            if best is None or abs(measured - target) < abs(best[0] - target):
                best = (measured, plan)
            if abs(measured - target) <= self.tolerance * target:
                break
            goal = min(1.0, max(0.02, next_goal(tried, target)))
        self.outcome = {"target": target, "measured": best[0], "rounds": tried,
                        "layers_timed": self.table.measured, "table": str(self.table.path)}
        return best[1]


def layers_under(dep, base: ShapeOf, opset: int):
    """A function: removed units → (node name, layer configuration, opset) of every
    compute layer in the pruned graph."""
    from .rewrite import apply, removed_slots

    def layers(removed):
        slots = removed_slots(dep, removed)
        graph = apply(dep.view.graph, dep.view, slots)
        cut: dict[str, dict[int, int]] = {}
        for slot, idx in slots.items():
            cut.setdefault(slot.tensor, {})[slot.axis] = len(idx)

        def shape_of(name: str):
            shape = base(name)
            if shape is None or name not in cut:
                return shape
            return tuple(d - cut[name].get(a, 0) for a, d in enumerate(shape))

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


def next_goal(tried: list[dict], target: float) -> float:
    """The next table goal: interpolated between the closest goals measured below and
    above the target, or the last goal rescaled by target / measured."""
    below = [t for t in tried if t["measured"] < target]
    above = [t for t in tried if t["measured"] >= target]
    if below and above:
        low = max(below, key=lambda t: t["measured"])
        high = min(above, key=lambda t: t["measured"])
        share = (target - low["measured"]) / max(high["measured"] - low["measured"], 1e-9)
        return low["goal"] + share * (high["goal"] - low["goal"])
    return tried[-1]["goal"] * target / tried[-1]["measured"]
