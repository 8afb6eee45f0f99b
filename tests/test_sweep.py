"""`onnxprune sweep` and the executor: grids, the Pareto front, held-out fidelity, and
the same models and table in-process, on a local Ray runtime (--workers 2) and on a
real Ray cluster started for the session (--ray-address)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from ray_cluster import ray_cluster  # noqa: F401  (session fixture)

from onnxprune import distributed
from onnxprune.cli import main
from onnxprune.errors import InputError
from onnxprune.grid import check_settings, parse_grid
from onnxprune.sweep import pareto_front
from onnxprune.sweep_report import MEASURED

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"
GRID = "ratio=0.25,0.5;criterion=l1,wanda"
SETTINGS = ["ratio-0.25_criterion-l1", "ratio-0.25_criterion-wanda",
            "ratio-0.5_criterion-l1", "ratio-0.5_criterion-wanda"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_grid_is_every_combination_in_order_with_typed_values():
    settings = parse_grid(" ratio=0.1,0.3 ; criterion=l1,wanda;round-to=8;global_ranking=yes")
    assert [s.options for s in settings] == [
        {"ratio": 0.1, "criterion": "l1", "round_to": 8, "global_ranking": True},
        {"ratio": 0.1, "criterion": "wanda", "round_to": 8, "global_ranking": True},
        {"ratio": 0.3, "criterion": "l1", "round_to": 8, "global_ranking": True},
        {"ratio": 0.3, "criterion": "wanda", "round_to": 8, "global_ranking": True}]
    assert settings[1].name == "ratio=0.1 criterion=wanda round_to=8 global_ranking=True"
    assert settings[1].stem == "ratio-0.1_criterion-wanda_round_to-8_global_ranking-True"
    assert isinstance(settings[0].options["round_to"], int)


@pytest.mark.parametrize("grid, words", [
    ("speed=1,2", "unknown key 'speed'"),
    ("calib=a.npz", "unknown key 'calib'"),
    ("ratio=0.1,abc", "ratio='abc' is not a number"),
    ("ratio=0.1,nan", "is not a number"),
    ("round_to=8.5", "is not an integer"),
    ("global_ranking=maybe", "is not true or false"),
    ("ratio=0.1;ratio=0.2", "given twice"),
    ("ratio=0.1,0.10", "lists 0.1 twice"),
    ("ratio=0.1,", "empty value"),
    ("ratio", "expected KEY=V1,V2"),
    (" ; ", "--grid is empty"),
])
def test_bad_grids_are_refused(grid, words):
    with pytest.raises(InputError) as error:
        parse_grid(grid)
    assert words in str(error.value)


def test_settings_are_checked_as_prune_options_before_any_work():
    with pytest.raises(InputError, match="grid setting ratio=1.5: --ratio must be in"):
        check_settings(parse_grid("ratio=0.5,1.5"), {})
    with pytest.raises(InputError, match="give only one of"):
        check_settings(parse_grid("ratio=0.5"), {"target_macs": 0.5})
    with pytest.raises(InputError, match="unknown criterion"):
        check_settings(parse_grid("ratio=0.5;criterion=l1,nope"), {})


def test_pareto_front_matches_a_hand_computed_front():
    points = [(10, 0.5), (8, 0.6), (8, 0.4), (12, 0.1), (12, 0.3), (5, 0.9), (5, 0.9),
              (3, 1.0), (4, 1.0)]
    # (10, .5) and (8, .6) lose to (8, .4); (12, .3) to (12, .1); (4, 1) to (3, 1);
    # equal points do not dominate each other.
    assert pareto_front(points) == [False, False, True, True, False, True, True, True, False]
    assert pareto_front([(1.0, 2.0, 3.0), (1.0, 2.0, 2.0), (0.0, 5.0, 5.0)]) == \
        [False, True, True]
    assert pareto_front([]) == []


def test_in_process_map_keeps_order():
    assert distributed.InProcess().map(lambda s, x: s + x, [3, 1, 2], 10) == [13, 11, 12]


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r"--workers 2 needs Ray: pip install "
                                         r"'onnxprune\[distributed\]'"):
        distributed.check_request(2, None)
    distributed.check_request(1, None)  # the default needs nothing
    result = invoke("sweep", DEMO, "--calib", "x.npz", "--grid", "ratio=0.5", "-o",
                    tmp_path / "out", "--ray-address", "127.0.0.1:1")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "onnxprune: error: --ray-address needs Ray: pip install 'onnxprune[distributed]'"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, words", [
    (["--grid", "speed=1"], "unknown key 'speed'"),
    (["--grid", "ratio=0.5", "--workers", "0"], "--workers must be at least 1"),
    (["--grid", "ratio=0.5", "--target-macs", "0.5"], "give only one of"),
    (["--grid", "ratio=0.5", "--held-out", "16"], "--held-out 16: the calibration data "
                                                  "holds 16 samples"),
])
def test_sweep_refuses_with_one_line_and_writes_nothing(args, words, calib, tmp_path):
    out = tmp_path / "out"
    result = invoke("sweep", DEMO, "--calib", calib["path"], "-o", out, *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:") and words in lines[0]
    assert not out.exists()


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """16 samples; a twin whose last 4 (the held-out part) differ."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (16, 3, 48, 192)).astype(np.float32)
    folder = tmp_path_factory.mktemp("calib")
    np.savez(folder / "cls.npz", x=x)
    x[-4:] = rng.uniform(-1, 1, (4, 3, 48, 192)).astype(np.float32)
    np.savez(folder / "twin.npz", x=x)
    return {"path": folder / "cls.npz", "twin": folder / "twin.npz"}


