"""Structure-only model files: graphs whose large weights were stripped, keeping
their shapes and value statistics (`doc_string` JSON: mean, std, min, max).
`fill` gives them seeded random weights of the right shapes so they can run."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import ModelProto, numpy_helper

MARK = "onnxprune.structure_only"


def is_structure_only(model: ModelProto) -> bool:
    """Whether the model carries the structure-only mark."""
    return any(p.key == MARK and p.value == "1" for p in model.metadata_props)


def _stripped(tensor: onnx.TensorProto) -> bool:
    return bool(tensor.doc_string.startswith("{")) and not tensor.raw_data and not any(
        (tensor.float_data, tensor.double_data, tensor.int32_data, tensor.int64_data))


def fill(model: ModelProto, seed: int = 0) -> ModelProto:
    """A copy with every stripped initializer refilled: normal(mean, std) clipped to
    [min, max], seeded per tensor name so the result does not depend on order."""
    filled = ModelProto()
    filled.CopyFrom(model)
    for tensor in filled.graph.initializer:
        if not _stripped(tensor):
            continue
        stats = json.loads(tensor.doc_string)
        rng = np.random.default_rng([seed, _stable_hash(tensor.name)])
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        values = rng.normal(stats["mean"], max(stats["std"], 0.0), tuple(tensor.dims))
        values = np.clip(values, stats["min"], stats["max"]).astype(dtype)
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    kept = [p for p in filled.metadata_props if p.key != MARK]
    del filled.metadata_props[:]
    filled.metadata_props.extend(kept)
    return filled


def _stable_hash(text: str) -> int:
    value = 0
    for char in text.encode():
        value = (value * 131 + char) % (2**31 - 1)
    return value
