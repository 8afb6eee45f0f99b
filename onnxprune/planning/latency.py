"""The latency budget: measured latency of every compute layer (those whose op family
is `timed`: Conv, ConvTranspose, Gemm, MatMul, Einsum with a constant weight) at
candidate channel counts, and the closed loop that settles a plan on whole-model
measurements.

A layer is timed alone, as a one-node model with the shapes and attributes it has
in the pruned graph. The candidate counts are those the planner produces at a grid
of uniform ratios; between them a layer's latency is interpolated in its MACs. The
table predicts the layers' share of the model and picks the first plan to time; the
closed loop then searches a fine chain of plans (one group one rounding step further
at a time) on whole-model measurements, dense and pruned taken in turns.

Tables and their cache: `../latency_table.py`; the search's pure decisions:
`latency_search.py`. Everything is timed through a `Timer` (`timer_for`: onnxruntime),
so the planner's logic runs the same on any timer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from onnx import ModelProto

from ..bench import OrtTimer, Timer
from ..cost import ShapeOf, shrunk
from ..errors import InputError
from ..latency_table import LatencyTable, layer_config
from .latency_search import first_at_most, next_step, pick_step, plan_chain, step_multiple
from .options import PlanOptions
from .problem import Plan

if TYPE_CHECKING:
    from ..analysis import Analysis, Pricer
    from ..depgraph import DepGraph
    from .budgets import RemovedAt
    from .problem import Removed

    Layers = Callable[[Removed], Iterator[tuple[str, str, int]]]  # (node, config, opset)

GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
PROBE_WIDTH = 32  # kept counts below a group's size timed for the rounding
PROBED_GROUPS = 3


def timer_for(dense: ModelProto, feeds: dict[str, np.ndarray], provider: str,
              threads: int) -> Timer:
    """The timer a latency budget uses: onnxruntime on `provider` with `threads`."""
    return OrtTimer(dense, feeds, provider, threads)


class LatencyMeter:
    """The latency budget: a table-based prediction of the fraction of dense latency a
    plan keeps, settled in a closed loop on whole-model measurements."""

    name = "latency"
    tolerance = 0.04
    rounds = 8
    retimes = 2  # whole-model timings of the most pruned plan before a target is refused

    def __init__(self, table: LatencyTable, layers: Layers, price: Pricer,
                 rewrite: Callable[[Removed], ModelProto], timer: Timer, quiet: bool = True):
        self.table, self.layers, self.price, self.rewrite = table, layers, price, rewrite
        self.timer, self.quiet = timer, quiet
        self.curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.dense_layers = 0.0
        self.removed_at, self.max_ratio = (lambda ratio: {}), GRID[-1]
        self.chosen_rounding: dict | None = None

    def prepare(self, removed_at: RemovedAt, max_ratio: float = GRID[-1]) -> None:
        """Time every layer at the planner's kept counts for each grid ratio."""
        from ..progress import bar

        self.removed_at, self.max_ratio = removed_at, max_ratio

        points: dict[str, list[tuple[float, float]]] = {}
        with bar("latency table (ratios)", len(GRID), self.quiet) as advance:
            for ratio in GRID:
                removed = removed_at(ratio)
                macs = self.price(removed).per_node
                for name, config, opset in self.layers(removed):
                    points.setdefault(name, []).append(
                        (macs[name][0], self.table.seconds(config, opset, self.timer)))
                if advance:
                    advance(1)
        self.table.save()
        for name, pairs in points.items():
            pairs.sort()
            self.curves[name] = (np.array([p[0] for p in pairs], float),
                                 np.array([p[1] for p in pairs], float))
        self.dense_layers = sum(float(y[-1]) for _, y in self.curves.values()) or 1e-30

    def fraction(self, removed: Removed) -> float:
        """Predicted latency of the layers under `removed`, over their dense latency."""
        per_node = self.price(removed).per_node
        total = sum(float(np.interp(per_node[name][0], x, y))
                    for name, (x, y) in self.curves.items())
        return total / self.dense_layers

    __call__ = fraction

    def measured(self, removed: Removed, repeat: int = 1) -> float:
        """Measured whole-model latency under `removed` over the given dense model's (the
        user's file, whose form can be slower than the rewritten graph's)."""
        return self.timer.ratio(self.rewrite(removed), repeat)

    def step_curve(self, group_id: int, units: int) -> dict[int, float]:
        """Seconds of the layers that cutting a group changes, for each kept count from
        its size down to `PROBE_WIDTH` fewer (at least 1)."""
        dense = {name: config for name, config, _ in self.layers({})}
        touched = {name for name, config, _ in self.layers({group_id: np.arange(1)})
                   if dense.get(name) != config}
        curve = {}
        for kept in range(units, max(0, units - PROBE_WIDTH - 1), -1):
            removed = {group_id: np.arange(units - kept)} if kept < units else {}
            curve[kept] = sum(self.table.seconds(config, opset, self.timer)
                              for name, config, opset in self.layers(removed)
                              if name in touched)
        return curve

    def rounding(self, candidates: Callable[[], list[tuple[int, int, int]]]) -> int:
        """The rounding the tables call for (`step_multiple`), from the step curves of
        the `PROBED_GROUPS` groups that cost most per channel; `candidates()` holds
        (group id, units, MACs one unit costs) of the channel groups of one channel per
        unit."""
        from ..progress import bar

        chosen = sorted(candidates(), key=lambda g: (-g[2], g[0]))[:PROBED_GROUPS]
        curves = []
        with bar("latency steps (groups)", len(chosen), self.quiet) as advance:
            for gid, units, _ in chosen:
                curves.append(self.step_curve(gid, units))
                if advance:
                    advance(1)
        self.table.save()
        self.chosen_rounding = {"round_to": step_multiple(curves),
                                "groups": [g[0] for g in chosen]}
        return self.chosen_rounding["round_to"]

    def settle(self, plan_at: Callable[[float], Plan], target: float) -> tuple[Plan, dict]:
        """Start from the table's plan for the target, then search the chain of plans
        (see `plan_chain`) on whole-model measurements (`next_step`); the plan measured
        closest to the target without exceeding it wins and is measured again. A target
        that the table, or every timing so far, puts out of reach is refused only when
        whole-model timings of the most pruned plan agree (`confirm_reachable`)."""
        from ..progress import bar

        chain = plan_chain(self.removed_at, self.max_ratio)
        predictions: dict[int, float] = {}
        known: dict[int, float] = {0: 1.0} if not any(len(v) for v in chain[0].values()) \
            else {}
        tried: list[dict] = []

        def predict(i: int) -> float:
            if i not in predictions:
                predictions[i] = self.fraction(chain[i])
            return predictions[i]

        def time_plan(i: int) -> float:
            with bar(f"timing plan {i} of {len(chain) - 1}", None, self.quiet):
                value = self.measured(chain[i])
            tried.append({"step": i, "predicted": predict(i), "measured": value})
            return value

        try:
            first = plan_at(target)
        except InputError:
            first = plan_at(float("inf"))  # the planner's skipped groups, for the plan
            self.confirm_reachable(len(chain) - 1, time_plan, known, target)
        step = first_at_most(predict, target, 0, len(chain) - 1)
        for _ in range(self.rounds):
            if step not in known:
                known[step] = time_plan(step)
            step = next_step(known, predict, len(chain), target, self.tolerance)
            if step is None:
                break
        if all(m > target for m in known.values()):
            self.confirm_reachable(len(chain) - 1, time_plan, known, target)
        pick = pick_step(known, target)
        with bar("timing the chosen plan again", None, self.quiet):
            final = self.measured(chain[pick], repeat=2)
        outcome = {"target": target, "measured": final, "first_measured": known[pick],
                   "step": pick, "plans": len(chain), "rounds": tried,
                   "rounding": self.chosen_rounding,
                   "layers_timed": self.table.measured, "table": str(self.table.path)}
        return replace(first, removed=chain[pick]), outcome

    def confirm_reachable(self, last: int, time_plan: Callable[[int], float],
                          known: dict[int, float], target: float) -> None:
        """Time the most pruned plan (step `last`) on the whole model, up to `retimes`
        times, keeping the fastest (load only adds time); refuse the target only when
        every timing keeps more."""
        for _ in range(self.retimes):
            known[last] = min(known.get(last, float("inf")), time_plan(last))
            if known[last] <= target:
                return
        raise InputError(f"the latency target cannot be reached: even pruning every group "
                         f"to its cap (ratio {self.max_ratio:.2f}) measures "
                         f"{known[last]:.2f} of the dense latency")


