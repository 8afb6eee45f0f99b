"""Verification of every sparsified model before it is returned: the pattern on
each targeted weight, the written-model invariants, and for sparse storage the
equality of the sparse file's outputs with its dense twin."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import ModelProto

from .. import datafiles
from ..errors import VerificationError, first_line
from ..shapes import sample_shapes
from ..targets.onnxruntime import serialized
from ..verify import (
    check_written,
    outputs_close,
    relative_error,
    run,
    run_source,
    sample_feeds,
)
from .layers import Layer, WeightStore, effective, find_layers, to_matrix
from .pattern import Pattern, violations
from .storage import densify


def check_pattern(model: ModelProto, targeted: list[Layer], pattern: Pattern) -> None:
    """Every targeted weight of `model` (dense storage) follows the pattern."""
    found = {(layer.node, layer.input_index): layer for layer in find_layers(model)}
    store = WeightStore(model)
    for target in targeted:
        layer = found.get((target.node, target.input_index))
        if layer is None or layer.weight is None:
            raise VerificationError(f"{target.node}: sparsified weight not found in the "
                                    "written model")
        broken = violations(to_matrix(effective(layer, store), layer.axis), pattern)
        if broken:
            unit = "groups" if pattern.structured else "rows"
            raise VerificationError(f"{target.node}: {broken} {unit} of weight {layer.weight!r}"
                                    f" break the {pattern.name} pattern")


def verify_written(written: ModelProto, original: ModelProto, targeted: list[Layer],
                   pattern: Pattern, input_shapes: dict[str, tuple[int, ...]] | None, seed: int
                   ) -> tuple[dict[str, float], list[str]]:
    """Check a model about to be written; returns the relative output error against
    the original on sample inputs and the list of checks passed."""
    feeds = sample_feeds(original, sample_shapes(original, input_shapes), seed)
    reference = run_source(original, feeds)
    twin = densify(written) if written.graph.sparse_initializer else written
    check_pattern(twin, targeted, pattern)
    got = check_written(twin, feeds, reference, original)
    checks = [f"{pattern.name} pattern on {len(targeted)} weights", "onnx.checker (full)",
              "strict shape inference", "onnxruntime run"]
    if written.graph.sparse_initializer:
        checks = [f"dense twin: {check}" for check in checks[1:]] + checks[:1]
        checks += _check_sparse_file(written, feeds, got)
    errors = {name: relative_error(value, got[name]) for name, value in reference.items()
              if np.issubdtype(value.dtype, np.floating)}
    return errors, checks


def _check_sparse_file(written: ModelProto, feeds, twin_outputs) -> list[str]:
    """The sparse file itself: the ONNX checker (whose full check has no shape
    inference for sparse initializers) and onnxruntime outputs equal to the twin's."""
    checks = []
    with serialized(written) as data:
        try:
            datafiles.check_serialized(written, data)
            checks.append("sparse file: onnx.checker")
        except Exception as exc:
            if not _narrow_indices(written):
                raise VerificationError(f"checker: {first_line(exc)}") from None
            checks.append(f"sparse file: onnx.checker fails ({first_line(exc)}); "
                          "onnxruntime reads int16 indices")
        try:
            outputs = run(data, feeds)
        except Exception as exc:
            raise VerificationError(f"onnxruntime cannot run the sparse file: "
                                    f"{first_line(exc)}") from None
    for name, value in twin_outputs.items():
        if np.issubdtype(value.dtype, np.floating) and not outputs_close(value, outputs[name],
                                                                         1e-6):
            raise VerificationError(f"sparse file output {name!r} differs from the dense "
                                    "model's")
    checks.append("sparse file: onnxruntime outputs equal the dense twin's")
    return checks


def _narrow_indices(model: ModelProto) -> bool:
    return all(sp.indices.data_type != onnx.TensorProto.INT64
               for sp in model.graph.sparse_initializer)
