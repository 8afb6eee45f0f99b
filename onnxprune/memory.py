"""What a calibration level may hold (`--max-memory`): sizes as given on the command
line, and the bytes the statistics of a layer take.

Layer-wise calibration (refit, Wanda, SparseGPT) walks the model one level at a time;
a level holds, per layer, its statistics (float64) and a batch of its inputs. The
statistics alone are known from the weight shapes before any work, so a cap that
cannot hold the largest layer's is refused at once; activations add to that once a
level's batches are measured.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto

from .errors import InputError

UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
         "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
         "tib": 2**40}
SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$")
# Bytes per entry of what a layer holds, by method, all float64: (n × n, r × n, m × r,
# n), with r a layer's reduction length, n = r + 1 and m its outputs. lsq: the Gram
# matrix of its kept inputs, their cross products with the dense inputs, and its dense
# weights; sparsegpt: the Hessian and the cross Hessian, and its weights; wanda: the
# squared column norms.
STATISTICS = {"lsq": (8, 8, 8, 0), "sparsegpt": (16, 0, 8, 0), "wanda": (0, 0, 0, 8)}


def parse_size(text: str, flag: str = "--max-memory") -> int:
    """Bytes from a size such as `4GB`, `512MiB` or `1.5g` (decimal units, binary with
    `i`); refused unless positive."""
    found = SIZE.match(str(text).lower())
    if not found or found.group(2) not in UNITS:
        raise InputError(f"{flag}: not a size: {text!r} (for example 4GB or 512MiB)")
    value = int(float(found.group(1)) * UNITS[found.group(2)])
    if value < 1:
        raise InputError(f"{flag} must be at least 1 byte, got {text!r}")
    return value


def check_max_memory(cap: int | None) -> None:
    """Refuse a memory cap that is not a positive number of bytes."""
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise InputError(f"--max-memory must be a positive number of bytes, got {cap!r}")


def human(size: float) -> str:
    """A byte count as GB, MB or kB (decimal)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"


@dataclass(frozen=True)
class Need:
    """What one layer's calibration holds: its name and bytes."""

    layer: str
    statistics: int
    activations: int = 0

    @property
    def total(self) -> int:
        return self.statistics + self.activations


def layer_need(layer: str, outputs: int, reduction: int, method: str,
               rows: int = 0) -> Need:
    """The bytes a layer's statistics take under a calibration method, plus `rows`
    float32 input rows (a batch of the dense and the current model's inputs)."""
    square, cross, weights, vector = STATISTICS[method]
    n = reduction + 1
    statistics = square * n * n + cross * reduction * n + weights * outputs * reduction + \
        vector * n
    return Need(layer, statistics, 2 * 4 * rows * reduction)


def shape_need(layer: str, shape: Sequence[int], axis: int, method: str) -> Need:
    """What a layer holds under `method`, from its weight's shape and reduction axis."""
    reduction = int(shape[axis])
    return layer_need(layer, int(np.prod(shape)) // max(reduction, 1), reduction, method)


def level_need(needs: list[Need]) -> int:
    """The bytes a level holds: every layer of it at once."""
    return sum(need.total for need in needs)


def check_level(needs: list[Need], cap: int | None, what: str = "a calibration level"
                ) -> None:
    """Refuse a level that needs more than `cap` bytes (None: no cap), naming its
    largest layer."""
    total = level_need(needs)
    if cap is None or total <= cap:
        return
    largest = max(needs, key=lambda need: need.total)
    part = f"layer {largest.layer}" if largest.layer else "its calibration inputs"
    raise InputError(f"{what} needs {human(total)} ({part}: "
                     f"{human(largest.total)}), more than --max-memory {human(cap)}; "
                     "raise --max-memory or give fewer calibration samples")


def level_check(needs: list[list[Need]], cap: int | None, what: str
                ) -> Callable[[int, int], None] | None:
    """Refuse at once a level (of `needs`, by level) whose statistics alone pass `cap`
    (None: no cap, no check); the check of level `number` holding `held` more bytes of
    inputs once they are measured."""
    if cap is None:
        return None
    for number, level in enumerate(needs):
        check_level(level, cap, f"level {number + 1} of the {what}")

    def check(number: int, held: int) -> None:
        check_level(needs[number] + [Need("", 0, held)], cap,
                    f"level {number + 1} of the {what}")

    return check


def largest_layer(model: ModelProto, method: str) -> Need | None:
    """The layer whose statistics under `method` are largest (from weight shapes
    alone), or None when the model has no layer to calibrate."""
    from .sparsity.layers import find_layers

    needs = [layer_need(layer.node, layer.outputs, layer.reduction, method)
             for layer in find_layers(model) if layer.reduction]
    return max(needs, key=lambda need: need.total, default=None)


def check_model(model: ModelProto, method: str | None, cap: int | None) -> None:
    """Before any work: refuse a cap that cannot hold even the largest layer's
    statistics under `method` (None: no layer-wise calibration runs)."""
    if cap is None or method not in STATISTICS:
        return
    need = largest_layer(model, method)
    if need is not None:
        check_level([need], cap, f"{method} calibration of one layer")
