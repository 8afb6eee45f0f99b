"""Sparsify plan files: which weights of which layers were zeroed.

Layers are named structurally — op, weight shape, grouped axis and rank among
equals in graph order — so a plan replays on another export of the same network
and is refused on another network (`__init__.py` has the shared envelope). The masks
are the decisions; SparseGPT's updates of the kept weights are not part of them, so
a replay zeroes the same weights and leaves the others as the model has them.
"""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
from onnx import ModelProto

from ..errors import InputError
from ..shapes import input_specs
from ..sparsity.layers import (
    Layer,
    WeightStore,
    effective,
    from_matrix,
    store_effective,
    to_matrix,
)
from . import document as envelope

KIND = "sparsify"


def layer_keys(layers: list[Layer]) -> list[str]:
    """One structural key per layer, in order."""
    seen: dict[str, int] = {}
    keys = []
    for layer in layers:
        signature = f"{layer.op}:{list(layer.shape)}@{layer.axis}"
        keys.append(f"{signature}#{seen.get(signature, 0)}")
        seen[signature] = seen.get(signature, 0) + 1
    return keys


def fingerprint(layers: list[Layer], proto: ModelProto) -> str:
    inputs = [(len(s.type.tensor_type.shape.dim), s.type.tensor_type.elem_type)
              for s in input_specs(proto)]
    text = json.dumps([layer_keys(layers), inputs])
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def document(layers: list[Layer], chosen: list[Layer], work: ModelProto, original: ModelProto,
             options: dict) -> dict:
    """The plan file of a sparsify run: options, fingerprint, zero mask per layer."""
    store, keys = WeightStore(work), dict(zip(map(id, layers), layer_keys(layers),
                                              strict=True))
    entries = []
    for layer in chosen:
        zeros = to_matrix(effective(layer, store), layer.axis) == 0
        entries.append({"key": keys[id(layer)], "node": layer.node,
                        "matrix": list(zeros.shape), "zeros": _pack(zeros)})
    model = {"fingerprint": fingerprint(layers, original), "layers": len(layers)}
    return envelope(KIND, model, options, ("layers", entries))


def replay(document: dict, layers: list[Layer], work: ModelProto) -> list[Layer]:
    """Zero the plan's weights in `work`; the layers it touched. Refused when the
    model is another network."""
    expected, actual = document["model"]["fingerprint"], fingerprint(layers, work)
    if expected != actual:
        raise InputError("the plan does not match this model: it was made for a network "
                         f"with fingerprint {expected[:19]}…, this one has {actual[:19]}… "
                         "(different layers, weight shapes or inputs)")
    by_key = dict(zip(layer_keys(layers), layers, strict=True))
    store, chosen = WeightStore(work), []
    for entry in document["layers"]:
        layer = by_key.get(entry["key"])
        if layer is None or layer.weight is None or layer.axis is None:
            raise InputError(f"the plan's layer {entry['key']} has no match in this model")
        values = effective(layer, store)
        matrix = to_matrix(values, layer.axis)
        if tuple(entry["matrix"]) != matrix.shape:
            raise InputError(f"the plan's layer {entry['key']} has a {entry['matrix']} mask; "
                             f"this model's weight is {list(matrix.shape)}")
        zeros = _unpack(entry["zeros"], matrix.shape)
        store_effective(layer, store, from_matrix(np.where(zeros, 0, matrix).astype(
            matrix.dtype), values.shape, layer.axis))
        chosen.append(layer)
    return chosen


def check(document: dict) -> None:
    """A sparsify document's layers: a key, a matrix shape and a mask that fits it."""
    entries = document.get("layers")
    if not isinstance(entries, list) or not all(_entry_ok(e) for e in entries):
        raise InputError("the plan's layers are malformed: each needs a key, a matrix shape "
                         "and a zero mask of that size")


def _entry_ok(entry) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        return False
    shape = entry.get("matrix")
    if not isinstance(shape, list) or len(shape) != 2 or not all(
            isinstance(d, int) and d > 0 for d in shape):
        return False
    try:
        _unpack(entry.get("zeros"), tuple(shape))
    except (TypeError, ValueError):
        return False
    return True


def _pack(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.ravel())).decode()


def _unpack(text: str, shape: tuple[int, ...]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text, validate=True), np.uint8))
    size = int(np.prod(shape))
    if len(bits) < size or len(bits) - size >= 8:
        raise ValueError("mask size does not match the matrix")
    return bits[:size].astype(bool).reshape(shape)

