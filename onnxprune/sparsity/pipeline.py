"""sparsify(): choose layers, zero weights in a pattern, store, verify."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from onnx import ModelProto

from .. import calibrate, memory, planfiles
from .. import model as model_io
from ..distributed import Executor
from ..errors import InputError
from ..planfiles import sparsify as sparsify_plans
from .check import verify_written
from .layers import (
    Layer,
    WeightStore,
    effective,
    find_layers,
    matches,
)
from .pattern import Pattern, parse_pattern
from .storage import INDEX_TYPES, to_fp16, to_initializers, to_sparse
from .weight_criteria import DATA_AWARE, check_criterion
from .zeroing import zero_weights

if TYPE_CHECKING:
    from ..analysis import ModelLike
    from ..images import ImageOptions

MIN_SIZE = 256  # outputs and reduction length from which sparse kernels can win
STORAGES = ("dense", "sparse")


@dataclass
class LayerReport:
    """One candidate weight: eligible or not, sparsified or not, and why."""

    node: str
    op: str
    input: int | None
    weight: str | None
    shape: list[int]
    axis: int | None
    outputs: int
    reduction: int
    eligible: bool
    sparsified: bool
    reason: str | None = None
    criterion: str | None = None
    zeros: float | None = None
    storage: str | None = None


@dataclass
class SparsifyReport:
    """What sparsify() did."""

    pattern: str
    sparsity: float
    criterion: str
    min_size: int
    all_layers: bool
    fp16: bool
    storage: str
    seconds: float
    layers: list[LayerReport] = field(default_factory=list)
    output_error: dict[str, float] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    plan_document: dict | None = field(default=None, repr=False)
    rounds: list[dict] | None = None

    @property
    def sparsified(self) -> list[LayerReport]:
        return [layer for layer in self.layers if layer.sparsified]

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("plan_document")
        if data["rounds"] is None:
            del data["rounds"]
        data["counts"] = {"candidates": len(self.layers),
                          "eligible": sum(layer.eligible for layer in self.layers),
                          "sparsified": len(self.sparsified)}
        return data


def sparsify(model: ModelLike, pattern: str = "2:4", *, sparsity: float | None = None,
             criterion: str = "magnitude", calib: calibrate.CalibrationSource | None = None,
             calib_samples: int | None = None, batch_size: int = 8,
             images: ImageOptions | None = None, min_size: int | None = None,
             all_layers: bool = False, ignore: tuple[str, ...] = (), fp16: bool = False,
             storage: str = "dense", sparse_indices: str = "int64",
             input_shapes: dict[str, tuple[int, ...]] | None = None, seed: int = 0,
             damp: float = 0.01, progress: Callable[[int], None] | None = None,
             plan: str | os.PathLike | dict | None = None, max_memory: int | None = None,
             executor: Executor | None = None,
             movement_budget: tuple[int | None, float | None] = (None, None)
             ) -> tuple[ModelProto, SparsifyReport]:
    """Zero weights of Conv, MatMul, Gemm and Einsum layers in an N:M or unstructured pattern
    and return the verified model and a report. By default only layers with at least
    `min_size` outputs and reduction length (256 for N:M, where sparse kernels can
    win; 0 for unstructured) are sparsified; `all_layers` takes every eligible one.
    `plan`: a plan file (`report.plan_document`) whose masks are applied instead of
    choosing (its pattern and sparsity; refused on another network); `max_memory`:
    bytes a wave of wanda or sparsegpt statistics may hold (`memory`); `executor`: where
    their solves run (`distributed.py`; the same weights anywhere); `movement_budget`:
    (steps, minutes) of the `movement` criterion's fine-tuning."""
    document = planfiles.read(plan, sparsify_plans.KIND) if plan is not None else None
    if document is not None:
        recorded = document.get("options") or {}
        pattern, sparsity = recorded.get("pattern", pattern), recorded.get("sparsity")
        criterion, calib = "magnitude", None
    spec = parse_pattern(pattern, sparsity)
    _check_options(criterion, calib, storage, sparse_indices, min_size, damp, seed)
    min_size = (MIN_SIZE if spec.structured else 0) if min_size is None else min_size
    start, (original, work) = time.perf_counter(), _loaded(model, criterion, max_memory)
    layers = find_layers(work)
    if document is not None:
        chosen, used = _replayed(document, layers, work)
    else:
        chosen = _eligible(layers, spec, min_size, all_layers, ignore)
        used = zero_weights(work, chosen, spec, criterion, calib, calib_samples, batch_size,
                             images, (seed, movement_budget), damp, progress, executor)
    zeros = _zero_fractions(work, chosen)
    saved = sparsify_plans.document(layers, chosen, work, original, {
        "pattern": spec.name, "sparsity": spec.sparsity, "criterion": criterion,
        "min_size": min_size, "all_layers": all_layers, "ignore": list(ignore)})
    written, stored = _store(work, chosen, fp16, storage, sparse_indices)
    errors, checks = verify_written(written, original, chosen, spec, input_shapes, seed)
    report = SparsifyReport(spec.name, spec.sparsity, "plan" if document else criterion,
                            min_size, all_layers, fp16, storage, time.perf_counter() - start,
                            [], errors, checks)
    report.layers = [_layer_report(layer, used, zeros, stored) for layer in layers]
    report.plan_document = saved
    return written, report


