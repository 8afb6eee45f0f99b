"""`--rounds K`: the cubic schedule, K=1 as one step, the final cut of K rounds equal in
MACs to one step's, each round's report row, fine-tuning between rounds, and what
rounds refuse (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import finetune_graphs
import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from click.testing import CliRunner

import onnxprune
from onnxprune.analysis import analyze
from onnxprune.cli import main
from onnxprune.errors import InputError
from onnxprune.refit import refit_layerwise
from onnxprune.schedule import budget_schedule, fractions, schedule
from onnxprune.verify import relative_error, run, sample_feeds

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"


def mlp(seed: int = 0) -> onnx.ModelProto:
    """x[n, 16] -> Gemm 64 -> Relu -> Gemm 48 -> Relu -> Gemm 8."""
    return finetune_graphs.mlp(seed, (64, 48))


def calibration(count: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((8, 16)).astype(np.float32)} for _ in range(count)]


def removed_units(report) -> dict[int, list[int]]:
    return {g.id: g.removed for g in report.groups if g.removed}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_schedule_is_cubic_and_ends_at_the_target_exactly():
    assert schedule(0.5, 3) == pytest.approx([0.5 * (1 - (2 / 3) ** 3),
                                              0.5 * (1 - (1 / 3) ** 3), 0.5])
    assert schedule(0.3, 7)[-1] == 0.3 and fractions(1) == [1.0]
    assert schedule(0.5, 3)[0] == pytest.approx(0.5 * 19 / 27)
    assert budget_schedule(0.3, 4)[-1] == 0.3
    assert budget_schedule(0.4, 2)[0] == pytest.approx(1 - 0.6 * (1 - 0.5 ** 3))
    levels = schedule(0.8, 5)
    assert all(a < b for a, b in zip(levels, levels[1:], strict=False))


@pytest.mark.parametrize("rounds", [0, -1, 1.5, True, "2"])
def test_a_bad_number_of_rounds_is_refused(rounds):
    with pytest.raises(InputError, match="--rounds must be a whole number >= 1"):
        onnxprune.prune(mlp(), 0.5, rounds=rounds)
    with pytest.raises(InputError, match="--rounds must be a whole number >= 1"):
        onnxprune.sparsify(mlp(), "unstructured", rounds=rounds)


@pytest.mark.parametrize("value", ["0", "-2", "1.5"])
def test_the_command_line_refuses_a_bad_number_of_rounds(tmp_path, value):
    onnx.save(mlp(), str(tmp_path / "m.onnx"))
    for command in (("prune", "--ratio", "0.5"), ("sparsify", "--pattern", "unstructured")):
        result = invoke(command[0], tmp_path / "m.onnx", "-o", tmp_path / "o.onnx",
                        *command[1:], "--rounds", value)
        assert result.exit_code == 2
        assert result.output.startswith("onnxprune: error:") and "--rounds" in result.output
        assert result.output.count("\n") == 1 and not (tmp_path / "o.onnx").exists()


def test_one_round_is_one_step(tmp_path):
    model, calib = mlp(), calibration()
    plain, report = onnxprune.prune(model, 0.5, round_to=4, calib=calib)
    once, again = onnxprune.prune(model, 0.5, round_to=4, calib=calib, rounds=1)
    assert once.SerializeToString() == plain.SerializeToString()
    assert {k: v for k, v in again.to_dict().items() if k != "seconds"} == \
        {k: v for k, v in report.to_dict().items() if k != "seconds"}
    assert "rounds" not in again.to_dict()
    sparse = onnxprune.sparsify(model, "unstructured", sparsity=0.6, all_layers=True)[0]
    assert onnxprune.sparsify(model, "unstructured", sparsity=0.6, all_layers=True,
                              rounds=1)[0].SerializeToString() == sparse.SerializeToString()
    onnx.save(model, str(tmp_path / "m.onnx"))
    for name, extra in (("a", ()), ("b", ("--rounds", "1"))):
        result = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / f"{name}.onnx",
                        "--ratio", "0.5", *extra, "-q")
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


@pytest.mark.parametrize("criterion", ["l1", "wanda"])
def test_three_rounds_reach_the_macs_of_one_step(criterion):
    model = mlp()
    calib = calibration() if criterion == "wanda" else None
    _, one = onnxprune.prune(model, 0.5, round_to=4, criterion=criterion, calib=calib)
    pruned, three = onnxprune.prune(model, 0.5, round_to=4, criterion=criterion,
                                    calib=calib, rounds=3)
    assert three.macs_after == one.macs_after and three.params_after == one.params_after
    assert {g: len(u) for g, u in removed_units(three).items()} == \
        {g: len(u) for g, u in removed_units(one).items()}
    rows = three.rounds
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert [r["ratio"] for r in rows] == schedule(0.5, 3)
    assert rows[0]["macs_fraction"] > rows[1]["macs_fraction"] >= rows[2]["macs_fraction"]
    assert rows[-1]["macs_after"] == three.macs_after
    assert rows[0]["removed_fraction"] < rows[-1]["removed_fraction"] == 0.5
    feeds = sample_feeds(model, {"x": (1, 16)}, 0)
    want = relative_error(run(model, feeds)["gemm15"], run(pruned, feeds)["gemm15"])
    assert rows[-1]["output_error"]["gemm15"] == pytest.approx(want, rel=1e-4)


def test_each_round_keeps_the_cuts_of_the_rounds_before():
    model, zero_rows = mlp(seed=3), []

    def between(current: onnx.ModelProto, number: int) -> onnx.ModelProto:
        weight = next(onnx.numpy_helper.to_array(t) for t in current.graph.initializer
                      if list(t.dims) == [64, 48])
        zero_rows.append(set(np.flatnonzero(~weight.any(axis=1)).tolist()))
        return current

    _, report = onnxprune.prune(model, 0.5, round_to=4, criterion="l1", rounds=3,
                                between_rounds=between)
    final = set(next(g.removed for g in report.groups if g.size == 64))
    assert len(zero_rows[0]) == 24 and len(final) == 32  # 64·(1 − 19/54) → 40 kept
    assert zero_rows[0] <= zero_rows[1] <= final


def test_between_rounds_gets_each_rounds_model_and_the_next_round_starts_from_its_result():
    model, seen = mlp(), []

    def between(current: onnx.ModelProto, number: int) -> onnx.ModelProto:
        seen.append((number, [list(t.dims) for t in current.graph.initializer]))
        return current

    calib = calibration()
    _, report = onnxprune.prune(model, 0.5, round_to=4, calib=calib, rounds=3,
                                between_rounds=between)
    dense = [list(t.dims) for t in model.graph.initializer]
    assert [n for n, _ in seen] == [1, 2] and all(dims == dense for _, dims in seen)
    assert all(row["output_error_after"] == row["output_error"] for row in report.rounds[:2])


def test_rounds_under_a_macs_budget_reach_it():
    model = mlp()
    _, report = onnxprune.prune(model, target_macs=0.5, round_to=4, rounds=3)
    rows = report.rounds
    assert [r["target_macs"] for r in rows] == budget_schedule(0.5, 3)
    assert all(r["macs_fraction"] <= r["target_macs"] + 1e-9 for r in rows)
    assert report.macs_after <= 0.5 * report.macs_before


def test_global_rounds_keep_every_earlier_cut():
    model = mlp(seed=5)
    _, report = onnxprune.prune(model, 0.5, round_to=4, rounds=3, global_ranking=True,
                                calib=calibration())
    assert report.rounds[-1]["removed_fraction"] == pytest.approx(0.5, abs=0.05)
    assert report.macs_after < report.macs_before


def test_refit_toward_the_model_itself_as_teacher_is_the_plain_refit():
    model, calib = mlp(), calibration()
    analysis = analyze(model, calib=calib)
    removed = {g.id: np.arange(8) for g in analysis.dep.groups if g.prunable}
    plain = refit_layerwise(analysis.dep, removed, analysis.proto, analysis.stream)[0]
    taught = refit_layerwise(analysis.dep, removed, analysis.proto, analysis.stream,
                             teacher=(analysis.dep.view, analysis.proto))[0]
    assert plain.keys() == taught.keys()
    for name, value in plain.items():
        np.testing.assert_allclose(taught[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("extra, message", [
    (("--hidden-ratio", "0.25"), "--hidden-ratio"),
    (("--target-latency", "0.5"), "--target-latency"),
    (("--criterion", "zero"), "--criterion zero"),
])
def test_rounds_refuse_what_they_do_not_support(tmp_path, extra, message):
    onnx.save(mlp(), str(tmp_path / "m.onnx"))
    ratio = () if "--target-latency" in extra else ("--ratio", "0.5")
    result = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", *ratio,
                    "--rounds", "2", *extra)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"onnxprune: error: --rounds 2 cannot be combined with "
                                    f"{message}")
    assert not (tmp_path / "o.onnx").exists()


def test_a_saved_plan_of_rounds_replays_their_cut_and_is_not_replayed_in_rounds(tmp_path):
    onnx.save(mlp(), str(tmp_path / "m.onnx"))
    result = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--ratio", "0.5",
                    "--round-to", "4", "--rounds", "3", "--save-plan", tmp_path / "p.json",
                    "--report", tmp_path / "r.json", "--report-md", tmp_path / "r.md", "-q")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.md").read_text()
    table = page[page.index("## Rounds"):].splitlines()
    assert table[2].startswith("| round | target |") and len(table) >= 7
    assert [line.split(" | ")[1] for line in table[4:7]] == [
        f"ratio {r:.3f}" for r in schedule(0.5, 3)]
    plan = json.loads((tmp_path / "p.json").read_text())
    assert plan["options"]["rounds"] == 3
    report = json.loads((tmp_path / "r.json").read_text())
    assert [row["round"] for row in report["rounds"]] == [1, 2, 3]
    replayed = onnxprune.prune(str(tmp_path / "m.onnx"), plan=plan)[1]
    assert replayed.macs_after == report["macs_after"]
    result = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--plan",
                    tmp_path / "p.json", "--rounds", "2")
    assert result.exit_code == 2 and "--plan" in result.output


def test_sparsify_rounds_raise_unstructured_sparsity_and_refuse_n_m(tmp_path):
    model = mlp()
    one = onnxprune.sparsify(model, "unstructured", sparsity=0.6, all_layers=True)[0]
    three, report = onnxprune.sparsify(model, "unstructured", sparsity=0.6, all_layers=True,
                                       rounds=3)
    assert three.SerializeToString() == one.SerializeToString()  # magnitude: same mask
    assert [r["sparsity"] for r in report.rounds] == schedule(0.6, 3)
    reached = [r["reached"] for r in report.rounds]
    assert reached[0] < reached[1] < reached[2] == pytest.approx(0.6, abs=0.02)
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = invoke("sparsify", tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--rounds",
                    "2", "--all")
    assert result.exit_code == 2 and "needs --pattern unstructured" in result.output
    assert not (tmp_path / "o.onnx").exists()


@dataclass
class FakeTuning:
    steps: int
    validation_before: float = 2.0
    validation_after: float = 1.0
    improved: bool = True

    def to_dict(self) -> dict:
        return {"steps": self.steps}


@pytest.mark.parametrize("command", ["prune", "sparsify"])
def test_rounds_fine_tune_k_times_sharing_the_budget(tmp_path, monkeypatch, command):
    pytest.importorskip("jax")
    from onnxprune.cli import finetuning

    calls = []

    def fake(student, teacher, data, keywords, quiet):
        calls.append((keywords["steps"], keywords["minutes"],
                      sum(int(np.prod(t.dims)) for t in student.graph.initializer)))
        return student, FakeTuning(keywords["steps"])

    monkeypatch.setattr(finetuning, "run_finetune", fake)
    model = mlp()
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((16, 16))
             .astype(np.float32))
    flags = ("--ratio", "0.5", "--round-to", "4") if command == "prune" else \
        ("--pattern", "unstructured", "--all")
    result = invoke(command, tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", *flags,
                    "--calib", tmp_path / "d.npz", "--rounds", "3", "--finetune-steps", "10",
                    "--report", tmp_path / "r.json", "-q")
    assert result.exit_code == 0, result.output
    assert [(steps, minutes) for steps, minutes, _ in calls] == [(3, None), (3, None),
                                                                  (4, None)]
    dense = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    sizes = [size for _, _, size in calls]
    assert sizes[:2] == [dense, dense]
    assert sizes[2] < dense if command == "prune" else sizes[2] == dense
    rows = json.loads((tmp_path / "r.json").read_text())["rounds"]
    assert [row["finetune"]["steps"] for row in rows] == [3, 3, 4]


def test_rounds_on_the_shipped_ocr_classifier():
    shapes = {"x": (1, 3, 48, 192)}
    _, one = onnxprune.prune(str(DEMO), 0.5, input_shapes=shapes, round_to=4)
    pruned, two = onnxprune.prune(str(DEMO), 0.5, input_shapes=shapes, round_to=4, rounds=2)
    assert two.macs_after == one.macs_after < one.macs_before
    assert [row["round"] for row in two.rounds] == [1, 2]
    assert two.rounds[0]["macs_fraction"] > two.rounds[1]["macs_fraction"]
    assert two.rounds[1]["macs_after"] == two.macs_after
    onnx.checker.check_model(pruned, full_check=True)