def layers_under(dep: DepGraph, base: ShapeOf, opset: int) -> Layers:
    """A function: removed units → (node name, layer configuration, opset) of every
    compute layer in the pruned graph."""
    from ..rewrite import apply, removed_slots

    def layers(removed: Removed) -> Iterator[tuple[str, str, int]]:
        slots = removed_slots(dep, removed)
        graph = apply(dep.view.graph, dep.view, slots)
        shape_of = shrunk(base, slots)
        for node in graph.nodes:
            config = layer_config(node, shape_of)
            if config is not None:
                yield node.name, config, opset

    return layers


def latency_meter(analysis: Analysis, price: Pricer, options: PlanOptions,
                  quiet: bool = True) -> LatencyMeter:
    """A latency budget for an analyzed model at its sample input shapes, on the
    options' provider and threads, with its cached table."""
    from ..bench import check_provider
    from ..planfiles.prune import fingerprint
    from ..verify import sample_feeds

    check_provider(options.provider)
    proto, shapes = analysis.proto, analysis.shapes
    key = {"fingerprint": fingerprint(analysis.dep, proto), "provider": options.provider,
           "threads": options.threads,
           "input_shapes": {k: list(v) for k, v in sorted(shapes.items())}}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    timer = timer_for(proto, sample_feeds(proto, shapes, options.seed), options.provider,
                      options.threads)
    return LatencyMeter(LatencyTable.load(key), layers_under(analysis.dep, price.base, opset),
                        price, analysis.rewritten, timer, quiet)
