"""Decisions and written models held fixed: plan files (as `--save-plan` writes them,
kept gzipped) and the written models, compared with fixtures kept in
`tests/fixtures/stability/`. A change that moves any decision or any weight fails;
a deliberate change of behaviour rewrites them with ONNXPRUNE_WRITE_FIXTURES=1.

Cases whose weights come out of floating-point solves on calibration data (`solved`:
least-squares refit, SparseGPT) depend on how onnxruntime's and BLAS's kernels for the
CPU at hand round, so they are held to what those kernels cannot move: the graph, every
shape and non-float constant, the units removed and each layer's count of zeros exactly;
every float weight tensor's sum and absolute sum within `WEIGHT_TOLERANCE` of its
scale; and SparseGPT's zero masks, which drift from layer to layer, agreeing with the
fixture's on `MASK_AGREEMENT` of their entries. Every other case is held byte for byte."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.cli.common import json_text

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stability"
HASHES = FIXTURES / "models.json"
# Across BLAS kernels on one machine: refit weights move 7e-5 of their scale, SparseGPT's
# 1.3 %, and up to 10 % of a late layer's mask entries (measured; see the module).
WEIGHT_TOLERANCE = {"refit": 1e-3, "sparsegpt": 0.05}
MASK_AGREEMENT = 0.75


def _writing() -> bool:
    return os.environ.get("ONNXPRUNE_WRITE_FIXTURES") == "1"


def model_digest(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def model_summary(model: onnx.ModelProto) -> dict:
    """The digest of the model with its float weights emptied, and per float weight its
    sum, absolute sum and count of zeros."""
    bare, weights = onnx.ModelProto(), {}
    bare.CopyFrom(model)
    for tensor in bare.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.dtype.kind == "f":
            wide = values.astype(np.float64)
            weights[tensor.name] = [float(wide.sum()), float(np.abs(wide).sum()),
                                    int(np.count_nonzero(wide == 0))]
            tensor.ClearField("raw_data")
            tensor.ClearField("float_data")
    return {"structure": model_digest(bare), "weights": weights}


def assert_stable(case: str, plan_document: dict, model: onnx.ModelProto,
                  solved: str | None = None) -> None:
    """The plan file and the written model of `case` equal their fixtures (`solved`:
    "refit" or "sparsegpt", held as the module says)."""
    plan_path = FIXTURES / f"{case}.plan.json.gz"
    text = json_text(plan_document)
    held = model_summary(model) if solved else model_digest(model)
    if _writing():
        FIXTURES.mkdir(parents=True, exist_ok=True)
        plan_path.write_bytes(gzip.compress(text.encode(), mtime=0))
        _record(case, held)
        return
    assert plan_path.exists(), f"no fixture for {case} (ONNXPRUNE_WRITE_FIXTURES=1 writes it)"
    fixture = gzip.decompress(plan_path.read_bytes()).decode()
    recorded = json.loads(HASHES.read_text())[case]
    if not solved:
        assert text == fixture, f"{case}: the plan file changed"
        assert held == recorded, f"{case}: the written model changed"
        return
    _assert_plans_close(case, json.loads(text), json.loads(fixture))
    _assert_weights_close(case, held, recorded, WEIGHT_TOLERANCE[solved])


def _assert_plans_close(case: str, plan: dict, fixture: dict) -> None:
    """Equal but for the zero masks, which count the same zeros and mostly agree."""
    masks = [(a.pop("zeros"), b.pop("zeros"), int(np.prod(a["matrix"])))
             for a, b in zip(plan.get("layers", []), fixture.get("layers", []), strict=False)
             if "zeros" in a and "zeros" in b]
    assert json_text(plan) == json_text(fixture), f"{case}: the plan file changed"
    for mine, theirs, size in masks:
        a, b = _bits(mine, size), _bits(theirs, size)
        assert a.sum() == b.sum() and np.mean(a == b) >= MASK_AGREEMENT, \
            f"{case}: the plan file changed"


def _bits(text: str, size: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:size]


def _assert_weights_close(case: str, held: dict, recorded: dict, tolerance: float) -> None:
    message = f"{case}: the written model changed"
    assert held["structure"] == recorded["structure"], message
    assert held["weights"].keys() == recorded["weights"].keys(), message
    for name, (total, size, zeros) in held["weights"].items():
        want_total, want_size, want_zeros = recorded["weights"][name]
        scale = max(want_size, 1e-12)
        assert zeros == want_zeros and abs(total - want_total) <= tolerance * scale and \
            abs(size - want_size) <= tolerance * scale, f"{message} ({name})"


def _record(case: str, held: str | dict) -> None:
    """Add one case to the shared file (tests may run in any order)."""
    digests = json.loads(HASHES.read_text()) if HASHES.exists() else {}
    digests[case] = held
    HASHES.write_text(json.dumps(dict(sorted(digests.items())), indent=1) + "\n")
