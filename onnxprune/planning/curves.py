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

from ..depgraph import DepGraph, Group
from ..errors import InputError, first_line
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
                   progress: Callable[[int], None] | None = None) -> list[Curve]:
    """For each group and ratio, the output error when `removals(group, ratio)` units
    of that group alone are removed."""
    with serialized(export(dep.view.graph, original)) as data:
        dense = _outputs(data, {}, feeds)
        curves = []
        for group in groups:
            curve = Curve(group.id, group.kind, group.units,
                          [name for name, _ in group.producers], list(ratios))
            for ratio in ratios:
                units = removals(group, ratio)
                curve.removed.append(len(units))
                curve.errors.append(_error(dense, _outputs(data, zeroed_sinks(
                    dep, {group.id: units}), feeds)) if len(units) else 0.0)
            curves.append(curve)
            if progress:
                progress(1)
    return curves


def _outputs(model, weights: dict[str, np.ndarray], feeds: list[dict]) -> list[list]:
    """Outputs of every batch, with some initializers replaced."""
    try:
        sess = with_values(model, weights)
        return [sess.run(None, batch) for batch in feeds]
    except Exception as exc:
        raise InputError(f"the model does not run on the calibration data: "
                         f"{first_line(exc)}") from None


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
