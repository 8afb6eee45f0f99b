"""sparsify() in rounds (`rounds` > 1, unstructured only): the sparsity rises over the
rounds on the cubic schedule (`schedule`); every round scores the model sparsified so
far (its zeros score lowest under magnitude and wanda, so a round adds to them),
zeroes each chosen layer to its share of the final sparsity (sparsegpt also updates
the weights it keeps, and may revive a zero it does not choose again) and, but for the
last, hands the model to `between_rounds` (fine-tuning, when asked), whose result the
next round starts from. Only the last round stores (fp16, sparse storage) what it
wrote; it is verified as a one-step run is, and its plan file's masks are those of the
final model."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import ModelProto

from .. import model as model_io
from ..schedule import check_sparsify_rounds, schedule
from ..shapes import sample_shapes
from ..verify import relative_error, run_source, sample_feeds
from .pattern import parse_pattern
from .pipeline import SparsifyReport, sparsify
from .storage import densify

if TYPE_CHECKING:
    from ..analysis import ModelLike

# Options only the last round applies: they change how weights are stored.
STORED = {"fp16": False, "storage": "dense", "sparse_indices": "int64"}


def sparsify_in_rounds(model: ModelLike, pattern: str, rounds: int,
                       between_rounds: Callable[[ModelProto, int], ModelProto] | None,
                       sparsity: float | None = None, **keywords: Any
                       ) -> tuple[ModelProto, SparsifyReport]:
    """sparsify() in `rounds` rounds (see the module); the report's output error and
    rows are against the original model on the sample inputs."""
    spec = parse_pattern(pattern, sparsity)
    check_sparsify_rounds(rounds, spec.structured, keywords.get("plan") is not None)
    start = time.perf_counter()
    original = model_io.load(model)
    feeds = sample_feeds(original, sample_shapes(original, keywords.get("input_shapes")),
                         keywords.get("seed", 0))
    dense = run_source(original, feeds)
    current, rows = original, []
    levels = schedule(spec.sparsity, rounds)
    for number, level in enumerate(levels, 1):
        last = number == rounds
        current, report = sparsify(current, pattern, sparsity=level,
                                   **(keywords if last else dict(keywords, **STORED)))
        rows.append(_row(number, level, report, _errors(dense, current, feeds)))
        if not last and between_rounds is not None:
            current = between_rounds(current, number)
            rows[-1]["output_error_after"] = _errors(dense, current, feeds)
    report.rounds, report.output_error = rows, rows[-1]["output_error"]
    report.seconds = time.perf_counter() - start
    return current, report


def _errors(dense: dict[str, np.ndarray], model: ModelProto, feeds: dict[str, np.ndarray]
            ) -> dict[str, float]:
    """Relative L2 error of each float output against the original's."""
    got = run_source(densify(model) if model.graph.sparse_initializer else model, feeds)
    return {name: relative_error(value, got[name]) for name, value in dense.items()
            if np.issubdtype(value.dtype, np.floating)}


def _row(number: int, level: float, report: SparsifyReport, errors: dict[str, float]
         ) -> dict:
    """A round's report row: the sparsity it aimed at and reached over the layers it
    sparsified, and its output error."""
    sizes = [int(np.prod(layer.shape)) for layer in report.sparsified]
    zeros = sum(size * (layer.zeros or 0.0) for size, layer in zip(sizes, report.sparsified,
                                                                   strict=True))
    return {"round": number, "sparsity": level, "reached": zeros / max(sum(sizes), 1),
            "layers": len(sizes), "output_error": errors}
