"""The shape prober: one probe model per model, one onnxruntime session per run, let go
after it (a probe session holds the model's generated weights in its memory arena)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import onnx

import onnxprune.shapes as shapes
from onnxprune.shapes import Prober, sample_shapes

FIXTURE = Path(__file__).resolve().parent.parent / "models" / "llama_kv" / "model.onnx"


def test_each_run_gets_its_own_session_which_is_let_go(monkeypatch):
    model = onnx.load(str(FIXTURE))
    built, sessions = [], []
    original = shapes.probe_session

    def tracked(probe):
        session = original(probe)
        sessions.append(weakref.ref(session))
        return session

    def runnable():
        built.append(1)
        return model

    monkeypatch.setattr(shapes, "probe_session", tracked)
    prober = Prober(model, runnable)
    assert prober.names
    first = sample_shapes(model)
    other = {name: (2,) + shape[1:] for name, shape in first.items()}
    one, two = prober.shapes(first), prober.shapes(other)
    assert prober.shapes(first) is one  # cached per input shapes: no third run
    assert len(sessions) == 2 and len(built) == 1
    gc.collect()
    assert all(ref() is None for ref in sessions)
    assert set(one) == set(two) == set(prober.names)
    assert any(one[name] != two[name] for name in one)  # sizes that follow the batch
