"""What bad or odd input gives when it is not an error: warnings for cuts that remove
nothing, messages that name the node at fault, and the guards every written model
passes (finite calibration data, finite weights and outputs); the opsets the README
names."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
from bad_input_files import two_convs, with_loop
from click.testing import CliRunner
from helpers import GraphBuilder, build_typed
from onnx import numpy_helper

from onnxprune import calibrate, prune
from onnxprune.cli import main
from onnxprune.errors import InputError, ModelError, VerificationError
from onnxprune.notices import NOTHING
from onnxprune.report_html import sensitivity_html, sensitivity_markdown, sensitivity_rows
from onnxprune.shapes import sample_shapes
from onnxprune.verify import check_written, run, sample_feeds


@pytest.fixture
def folder(tmp_path, monkeypatch):
    onnx.save(two_convs(), tmp_path / "tiny.onnx")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


WARN = "onnxprune: warning: "


@pytest.mark.parametrize("flags, expected", [
    ("--head-ratio 0.5", ["--head-ratio 0.5 cuts nothing: the model has no prunable attention "
                          "head groups", NOTHING]),
    ("--ratio 0.5 --hidden-ratio 0.5", ["--hidden-ratio 0.5 cuts nothing: the model has no "
                                        "prunable hidden groups"]),
    ("--ratio 0.5 --min-channels 100000", ["--ratio 0.5 cuts nothing: none of the 1 prunable "
                                           "channel or neuron groups loses a unit (no more "
                                           "channels than --min-channels)", NOTHING]),
], ids=["head-ratio-on-a-cnn", "hidden-ratio-on-a-cnn", "min-channels-too-large"])
def test_a_cut_that_removes_nothing_warns_and_writes_a_valid_model(folder, flags, expected):
    result = CliRunner().invoke(main, shlex.split(f"prune tiny.onnx -o o.onnx --round-to 1 "
                                                  f"--report w.json {flags}"))
    assert result.exit_code == 0, result.output
    assert stderr_lines(result) == [WARN + text for text in expected]
    assert json.loads(Path("w.json").read_text())["warnings"] == expected
    written = onnx.load("o.onnx")
    onnx.checker.check_model(written, full_check=True)
    shapes = {t.name: list(t.dims) for t in written.graph.initializer}
    unchanged = shapes == {t.name: list(t.dims) for t in onnx.load("tiny.onnx").graph.initializer}
    assert unchanged == (NOTHING in expected)


@pytest.mark.parametrize("flag", ["--quiet", "--json"])
def test_warnings_stay_off_stderr_with_quiet_or_json(folder, flag):
    result = CliRunner().invoke(main, shlex.split(f"prune tiny.onnx -o o.onnx --head-ratio 0.5 "
                                                  f"{flag}"))
    assert result.exit_code == 0 and stderr_lines(result) == []
    if flag == "--json":
        assert json.loads(result.stdout)["warnings"][-1] == NOTHING


def test_a_loop_that_blocks_a_group_is_named(tmp_path):
    model = with_loop()
    onnx.save(model, tmp_path / "loop.onnx")
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "loop.onnx"), "--json"])
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    first = json.loads(result.stdout)[0]
    assert first["blocked"] == f"Loop {loop.name} has subgraphs that read {loop.input[2]}"


def test_sparsify_skips_a_conv_without_output_channels(tmp_path):
    builder = GraphBuilder()
    x = builder.input("x", [1, 4, 8, 8])
    out = builder.op("Conv", [x, builder.const(np.zeros((0, 4, 3, 3), np.float32))],
                     pads=[1, 1, 1, 1])
    onnx.save(build_typed(builder, out, output_shape=[1, 0, 8, 8]), tmp_path / "empty.onnx")
    result = CliRunner().invoke(main, ["sparsify", str(tmp_path / "empty.onnx"), "-o",
                                       str(tmp_path / "s.onnx"), "--all", "--report",
                                       str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    layer, = json.loads((tmp_path / "s.json").read_text())["layers"]
    assert not layer["sparsified"] and layer["reason"].startswith("empty weight of shape")


def test_sensitivity_table_shows_each_distinct_cut_once():
    rows = [{"group": 3, "removed": 0, "units": 8, "ratio": 0.0, "error": 0.0}] * 3 + [
        {"group": 4, "removed": r, "units": 32, "ratio": r / 32, "error": r / 100}
        for r in (16, 16, 24)]
    assert sensitivity_rows(rows) == [[3, "0 of 8", "0.00", "0"], [4, "16 of 32", "0.50",
                                                                    "0.16"],
                                      [4, "24 of 32", "0.75", "0.24"]]
    assert sensitivity_html({"rows": rows}).count("<tr>") == 1 + 3  # header and three cuts
    assert sum(line.startswith("| 4 |") for line in
               sensitivity_markdown({"rows": rows})) == 2


def test_non_finite_calibration_values_name_the_input_and_sample(tmp_path):
    builder = GraphBuilder()
    total = builder.op("Add", [builder.input("a", ["n", 4]), builder.input("b", ["n", 4])])
    model = builder.build(total)
    rng = np.random.default_rng(3)
    batches = [{"a": rng.standard_normal((2, 4)).astype(np.float32),
                "b": rng.standard_normal((2, 4)).astype(np.float32)} for _ in range(3)]
    batches[2]["b"][1, 3] = np.inf
    with pytest.raises(InputError, match=r"input 'b', sample 5: holds infinite"):
        calibrate.batches(batches, model)
    stacked = {name: np.concatenate([b[name] for b in batches]) for name in ("a", "b")}
    stacked["a"][4, 0] = np.nan
    np.savez(tmp_path / "two.npz", **stacked)
    with pytest.raises(InputError, match=r"input 'a', sample 4: holds NaN"):
        calibrate.batches(tmp_path / "two.npz", model)


@pytest.mark.parametrize("value, source, error", [
    (np.nan, False, VerificationError), (np.inf, False, VerificationError),
    (np.nan, True, ModelError), (np.inf, True, None)])
def test_written_weights_are_finite_unless_the_source_holds_infinity(value, source, error):
    model = two_convs()
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    weight = bad.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = value
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    feeds = sample_feeds(model, sample_shapes(model))
    reference = run(bad, feeds) if source else None
    if error is None:
        check_written(bad, feeds, reference, bad)
        return
    with pytest.raises(error, match=rf"weight '{weight.name}'"):
        check_written(bad, feeds, reference, bad if source else None)


def test_outputs_must_be_finite_where_the_reference_is():
    model = two_convs()
    feeds = sample_feeds(model, sample_shapes(model))
    feeds["x"][0, 0, 0, 0] = np.nan
    with pytest.raises(VerificationError, match="holds NaN or infinity on the sample inputs"):
        check_written(model, feeds, {})
    assert set(check_written(model, feeds, run(model, feeds))) == {model.graph.output[0].name}


@pytest.mark.parametrize("opset", [7, 8, 22, 28])
def test_opsets_the_readme_names_prune(opset):
    builder = GraphBuilder(opset=opset)
    hidden = builder.op("Relu", [builder.bn(builder.conv(builder.input("x", [1, 4, 8, 8]), 4,
                                                         16), 16)])
    model = builder.build(builder.conv(hidden, 16, 8))
    pruned, report = prune(model, 0.5, round_to=1)
    assert report.macs_after < report.macs_before and pruned.opset_import[0].version == opset
