"""The independent solves of one level of the layer-wise walk as executor tasks: the
level's statistics shared once, results in layer order, prune (lsq refit, sensitivity)
and sparsify (SparseGPT) routed through the executor, `--threads` bounding BLAS and
onnxruntime, and the same weights in-process and on a real Ray cluster."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import GraphBuilder
from ray_cluster import ray_cluster  # noqa: F401  (session fixture)

import onnxprune
from onnxprune import distributed
from onnxprune.cli import main
from onnxprune.errors import InputError
from onnxprune.layerwise import measure, solve_level
from onnxprune.moments import Moments
from onnxprune.sparsity.pattern import parse_pattern
from onnxprune.sparsity.weight_criteria import sparsegpt
from onnxprune.targets.onnxruntime import session
from onnxprune.threads import blas_threads, factor_threads, limited


class Recording(distributed.InProcess):
    """In-process, remembering what every map was given."""

    def __init__(self) -> None:
        self.maps: list[tuple[object, list]] = []

    def map(self, fn, items, shared=None, done=None):
        items = list(items)
        self.maps.append((shared, items))
        return super().map(fn, items, shared, done)


def branches(seed: int = 3):
    """x → three MatMul+Add+Relu branches of 32 (one level, one input), summed, then a
    MatMul to 8: two levels of layers, the first sharing its input's statistics."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", ["n", 16])
    heads = [b.op("Relu", [b.op("Add", [b.op("MatMul", [x, b.weight(16, 32)]),
                                        b.weight(32)])]) for _ in range(3)]
    total = b.op("Add", [b.op("Add", heads[:2]), heads[2]])
    return b.build(b.op("Add", [b.op("MatMul", [total, b.weight(32, 8)]), b.weight(8)]))


def calibration(seed: int = 0, batches: int = 3):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((32, 16)).astype(np.float32)} for _ in range(batches)]


def written(model) -> bytes:
    return model.SerializeToString(deterministic=True)


def sparse(model, runner=None, criterion="sparsegpt"):
    return written(onnxprune.sparsify(model, "2:4", criterion=criterion, all_layers=True,
                                      calib=calibration(), executor=runner)[0])


def pruned(model, runner=None, criterion="wanda"):
    return written(onnxprune.prune(model, 0.25, criterion=criterion, calib=calibration(),
                                   round_to=1, executor=runner)[0])


def test_a_level_shares_each_statistic_once_and_keeps_layer_order():
    first, second = Moments(count=1), Moments(count=2)
    level = ["a", "b", "c", "d"]
    stats = {id(layer): m for layer, m in zip(level, [first, second, first, second],
                                              strict=True)}
    runner = Recording()
    results = solve_level(runner, lambda scale, moments, task: (task, moments.count * scale),
                          level, stats, str.upper, 10)
    assert results == [("A", 10), ("B", 20), ("C", 10), ("D", 20)]
    ((shared, items),) = runner.maps
    assert shared[1] == 10 and [id(m) for m in shared[2]] == [id(first), id(second)]
    assert items == [(0, "A"), (1, "B"), (0, "C"), (1, "D")]


def test_prune_and_sparsify_run_each_levels_solves_as_tasks():
    model = branches()
    runner = Recording()
    assert sparse(model, runner) == sparse(model)
    assert [len(items) for _, items in runner.maps] == [3, 1]  # the levels' layers
    assert [len(shared[2]) for shared, _ in runner.maps] == [1, 1]  # one input each
    runner = Recording()
    assert pruned(model, runner) == pruned(model)
    assert [len(items) for _, items in runner.maps] == [1]  # the one refit consumer


def test_prune_by_sensitivity_measures_its_cuts_as_tasks():
    model = branches()
    runner = Recording()
    assert pruned(model, runner, "sensitivity") == pruned(model, None, "sensitivity")
    cuts = [items for _, items in runner.maps if len(items) > 1]
    assert len(cuts) == 1 and len(cuts[0]) == 3  # the one group (Add joins the branches)
    # at the default 3 ratios


def test_negative_threads_are_refused():
    with pytest.raises(InputError, match="--threads must be at least 0, got -1"):
        distributed.check_request(1, None, -1)


def test_threads_bound_blas_and_onnxruntime_and_are_restored():
    pytest.importorskip("threadpoolctl")
    before = blas_threads()
    model = branches()
    with limited(1, 1):
        assert blas_threads() == 1
        sess = session(model)
        assert sess.get_session_options().intra_op_num_threads == 1
    assert blas_threads() == before
    assert session(model).get_session_options().intra_op_num_threads == 0
    assert factor_threads(3) == 1 and factor_threads(0) == before


def test_explicit_threads_factor_the_same_whatever_their_count():
    """OpenBLAS rounds a factorization by its thread count; with --threads given the
    factorizations run on one thread, so every count gives the same weights."""
    pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(8)
    rows = rng.standard_normal((2048, 512))
    hessian = rows.T @ rows / len(rows)
    weights = rng.standard_normal((16, 512))  # float64: no rounding hides a difference
    found = []
    for threads in (1, 2):
        with limited(threads, factor_threads(threads)):
            found.append(sparsegpt(weights, hessian, parse_pattern("2:4", None)))
    assert np.array_equal(*found)
    assert np.count_nonzero(found[0]) == weights.size // 2


def test_explicit_threads_measure_the_same_statistics_whatever_their_count():
    """OpenBLAS rounds a Gram matrix (SYRK) by its thread count too; the walk's
    statistics products run on the run's fixed count, so every --threads gives the same
    Hessian."""
    pytest.importorskip("threadpoolctl")
    rows = np.random.default_rng(9).standard_normal((4096, 384)).astype(np.float32)

    def add(moments, layer, current, dense, number):
        moments.add_rows(current["x"], True)

    found = []
    for threads in (1, 2):
        with limited(threads, factor_threads(threads)):
            stats = measure([0], lambda: iter([{"x": rows}]), lambda feeds: feeds, None,
                            lambda layer: layer, add)
        found.append(next(iter(stats.values())).gram)
    assert np.array_equal(*found)


def test_sparsegpt_and_lsq_refit_on_ray_equal_in_process(ray_cluster):  # noqa: F811
    model = branches(5)
    with distributed.executor(address=ray_cluster) as on_ray:
        assert sparse(model, on_ray) == sparse(model)
        assert pruned(model, on_ray) == pruned(model)
    assert on_ray.stats.tasks == 3 + 1 + 1  # two sparsify levels, one refit level
    assert 0 < len(on_ray.stats.fetches) < on_ray.stats.tasks  # a level's 3 layers share


def test_cli_on_ray_writes_the_bytes_of_an_in_process_run(tmp_path, ray_cluster):  # noqa: F811
    model, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    model.write_bytes(written(branches(6)))
    np.savez(calib, x=np.concatenate([feeds["x"] for feeds in calibration(1)]))
    runs = {"local": [], "ray": ["--ray-address", ray_cluster],
            "local-t1": ["--threads", "1"], "ray-t1": ["--threads", "1", "--ray-address",
                                                       ray_cluster]}
    for name, extra in runs.items():
        result = CliRunner().invoke(main, [
            "sparsify", str(model), "-o", str(tmp_path / f"{name}.onnx"), "--criterion",
            "sparsegpt", "--all", "--calib", str(calib), "-q", *extra])
        assert result.exit_code == 0, result.output
    data = {name: (tmp_path / f"{name}.onnx").read_bytes() for name in runs}
    assert data["ray"] == data["local"] and data["ray-t1"] == data["local-t1"]
