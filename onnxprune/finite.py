"""No NaN or infinity in a written model: the checks `verify.check_written` runs on
every model before it is written (weights, and outputs on the sample inputs)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import ModelProto

from . import external
from .errors import ModelError, VerificationError


def nonfinite_weights(model: ModelProto) -> dict[str, str]:
    """The floating-point weights (initializers, sparse initializers, Constant nodes)
    that hold NaN or infinity: name → "NaN" or "infinity"."""
    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [(t.values.name, t.values) for t in model.graph.sparse_initializer]
    tensors += [(n.output[0], a.t) for n in model.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    found = {}
    for name, tensor in tensors:
        if tensor.data_type in FLOAT_TYPES:
            what = _nonfinite(tensor)
            if what:
                found[name] = what
    return found


FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16}


def _nonfinite(tensor: onnx.TensorProto) -> str | None:
    if tensor.data_type == onnx.TensorProto.FLOAT and tensor.raw_data:
        values = np.frombuffer(tensor.raw_data, np.float32)  # no copy of large weights
    else:
        values = external.array(tensor)  # mapped, when external
        if values.dtype.kind != "f":  # bfloat16 and other types numpy does not know
            values = values.astype(np.float32)
    if np.isfinite(values).all():
        return None
    return "NaN" if np.isnan(values).any() else "infinity"


def check_finite_weights(model: ModelProto, source: ModelProto | None) -> None:
    """NaN is never written (a source that holds it is a broken model); infinity only
    where the source's weight of that name holds it too (attention masks)."""
    bad = nonfinite_weights(model)
    if not bad:
        return
    given = nonfinite_weights(source) if source is not None else {}
    for name, what in bad.items():
        if given.get(name) == "NaN":
            raise ModelError(f"weight {name!r} of the model holds NaN; nothing was written")
        if what == "NaN" or name not in given:
            raise VerificationError(f"weight {name!r} holds {what}")


def check_finite_outputs(outputs: dict[str, np.ndarray],
                          reference: dict[str, np.ndarray]) -> None:
    """An output may hold NaN or infinity only where `reference` (the outputs it is
    compared with, by name) is not finite either."""
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.dtype.kind not in "fc" or np.isfinite(value).all():
            continue
        expected = reference.get(name)
        if expected is None or np.isfinite(np.asarray(expected)).all():
            raise VerificationError(f"output {name!r} holds NaN or infinity on the sample "
                                    "inputs")
