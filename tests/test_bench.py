"""`onnxprune bench` and the shared timing code: structure of the results, turns
taken in blocks, refusals; numbers are asserted only on faked timings."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from click.testing import CliRunner

from onnxprune.bench import batch_shapes, interleaved_times, latency_stats, paired_ratio
from onnxprune.cli import main

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_bench_json_has_percentiles_per_provider_and_batch(tmp_path):
    pruned = tmp_path / "small.onnx"
    assert invoke("prune", DEMO, "-o", pruned, "--ratio", "0.5", "-q").exit_code == 0
    result = invoke("bench", DEMO, pruned, "--batch-size", "1", "--batch-size", "3",
                    "--runs", "4", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["provider"], r["batch_size"]) for r in rows] == [
        ("CPUExecutionProvider", 1), ("CPUExecutionProvider", 3)]
    for row in rows:
        for model in ("dense", "pruned"):
            stats = row[model]
            assert stats["runs"] == 4
            assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
            expected = row["batch_size"] * 1e3 / stats["p50_ms"]
            assert abs(stats["throughput"] - expected) < 1e-6 * expected
        assert row["speedup"] == row["dense"]["p50_ms"] / row["pruned"]["p50_ms"]


def fake_times(*milliseconds_per_run: float):
    """Stands in for `interleaved_times`: session k's runs take 1, 2, 3, … times
    `milliseconds_per_run[k]`; records the runs and blocks asked for."""
    asked: list[tuple[int, int]] = []

    def times(sessions, feeds, runs, block=10, pause=0.05, progress=None):
        asked.append((runs, block))
        return [[ms * 1e-3 * k for k in range(1, runs + 1)]
                for ms in milliseconds_per_run[:len(sessions)]]

    times.asked = asked
    return times


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in text.splitlines() if line.startswith("│")]


def test_bench_table_shows_percentiles_throughput_and_speedup(monkeypatch, tmp_path):
    from onnxprune import bench

    monkeypatch.setattr(bench, "interleaved_times", fake_times(2.0, 1.0))
    result = invoke("bench", DEMO, "--runs", "3", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    # runs of 2, 4 and 6 ms: p50 4, p90 5.6, p99 5.96; 4 samples per 4 ms
    assert table_rows(result.stdout) == [
        ["CPU", "4", "dense", "4.000", "5.600", "5.960", "1000.0"]]
    assert "speedup" not in result.stdout
    monkeypatch.setattr(bench, "interleaved_times", times := fake_times(2.0, 1.0))
    result = invoke("bench", DEMO, DEMO, "--runs", "5")
    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout) == [
        ["CPU", "1", "dense", "6.000", "9.200", "9.920", "166.7", ""],
        ["CPU", "1", "pruned", "3.000", "4.600", "4.960", "333.3", "2.00×"]]
    assert times.asked == [(5, 10)]  # one timing of both models, in turns


def test_bench_refuses_unknown_provider_and_fixed_batch(tmp_path):
    result = invoke("bench", DEMO, "--provider", "NoSuchExecutionProvider", "--runs", "2")
    assert result.exit_code == 2
    assert "NoSuchExecutionProvider" in result.stderr and "CPUExecutionProvider" in \
        result.stderr
    fixed = onnx.load(str(DEMO))
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "fixed.onnx"
    onnx.save(fixed, str(path))
    result = invoke("bench", path, "--batch-size", "2", "--runs", "2")
    assert result.exit_code == 2 and "fixed batch size of 1" in result.stderr
    assert batch_shapes(fixed, 1)["x"][0] == 1


class _Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def run(self, outputs, feeds):
        self.log.append(self.name)


def test_models_take_turns_in_blocks_after_a_warm_up_turn():
    log: list[str] = []
    times = interleaved_times([_Recorder("a", log), _Recorder("b", log)], {}, runs=6,
                              block=3, pause=0)
    assert [len(t) for t in times] == [6, 6]
    assert "".join(log) == "aaabbb" * 3


def test_latency_stats_percentiles_and_throughput():
    stats = latency_stats([0.001 * k for k in range(1, 101)], batch=4)
    assert abs(stats.p50_ms - 50.5) < 1e-9 and abs(stats.p99_ms - 99.01) < 1e-9
    assert abs(stats.throughput - 4 / 0.0505) < 1e-6 and stats.runs == 100


def test_prune_json_prints_the_report_and_nothing_else(tmp_path):
    result = invoke("prune", DEMO, "-o", tmp_path / "s.onnx", "--ratio", "0.5", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["macs_after"] < data["macs_before"] and "groups" in data
    quiet = invoke("prune", DEMO, "-o", tmp_path / "t.onnx", "--ratio", "0.5", "-q")
    assert quiet.exit_code == 0 and quiet.output == ""


def test_progress_bar_is_silent_off_a_terminal_and_when_quiet():
    from onnxprune.progress import bar

    with bar("outer", 3) as advance:
        assert advance is None  # pytest's stderr is not a terminal
    with bar("quiet", 3, quiet=True) as advance:
        assert advance is None


def test_paired_ratio_compares_lower_quartiles_of_back_to_back_turns():
    dense, pruned = [1.0] * 12, [0.5] * 12
    dense[1], pruned[6] = 3.0, 2.0  # single runs slowed by load
    dense[8:], pruned[8:] = [2.0] * 4, [1.0] * 4  # a whole turn of each slowed
    assert abs(paired_ratio([dense, pruned], 4) - 0.5) < 1e-12
