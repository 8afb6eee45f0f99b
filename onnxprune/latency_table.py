"""Latency tables: name-free descriptions of compute layers (the ops whose family has a
`timed` hook, `ops/`), the one-layer models they are timed as, and the on-disk cache
of seconds per layer configuration (`$ONNXPRUNE_CACHE_DIR`, default
`~/.cache/onnxprune`, /latency/: one JSON file per model fingerprint, provider,
threads and input shapes)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import ModelProto, helper, numpy_helper

from .bench import Timer
from .cost import ShapeOf
from .files import write_atomic
from .ops import family_for


def cache_dir() -> Path:
    return Path(os.environ.get("ONNXPRUNE_CACHE_DIR") or Path.home() / ".cache" / "onnxprune")


def layer_config(node: gs.Node, shape_of: ShapeOf) -> str | None:
    """A name-free description of a compute layer (op, attributes, input shapes,
    which inputs are constant), as JSON; None for other nodes or unknown shapes."""
    family = family_for(node)
    if family is None or family.timed is None or not family.timed(node):
        return None
    inputs = []
    for tensor in node.inputs:
        shape = shape_of(tensor.name) if tensor.name else None
        if tensor.name and shape is None:
            return None
        inputs.append([isinstance(tensor, gs.Constant), list(shape) if shape else None])
    attrs = {k: _plain(v) for k, v in sorted(node.attrs.items())}
    return json.dumps({"op": node.op, "attrs": attrs, "inputs": inputs}, sort_keys=True)


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def layer_model(config: str, opset: int) -> ModelProto:
    """A one-node float32 model for a layer configuration (seeded random weights)."""
    spec = json.loads(config)
    rng = np.random.default_rng(0)
    names, graph_inputs, weights = [], [], []
    for k, (constant, shape) in enumerate(spec["inputs"]):
        name = f"i{k}" if shape is not None else ""
        names.append(name)
        if shape is None:
            continue
        if constant:
            values = (rng.standard_normal(shape) * 0.05).astype(np.float32)
            weights.append(numpy_helper.from_array(values, name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                              shape))
    node = helper.make_node(spec["op"], names, ["y"], **spec["attrs"])
    graph = helper.make_graph([node], "layer", graph_inputs, [
        helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@dataclass
class LatencyTable:
    """Seconds per layer configuration, for one model, provider, threads and shapes."""

    key: dict
    entries: dict[str, float] = field(default_factory=dict)
    measured: int = 0

    @property
    def path(self) -> Path:
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()
        return cache_dir() / "latency" / f"{digest[:32]}.json"

    @classmethod
    def load(cls, key: dict) -> LatencyTable:
        """The cached table for `key`, or an empty one (an unreadable cache is ignored)."""
        table = cls(key)
        try:
            data = json.loads(table.path.read_text())
            if data.get("key") == json.loads(json.dumps(key)):
                table.entries = {k: float(v) for k, v in data["entries"].items()}
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            pass
        return table

    def save(self) -> None:
        """Write the table atomically; a cache that cannot be written is skipped."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(json.dumps({"key": self.key, "entries": self.entries}), self.path)
        except OSError:
            pass

    def seconds(self, config: str, opset: int, timer: Timer) -> float:
        """Seconds of one layer configuration, timed by `timer` on a miss."""
        if config not in self.entries:
            self.entries[config] = timer.layer(layer_model(config, opset))
            self.measured += 1
        return self.entries[config]