def run_sweep(out: Path, calib_path, *extra, grid: str = GRID) -> dict:
    result = invoke("sweep", DEMO, "--calib", calib_path, "--grid", grid, "-o", out,
                    "--reconstruct", "none", "--held-out", "4", "--runs", "2",
                    "--input-shape", "x:1x3x48x192", "-q", *extra)
    assert result.exit_code == 0, result.output
    return json.loads((out / "sweep.json").read_text())


def repeatable(document: dict) -> dict:
    """The table without what is measured on this machine at this moment."""
    rows = [{k: v for k, v in row.items() if k not in MEASURED} for row in document["rows"]]
    return dict(document, rows=rows)


def models(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.onnx"))}


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, calib):
    out = tmp_path_factory.mktemp("sweep") / "w1"
    return out, run_sweep(out, calib["path"], "--workers", "1")


def test_sweep_writes_models_table_plot_and_page(in_process):
    out, document = in_process
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}.onnx" for s in SETTINGS] + ["sweep.csv", "sweep.html", "sweep.json",
                                           "sweep.png"])
    rows = document["rows"]
    assert [r["setting"] for r in rows][:2] == ["dense", "ratio=0.25 criterion=l1"]
    assert document["samples"] == {"calibration": 12, "held_out": 4}
    assert "last 4 samples" in document["held_out"] and "first 12" in document["held_out"]
    for row in rows[1:]:
        model = onnx.load(str(out / row["file"]))
        onnx.checker.check_model(model, full_check=True)
        assert row["macs"] < rows[0]["macs"] and 0 < row["relative_l2"] < 1
        assert row["latency_ms"] > 0
    assert rows[0]["pareto"] and rows[0]["relative_l2"] == 0
    front = pareto_front([(r["macs"], r["relative_l2"]) for r in rows])
    assert [r["pareto"] for r in rows] == front and any(front[1:])
    assert len((out / "sweep.csv").read_text().splitlines()) == len(rows) + 1
    page = (out / "sweep.html").read_text()
    assert "held out" in page and "data:image/png;base64," in page
    assert page.count("<tr>") == len(rows) + 1
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_held_out_samples_only_measure_fidelity(in_process, calib, tmp_path):
    _, document = in_process
    grid = "ratio=0.5;criterion=wanda"
    twin = run_sweep(tmp_path / "twin", calib["twin"], grid=grid)
    same = [r for r in document["rows"] if r["setting"] == "ratio=0.5 criterion=wanda"][0]
    assert (tmp_path / "twin" / same["file"]).read_bytes() == \
        (in_process[0] / same["file"]).read_bytes()
    assert twin["rows"][1]["relative_l2"] != same["relative_l2"]


def test_two_local_workers_give_the_same_models_and_table(in_process, calib, tmp_path):
    out, document = in_process
    ray_document = run_sweep(tmp_path / "w2", calib["path"], "--workers", "2")
    assert models(tmp_path / "w2") == models(out)
    assert repeatable(ray_document) == repeatable(document)


def test_a_ray_cluster_gives_the_same_models_and_table(in_process, calib, ray_cluster,  # noqa: F811
                                                      tmp_path):
    out, document = in_process
    ray_document = run_sweep(tmp_path / "c", calib["path"], "--ray-address", ray_cluster)
    assert models(tmp_path / "c") == models(out)
    assert repeatable(ray_document) == repeatable(document)


def test_shared_value_travels_once_per_worker(ray_cluster):  # noqa: F811
    with distributed.executor(address=ray_cluster) as runner:
        results = runner.map(lambda shared, item: (item, len(shared), os.getpid()),
                             list(range(8)), b"x" * 1_000_000)
    assert [r[0] for r in results] == list(range(8))
    assert all(r[1] == 1_000_000 for r in results)
    pids = {r[2] for r in results}
    assert runner.stats.tasks == 8
    assert sorted(runner.stats.fetches) == sorted(pids)


def test_sensitivity_cuts_on_a_ray_cluster_equal_in_process(calib, ray_cluster):  # noqa: F811
    from onnxprune import api

    def curves(runner=None):
        found = api.sensitivity(DEMO, str(calib["path"]), ratios=(0.5,), samples=2,
                                input_shapes={"x": (1, 3, 48, 192)}, calib_samples=2,
                                executor=runner)
        return [(c.group, c.removed, c.errors) for c in found]

    with distributed.executor(address=ray_cluster) as runner:
        on_ray = curves(runner)
    assert runner.stats.tasks == len(on_ray) and len(on_ray) > 1
    assert on_ray == curves()
    assert any(errors[0] > 0 for _, _, errors in on_ray)