def _loaded(model: ModelLike, criterion: str, max_memory: int | None
            ) -> tuple[ModelProto, ModelProto]:
    """The checked input model and a working copy, refused early past `max_memory`."""
    memory.check_max_memory(max_memory)
    original = model_io.load(model)
    model_io.check(original)
    memory.check_model(original, criterion, max_memory)
    work = ModelProto()
    work.CopyFrom(original)
    return original, work


def _replayed(document: dict, layers: list[Layer], work: ModelProto):
    """Apply a plan's masks: the layers it sparsified, and what decided each."""
    chosen = sparsify_plans.replay(document, layers, work)
    picked = {id(layer) for layer in chosen}
    for layer in layers:
        if id(layer) not in picked:
            layer.reason = layer.reason or "not in the plan"
        else:
            layer.reason = None
    return chosen, {id(layer): "plan" for layer in chosen}


def _check_options(criterion: str, calib, storage: str, sparse_indices: str,
                   min_size: int | None, damp: float, seed: int) -> None:
    check_criterion(criterion)
    if criterion in DATA_AWARE and calib is None:
        raise InputError(f"criterion {criterion!r} needs calibration data (--calib DATA)")
    if storage not in STORAGES:
        raise InputError(f"unknown storage {storage!r}; choose one of {', '.join(STORAGES)}")
    if sparse_indices not in INDEX_TYPES:
        raise InputError(f"sparse indices must be one of {', '.join(INDEX_TYPES)}")
    if sparse_indices != "int64" and storage != "sparse":
        raise InputError(f"--sparse-indices {sparse_indices} applies to --storage sparse only")
    if min_size is not None and min_size < 0:
        raise InputError(f"--min-size must be at least 0, got {min_size}")
    if not 0 < damp < 1:
        raise InputError(f"damping must be in (0, 1), got {damp}")
    if seed < 0:
        raise InputError(f"--seed must be at least 0, got {seed}")


def _eligible(layers: list[Layer], pattern: Pattern, min_size: int, all_layers: bool,
              ignore: tuple[str, ...]) -> list[Layer]:
    """The layers to sparsify; each other layer is given its reason to be left alone."""
    for layer in layers:
        layer.reason = layer.reason or _skip_reason(layer, pattern, min_size, all_layers,
                                                    ignore)
    return [layer for layer in layers if layer.eligible]


def _skip_reason(layer: Layer, pattern: Pattern, min_size: int, all_layers: bool,
                 ignore: tuple[str, ...]) -> str | None:
    size = layer.shape[layer.axis]
    if pattern.structured and size % pattern.m:
        return (f"grouped axis {layer.axis} has {size} entries, not a multiple of "
                f"{pattern.m}")
    for text in ignore:
        if matches(text, layer):
            return f"ignored by {text!r}"
    if not all_layers and min(layer.outputs, layer.reduction) < min_size:
        return (f"too small for sparse kernels to pay: {layer.outputs} outputs × "
                f"{layer.reduction} reduction, under --min-size {min_size} (--all takes it)")
    return None


def _zero_fractions(work: ModelProto, layers: list[Layer]) -> dict[int, float]:
    store = WeightStore(work)
    return {id(layer): float(np.mean(effective(layer, store) == 0)) for layer in layers}


def _store(work: ModelProto, layers: list[Layer], fp16: bool, storage: str,
           sparse_indices: str) -> tuple[ModelProto, dict[str, str]]:
    notes = to_initializers(work, layers)
    steps = [to_fp16(work, layers) if fp16 else {},  # in this order: sparse values in fp16
             to_sparse(work, layers, sparse_indices) if storage == "sparse" else {}]
    for step in steps:
        for name, how in step.items():
            notes[name] = f"{notes[name]}; {how}" if name in notes else how
    return work, notes


def _layer_report(layer: Layer, used: dict, zeros: dict, stored: dict) -> LayerReport:
    return LayerReport(
        layer.node, layer.op, layer.input_index, layer.weight, list(layer.shape), layer.axis,
        layer.outputs, layer.reduction, layer.eligible, id(layer) in used, layer.reason,
        used.get(id(layer)), zeros.get(id(layer)),
        stored.get(layer.weight, "dense") if id(layer) in used else None)
