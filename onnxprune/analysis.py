"""A model made ready for planning: loaded, checked, its calibration stream, sample
shapes and channel groups (`Analysis`), and what is measured on it before anything
changes: the cost of a cut (`Pricer`) and activation statistics (`ActivationStats`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from onnx import ModelProto

from . import calibrate, external
from . import model as model_io
from .cache import io_changes, shrink_io
from .cost import Cost, concrete, model_cost, shrunk
from .criteria.activation import sink_activations
from .depgraph import DepGraph, Group, build, view_of
from .images import ImageOptions
from .rewrite import Values, apply, removed_slots
from .shapes import Probe, concrete_shape_table, sample_shapes

if TYPE_CHECKING:
    from .planning.problem import Removed

ModelLike = ModelProto | str | os.PathLike


@dataclass(frozen=True)
class Analysis:
    """A checked model, its channel groups at the sample input shapes, its
    calibration stream (None without calibration data) and `labels()`, which reads
    the calibration data's class labels, one per sample of the stream (None without;
    read only when asked: the gradient criteria)."""

    proto: ModelProto
    dep: DepGraph
    shapes: dict[str, tuple[int, ...]]
    stream: Callable[[], Iterator[dict]] | None = None
    labels: Callable[[], np.ndarray | None] = lambda: None

    def probe(self) -> Probe:
        """The analysis' onnxruntime shape probe (its runs are shared), or a new one."""
        return self.dep.view.prober or (lambda: model_io.export(self.dep.view.graph, self.proto))

    def rewritten(self, removed: Removed, values: Values | None = None) -> ModelProto:
        """The model with the removed units cut out (and the constants of `values`, new
        values by name, replaced first); the weights read so far are unmapped, and large
        changed ones spilled, when the model is external (`external`)."""
        view, slots = self.dep.view, removed_slots(self.dep, removed)
        external.settle(view.graph, to_scratch=external.has_external(self.proto))
        model = model_io.export(apply(view.graph, view, slots, values), self.proto)
        shrink_io(model, io_changes(self.proto, slots))
        return model


def analyze(model: ModelLike, input_shapes: dict[str, tuple[int, ...]] | None = None,
            calib: calibrate.CalibrationSource | None = None, calib_samples: int | None = None,
            batch_size: int = 8,            images: ImageOptions | None = None) -> Analysis:
    """Load and check a model; its calibration stream, sample shapes and groups."""
    proto = model_io.load(model)
    model_io.check(proto)
    stream = calibrate.batches(calib, proto, calib_samples, batch_size, images) \
        if calib is not None else None
    labels = partial(calibrate.labels, calib, proto, calib_samples, images)
    shapes = sample_shapes(proto, input_shapes)
    dep = build(view_of(model_io.normalize(proto), proto, shapes))
    return Analysis(proto, dep, shapes, stream, labels)


class Pricer:
    """Cost of the model under a set of removed units (None or none: the dense model),
    from the concrete shapes of the analysis (`base`)."""

    def __init__(self, analysis: Analysis):
        self.dep = analysis.dep
        structure = model_io.structure_proto(self.dep.view.graph, analysis.proto)
        self.base = concrete(concrete_shape_table(structure, analysis.shapes,
                                                  analysis.probe()))

    def __call__(self, removed: Removed | None) -> Cost:
        if not removed:
            return model_cost(self.dep.view.graph, self.base)
        return model_cost(self.dep.view.graph, shrunk(self.base, removed_slots(self.dep,
                                                                                removed)))


class ActivationStats:
    """Statistics of the activations entering groups' consumers, measured once per slot
    on the model before any change (exported on first need); None without data."""

    def __init__(self, analysis: Analysis, progress: Callable[[int], None] | None = None):
        self.analysis, self.progress = analysis, progress
        self.known: dict = {}
        self.model: ModelProto | None = None

    def __call__(self, groups: list[Group]) -> dict | None:
        analysis = self.analysis
        if analysis.stream is None:
            return None
        view = analysis.dep.view
        wanted = {(s.tensor, s.axis) for g in groups for s in sink_activations(g, view)}
        slots = sorted(s for s in wanted if s not in self.known)
        if slots:
            self.model = self.model or model_io.export(view.graph, analysis.proto)
            self.known.update(calibrate.collect(self.model, slots, analysis.stream,
                                                self.progress))
        return self.known
