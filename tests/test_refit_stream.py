"""The least-squares refit streams: a layer's weights are read when its level is solved
(none of a later level's before), new values keep the weight dtype and, for a model with
external data, stay in the scratch file; `max_memory` caps what a level holds."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from onnx_graphsurgeon.ir.tensor import LazyValues
from test_external import HIDDEN, mlp, write_external

import onnxprune.layerwise as layerwise
from onnxprune.analysis import analyze
from onnxprune.errors import InputError
from onnxprune.memory import human, shape_need
from onnxprune.refit import refit_layerwise


def calibration(count: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [{"x": rng.standard_normal((2, 8, HIDDEN)).astype(np.float32)}
            for _ in range(count)]


def cut(model):
    """The analysis of `model` and 8 units removed from every prunable group."""
    analysis = analyze(model, calib=calibration())
    return analysis, {g.id: np.arange(8) for g in analysis.dep.groups if g.prunable}


def refit(analysis, removed, **options) -> dict[str, np.ndarray]:
    """The new values of the refit of `analysis` with `removed` units."""
    return refit_layerwise(analysis.dep, removed, analysis.proto, analysis.stream,
                           **options)[0]


class Recorded(LazyValues):
    """Lazy values that log each time they are read."""

    def __init__(self, tensor, log: list) -> None:
        super().__init__(tensor)
        self.log = log

    def load(self) -> np.ndarray:
        self.log.append(("read", self.tensor.name))
        return super().load()


def test_each_layer_is_read_once_when_its_level_is_solved(monkeypatch):
    plain = refit(*cut(mlp(blocks=3)))
    analysis, removed = cut(mlp(blocks=3))
    log: list = []
    stored = {t.name: t for t in analysis.proto.graph.initializer}
    for name in (f"{kind}{b}" for kind in ("up", "down") for b in range(3)):
        analysis.dep.view.tensors[name]._values = Recorded(stored[name], log)
    measure = layerwise.measure

    def logged(level, *args, **kwargs):
        log.append(("level", {layer.weight.tensor for layer in level}))
        return measure(level, *args, **kwargs)

    monkeypatch.setattr(layerwise, "measure", logged)
    values = refit(analysis, removed)
    reads: list[list[str]] = [[]]  # weights read before the first level, then per level
    for kind, entry in log:
        if kind == "level":
            reads.append([])
        else:
            reads[-1].append(entry)
    assert [entry for kind, entry in log if kind == "level"] == [
        {"down0"}, {"down1"}, {"down2"}]
    assert reads == [[], ["down0"], ["down1"], ["down2"]]
    assert values.keys() == plain.keys() == {"down0", "down1", "down2"}
    for name, value in plain.items():
        assert np.array_equal(values[name], value)


def test_new_values_keep_the_weight_dtype_and_stay_on_disk_for_external_data(tmp_path):
    path = write_external(mlp(), tmp_path / "m.onnx")
    on_disk, in_memory = refit(*cut(str(path))), refit(*cut(mlp()))
    assert on_disk.keys() == in_memory.keys() == {"down0", "down1"}
    for name, value in in_memory.items():
        assert value.dtype == np.float32 and on_disk[name].dtype == np.float32
        assert isinstance(on_disk[name], np.memmap) and not isinstance(value, np.memmap)
        assert np.array_equal(on_disk[name], value)


def test_max_memory_refuses_a_level_whose_inputs_do_not_fit():
    analysis, removed = cut(mlp())
    statistics = shape_need("down0", (128, HIDDEN), 0, "lsq").statistics
    inputs = 3 * 2 * 8 * 128 * 4  # the dense inputs of down0 over every batch
    with pytest.raises(InputError, match=f"level 1 of the least-squares refit needs "
                                         f"{human(statistics)} .*--max-memory"):
        refit(analysis, removed, max_memory=statistics - 1)  # refused before any run
    for cap in (statistics + 1, statistics + inputs - 1):
        with pytest.raises(InputError, match=f"level 1 of the least-squares refit needs "
                                             f"{human(statistics + inputs)} .*--max-memory"):
            refit(analysis, removed, max_memory=cap)
    capped = refit(analysis, removed, max_memory=statistics + inputs)
    free = refit(analysis, removed)
    assert capped.keys() == free.keys()
    assert all(np.array_equal(capped[name], free[name]) for name in free)


def test_a_level_that_does_not_fit_is_a_one_line_error_and_writes_nothing(tmp_path):
    write_external(mlp(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.ones((4, 8, HIDDEN), np.float32))
    cap = shape_need("down0", (128, HIDDEN), 0, "lsq").statistics + 1  # one layer fits
    result = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(tmp_path / "m.onnx"),
                             "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5", "--calib",
                             str(tmp_path / "calib.npz"), "--max-memory", str(cap)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "level 1 of the least-squares refit needs" in lines[0]
    assert "--max-memory" in lines[0] and not (tmp_path / "o.onnx").exists()
