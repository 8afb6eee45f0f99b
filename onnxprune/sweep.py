"""`onnxprune sweep`: every setting of a grid pruned as one task (a normal prune over
`PruneOptions`), each verified, scored on held-out samples, then timed, and the
Pareto front of cost against fidelity.

The calibration data is split once: the last `held_out` samples are held out and
only ever used to measure fidelity; the others calibrate every setting. Tasks run
through an executor (`distributed.py`), in-process or on Ray, with the model and the
data shared once; latency is measured afterwards, here, one model at a time in turns
with the dense model, so tasks running side by side do not disturb it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx

from . import calibrate
from . import model as model_io
from .bench import interleaved_medians
from .distributed import Executor
from .errors import InputError
from .files import Transaction
from .grid import Setting
from .images import ImageOptions
from .options import PruneOptions
from .reporting import FidelityData, measured_fidelity
from .verify import sample_feeds

if TYPE_CHECKING:
    from .calibrate import Feeds


@dataclass(frozen=True)
class SweepData:
    """What every task shares: the model's bytes, the calibration batches, the held-out
    batches, and the options common to every setting."""

    model: bytes
    calib: list[Feeds]
    held_out: list[Feeds]
    base: dict


@dataclass
class Outcome:
    """One setting pruned: its model's bytes, cost, fidelity on the held-out samples,
    the dense model's (MACs, parameters) and, once timed, its latency."""

    setting: Setting
    model: bytes
    macs: int
    params: int
    fidelity: dict
    input_shapes: dict
    dense: tuple[int, int] = (0, 0)
    warnings: list[str] = field(default_factory=list)
    latency_ms: float | None = None


def split(source: calibrate.CalibrationSource, model: onnx.ModelProto, held_out: int | None,
          samples: int | None, batch_size: int, images: ImageOptions | None = None
          ) -> tuple[list[Feeds], list[Feeds]]:
    """(calibration batches, held-out batches): the last `held_out` samples (default:
    a quarter, at least one) are held out; at least one sample must remain. Batches
    are as the calibration stream makes them (a fixed batch size of the model wins)."""
    stream = calibrate.batches(source, model, samples, batch_size, images)
    batches = list(stream())
    arrays = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    batch_size = len(next(iter(batches[0].values())))  # a model's fixed batch size rules
    total = len(next(iter(arrays.values())))
    count = max(total // 4, 1) if held_out is None else held_out
    if count < 1 or count >= total:
        raise InputError(f"--held-out {count}: the calibration data holds {total} samples; "
                         "hold out at least 1 and keep at least 1 for calibration")
    cut = total - count
    return (_batches(arrays, 0, cut, batch_size), _batches(arrays, cut, total, batch_size))


def _batches(arrays: dict[str, np.ndarray], start: int, stop: int, size: int) -> list[Feeds]:
    return [{name: np.ascontiguousarray(v[i:min(i + size, stop)]) for name, v in arrays.items()}
            for i in range(start, stop, size)]


def run_setting(data: SweepData, setting: Setting) -> Outcome:
    """One task: prune with the setting's options (prune verifies the model), then
    measure its fidelity on the held-out samples."""
    from .api import prune_with

    original = onnx.load_from_string(data.model)
    options = PruneOptions(**dict(data.base, **setting.options), calib=data.calib)
    pruned, report = prune_with(original, options)
    fidelity = measured_fidelity(original, pruned, FidelityData(data.held_out, held_out=True),
                                 data.base.get("batch_size", 8))
    return Outcome(setting, pruned.SerializeToString(), report.macs_after,
                   report.params_after, fidelity, report.input_shapes,
                   (report.macs_before, report.params_before), report.warnings)


def dense_outcome(data: SweepData, pruned: Outcome) -> Outcome:
    """The dense model as a row of the table (its cost as a pruned one reports it)."""
    exact = {"samples": pruned.fidelity["samples"], "held_out": True, "outputs": []}
    return Outcome(Setting("dense", "dense", {}), data.model, *pruned.dense,
                   exact, pruned.input_shapes)


def sweep(data: SweepData, settings: list[Setting], executor: Executor) -> list[Outcome]:
    """Every setting as a task, results in the grid's order."""
    return executor.map(run_setting, settings, data)


def time_outcomes(dense: Outcome, outcomes: list[Outcome], runs: int = 30,
                  provider: str = "CPUExecutionProvider", threads: int = 0) -> None:
    """Median latency (ms) of the dense model and every pruned one, timed in turns on
    this machine (with the shapes prune verified at)."""
    models = [onnx.load_from_string(o.model) for o in [dense, *outcomes]]
    shapes = {name: tuple(shape) for name, shape in dense.input_shapes.items()}
    feeds = sample_feeds(models[0], shapes or None)
    for outcome, seconds in zip([dense, *outcomes],
                                interleaved_medians(models, feeds, runs, provider, threads),
                                strict=True):
        outcome.latency_ms = seconds * 1000


def relative_error(outcome: Outcome) -> float:
    """Mean relative L2 error of the float outputs on the held-out samples."""
    outputs = outcome.fidelity["outputs"]
    return float(np.mean([o["relative_l2"] for o in outputs])) if outputs else 0.0


def pareto_front(points: list[tuple[float, ...]]) -> list[bool]:
    """Whether each point is on the Pareto front, every coordinate to be minimized: no
    other point is at most as large in every coordinate and smaller in one."""
    def dominated(p: tuple[float, ...]) -> bool:
        return any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p for q in points)

    return [not dominated(p) for p in points]


def stage_models(outcomes: list[Outcome], directory: str | os.PathLike,
                 outputs: Transaction) -> None:
    """Stage every pruned model as `<stem>.onnx` in a `files.Transaction`."""
    for outcome in outcomes:
        model_io.stage(onnx.load_from_string(outcome.model),
                       f"{directory}/{outcome.setting.stem}.onnx", outputs)
