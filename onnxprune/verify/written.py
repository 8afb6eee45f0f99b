"""The invariants of every model written: full checker, strict shape inference, finite
weights, and an onnxruntime run on sample inputs with finite outputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import ModelProto

from .. import datafiles
from ..errors import VerificationError, first_line
from ..finite import check_finite_outputs, check_finite_weights
from ..model import weightless
from ..targets.onnxruntime import serialized
from .runs import run


def check_written(model: ModelProto, feeds: dict[str, np.ndarray],
                  reference: dict[str, np.ndarray] | None = None,
                  source: ModelProto | None = None) -> dict[str, np.ndarray]:
    """Every invariant of a model we write; returns its outputs on `feeds`.
    No NaN or infinity: in a weight, unless `source` (the model it was made from)
    holds them in the weight of that name; in an output, unless it is not finite in
    `reference` (the outputs it is compared with) either."""
    with serialized(model) as data:
        try:
            datafiles.check_serialized(model, data, full_check=True)
        except Exception as exc:
            raise VerificationError(f"checker: {first_line(exc)}") from None
        _check_shapes(model, source)
        check_finite_weights(model, source)
        try:
            outputs = run(data, feeds)
        except Exception as exc:
            raise VerificationError(f"onnxruntime: {first_line(exc)}") from None
    check_finite_outputs(outputs, reference or {})
    return outputs


def _check_shapes(model: ModelProto, source: ModelProto | None) -> None:
    """Strict shape inference, unless the source model fails it too (an op whose output
    type onnx cannot infer, such as GroupNormalization-21): then the checker and the
    onnxruntime run are the shape checks."""
    try:
        onnx.shape_inference.infer_shapes(weightless(model), strict_mode=True, data_prop=True)
    except Exception as exc:
        if source is None or _infers_strictly(source):
            raise VerificationError(f"shape inference: {first_line(exc)}") from None


def _infers_strictly(model: ModelProto) -> bool:
    try:
        onnx.shape_inference.infer_shapes(weightless(model), strict_mode=True, data_prop=True)
    except Exception:
        return False
    return True
