"""Decisions and written models held fixed: plan files (as `--save-plan` writes them,
kept gzipped) and the SHA-256 of every written model, compared byte for byte with
fixtures kept in `tests/fixtures/stability/`. A change that moves any decision or any weight fails;
a deliberate change of behaviour rewrites them with ONNXPRUNE_WRITE_FIXTURES=1."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import onnx

from onnxprune.cli.common import json_text

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stability"
HASHES = FIXTURES / "models.json"


def _writing() -> bool:
    return os.environ.get("ONNXPRUNE_WRITE_FIXTURES") == "1"


def model_digest(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def assert_stable(case: str, plan_document: dict, model: onnx.ModelProto) -> None:
    """The plan file and the written model of `case` equal their fixtures."""
    plan_path = FIXTURES / f"{case}.plan.json.gz"
    text = json_text(plan_document)
    if _writing():
        FIXTURES.mkdir(parents=True, exist_ok=True)
        plan_path.write_bytes(gzip.compress(text.encode(), mtime=0))
        _record(case, model_digest(model))
        return
    assert plan_path.exists(), f"no fixture for {case} (ONNXPRUNE_WRITE_FIXTURES=1 writes it)"
    assert text == gzip.decompress(plan_path.read_bytes()).decode(), \
        f"{case}: the plan file changed"
    assert model_digest(model) == json.loads(HASHES.read_text())[case], \
        f"{case}: the written model changed"


def _record(case: str, digest: str) -> None:
    """Add one digest to the shared file (tests may run in any order)."""
    digests = json.loads(HASHES.read_text()) if HASHES.exists() else {}
    digests[case] = digest
    HASHES.write_text(json.dumps(dict(sorted(digests.items())), indent=1) + "\n")
