"""Sensitivity: the measured change of the model's outputs when one group alone loses
its lowest-ranked units (the per-layer sensitivity analysis of Li et al. 2017,
"Pruning Filters for Efficient ConvNets"; NetAdapt and AMC likewise allocate
per-layer ratios from measurements rather than one uniform ratio).

Each point is one onnxruntime run of the dense model in which the group's units are
zeroed at its consumers (mask-equivalent to removing them), on calibration samples; the
new weights are passed as initializer overrides, as the layer-wise walk
(`layerwise.py`) passes them. The error is the relative L2 distance of the outputs from
the dense outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from onnx import ModelProto

from ..calibrate import not_running
from ..depgraph import DepGraph, Group
from ..distributed import Executor, InProcess
from ..layerwise import with_values
from ..model import export
from ..rewrite import zeroed_sinks
from ..targets.onnxruntime import serialized
from ..verify import relative_error

DEFAULT_RATIOS = (0.25, 0.5, 0.75)
DEFAULT_SAMPLES = 32


@dataclass
class Curve:
    """Output error of one group pruned alone, at several ratios."""

    group: int
    kind: str
    units: int
    producers: list[str]
    ratios: list[float] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)

    def error_at(self, count: int) -> float:
        """Error with `count` units removed: interpolated between measured points,
        extended linearly beyond the last one."""
        points = {0: 0.0}
        for removed, error in zip(self.removed, self.errors, strict=True):
            points[removed] = max(error, points.get(removed, 0.0))
        xs, ys = zip(*sorted(points.items()), strict=True)
        if count <= xs[-1] or len(xs) < 2:
            return float(np.interp(count, xs, ys))
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return float(ys[-1] + max(slope, 0.0) * (count - xs[-1]))


def first_samples(stream: Callable[[], Iterator[dict]], samples: int) -> list[dict]:
    """The first batches of a calibration stream holding at least `samples` samples."""
    taken, count = [], 0
    for feeds in stream():
        taken.append(feeds)
        count += len(next(iter(feeds.values())))
        if count >= samples:
            break
    return taken


def measure_curves(dep: DepGraph, original: ModelProto, groups: list[Group],
                   removals: Callable[[Group, float], np.ndarray], feeds: list[dict],
                   ratios: tuple[float, ...] = DEFAULT_RATIOS,
                   progress: Callable[[int], None] | None = None,
                   executor: Executor | None = None) -> list[Curve]:
    """For each group and ratio, the output error when `removals(group, ratio)` units
    of that group alone are removed; the (group, ratio) cuts are measured as tasks of
    `executor` (in-process by default), the model and samples shared by all."""
    cuts = [(group, removals(group, ratio)) for group in groups for ratio in ratios]
    with serialized(export(dep.view.graph, original)) as data:
        masks = (zeroed_sinks(dep, {group.id: units}) if len(units) else None
                 for group, units in cuts)  # in-process: one cut's weights at a time
        errors = (executor or InProcess()).map(
            _cut_error, masks, (data, feeds, _outputs(data, {}, feeds)),
            _per_group(progress, len(ratios)))
    curves = []
    for index, group in enumerate(groups):
        span = slice(index * len(ratios), (index + 1) * len(ratios))
        curves.append(Curve(group.id, group.kind, group.units,
                            [name for name, _ in group.producers], list(ratios),
                            [len(units) for _, units in cuts[span]], errors[span]))
    return curves


def _cut_error(shared: tuple, weights: dict[str, np.ndarray] | None) -> float:
    """One task: the output error with these consumer weights zeroed (0 for no cut)."""
    data, feeds, dense = shared
    return 0.0 if weights is None else _error(dense, _outputs(data, weights, feeds))


def _per_group(progress: Callable[[int], None] | None, ratios: int):
    """`progress(1)` per group measured, from a count of measured cuts."""
    if progress is None:
        return None
    count = [0]

    def done(cuts: int) -> None:
        before, count[0] = count[0], count[0] + cuts
        for _ in range(count[0] // ratios - before // ratios):
            progress(1)

    return done


def _outputs(model, weights: dict[str, np.ndarray], feeds: list[dict]) -> list[list]:
    """Outputs of every batch, with some initializers replaced."""
    try:
        sess = with_values(model, weights)
        return [sess.run(None, batch) for batch in feeds]
    except Exception as exc:
        raise not_running(exc) from None


def _error(dense: list[list], pruned: list[list]) -> float:
    """Mean over floating outputs of the relative L2 error, over all batches."""
    errors = []
    for index, reference in enumerate(dense[0]):
        if not np.issubdtype(np.asarray(reference).dtype, np.floating):
            continue
        want = np.concatenate([np.ravel(batch[index]) for batch in dense])
        got = np.concatenate([np.ravel(batch[index]) for batch in pruned])
        errors.append(relative_error(want, got))
    return float(np.mean(errors)) if errors else 0.0
