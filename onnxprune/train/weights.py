"""The student's weights through fine-tuning: which train, the masks that keep every
zero, and the model written back (same graph, names and dtypes; new values only).

Trainable: the translation's parameters that are float initializers of the graph
(weights held by Constant nodes and quantized weights stay as they are). They train
as float32 copies and are cast to their own dtype in the forward pass, so float16
weights stay float16. A weight holding zeros gets a mask; after every update the
masked entries are set to zero again, and the written weight holds the input's exact
value wherever the mask is off."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import ModelProto, numpy_helper

from ..errors import VerificationError


@dataclass(frozen=True)
class Weights:
    """Trainable float32 values, their stored dtypes, masks of the non-zeros (for the
    weights that hold zeros) and the fixed parameters."""

    trainable: dict[str, np.ndarray]
    dtypes: dict[str, np.dtype]
    masks: dict[str, np.ndarray]
    frozen: dict[str, np.ndarray]


def split_weights(model: ModelProto, params: dict[str, np.ndarray]) -> Weights:
    """Trainable float initializers and the rest of the translation's parameters."""
    stored = {t.name for t in model.graph.initializer}
    names = [n for n, v in params.items() if n in stored and v.dtype.kind == "f"]
    trainable = {n: np.asarray(params[n], np.float32) for n in names}
    masks = {n: params[n] != 0 for n in names if not np.all(params[n] != 0)}
    frozen = {n: v for n, v in params.items() if n not in trainable}
    return Weights(trainable, {n: params[n].dtype for n in names}, masks, frozen)


def written(student: ModelProto, weights: Weights, values: dict[str, np.ndarray]
            ) -> ModelProto:
    """The student with new initializer values, each in its stored dtype, with the
    input's exact values where a mask is off."""
    result = ModelProto()
    result.CopyFrom(student)
    for tensor in result.graph.initializer:
        if tensor.name not in values:
            continue
        old = numpy_helper.to_array(tensor)
        new = np.asarray(values[tensor.name]).astype(weights.dtypes[tensor.name])
        if tensor.name in weights.masks:
            new = np.where(weights.masks[tensor.name], new, old)
        if np.array_equal(new, old):
            continue
        replacement = numpy_helper.from_array(new.reshape(old.shape), tensor.name)
        replacement.doc_string = tensor.doc_string
        tensor.CopyFrom(replacement)
    return result


def check_kept(student: ModelProto, tuned: ModelProto) -> list[str]:
    """The tuned model has the student's graph (nodes, inputs, outputs, initializer
    names, dtypes and shapes) and every zero of its initializers; the checks passed."""
    if [n.SerializeToString() for n in student.graph.node] != \
            [n.SerializeToString() for n in tuned.graph.node] or \
            student.graph.input != tuned.graph.input or \
            student.graph.output != tuned.graph.output:
        raise VerificationError("fine-tuning changed the graph")
    zeros = 0
    for before, after in zip(student.graph.initializer, tuned.graph.initializer, strict=True):
        if (before.name, before.data_type, list(before.dims)) != \
                (after.name, after.data_type, list(after.dims)):
            raise VerificationError(f"fine-tuning changed initializer {before.name!r}")
        old, new = numpy_helper.to_array(before), numpy_helper.to_array(after)
        if old.dtype.kind == "f":
            lost = int(np.count_nonzero((old == 0) & (new != 0)))
            if lost:
                raise VerificationError(f"fine-tuning lost {lost} zeros of {before.name!r}")
            zeros += int(np.count_nonzero(old == 0))
        elif not np.array_equal(old, new):
            raise VerificationError(f"fine-tuning changed non-float {before.name!r}")
    return ["graph, names, dtypes and shapes unchanged", f"all {zeros} zero weights kept"]
