"""The command line: outputs, reports, and one clear error line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from onnxprune.cli import main

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_prune_writes_model_and_report(tmp_path):
    out, report = tmp_path / "small.onnx", tmp_path / "r.json"
    result = invoke("prune", DEMO, "-o", out, "--ratio", "0.5", "--input-shape",
                    "x:1x3x48x192", "--report", report)
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    data = json.loads(report.read_text())
    for key in ("macs_before", "macs_after", "params_before", "params_after", "seconds"):
        assert key in data
    assert data["macs_after"] < data["macs_before"] / 2
    assert all({"id", "size", "kept"} <= set(g) for g in data["groups"])
    assert any("blocked" in g for g in data["groups"])
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".onnxprune-*"))


def test_inspect_json_lists_groups_with_members_and_reasons():
    result = invoke("inspect", DEMO, "--json")
    assert result.exit_code == 0
    groups = json.loads(result.output)
    assert len(groups) == 27
    assert all({"id", "kind", "size", "members", "prunable"} <= set(g) for g in groups)
    blocked = [g for g in groups if not g["prunable"]]
    assert blocked and all(g["blocked"] for g in blocked)


def test_inspect_table_shows_status():
    result = invoke("inspect", DEMO)
    assert result.exit_code == 0
    assert "prunable" in result.output and "blocked" in result.output


@pytest.mark.parametrize("args, code, words", [
    (["prune", "missing.onnx", "-o", "{out}", "--ratio", "0.5"], 2, "no such file"),
    (["prune", "{garbage}", "-o", "{out}", "--ratio", "0.5"], 2, "not a readable ONNX"),
    (["prune", str(DEMO), "-o", "{out}", "--ratio", "1.0"], 2, "[0, 1)"),
    (["prune", str(DEMO), "-o", "{out}", "--ratio", "-0.1"], 2, "[0, 1)"),
    (["prune", str(DEMO), "-o", "{out}", "--ratio", "0.5", "--criterion", "nope"], 2,
     "unknown criterion"),
    (["prune", str(DEMO), "-o", "{out}"], 2, "give --ratio"),
    (["prune", str(DEMO), "-o", "{out}", "--ratio", "0.5", "--target-macs", "0.5"], 2,
     "only one of"),
    (["prune", str(DEMO), "-o", "{out}", "--head-ratio", "1.5"], 2, "--head-ratio must be"),
    (["prune", str(DEMO), "-o", "/no/such/dir/x.onnx", "--ratio", "0.5"], 2,
     "does not exist"),
    (["prune", str(DEMO), "-o", "{out}", "--ratio", "0.5", "--input-shape", "x:1x3"], 2,
     "does not fit"),
    (["prune", str(DEMO), "-o", "{out}", "--ratio", "0.5", "--input-shape", "y:1x3x48x48"],
     2, "no model input"),
    (["prune", "{invalid}", "-o", "{out}", "--ratio", "0.5"], 3, "checker"),
])
def test_errors_are_one_line_and_write_nothing(tmp_path, args, code, words):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    invalid = tmp_path / "invalid.onnx"
    model = onnx.load(str(DEMO))
    next(n for n in model.graph.node if n.input).input[0] = "does_not_exist"
    onnx.save(model, str(invalid))
    out = tmp_path / "out.onnx"
    filled = [a.format(out=out, garbage=garbage, invalid=invalid) for a in args]
    result = invoke(*filled)
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:")
    assert words in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def writable(directory: Path) -> bool:
    """Whether this user can create a file in `directory`, found by trying."""
    try:
        (directory / ".probe").write_bytes(b"")
    except OSError:
        return False
    (directory / ".probe").unlink()
    return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux's /proc")
def test_unwritable_output_is_refused_before_work(tmp_path, monkeypatch):
    """/proc takes no new file from any user, root included."""
    from onnxprune import api

    assert not writable(Path("/proc"))
    monkeypatch.setattr(api, "prune", lambda *a, **k: pytest.fail("pruned anyway"))
    for option in ("-o", "--report", "--report-md"):
        args = {"-o": tmp_path / "x.onnx", option: "/proc/x.out"}
        result = invoke("prune", DEMO, *[a for pair in args.items() for a in pair],
                        "--ratio", "0.5")
        lines = result.stderr.splitlines()
        assert result.exit_code == 2 and len(lines) == 1
        assert lines[0].startswith("onnxprune: error: /proc/x.out: not writable")
        assert "Traceback" not in result.output and list(tmp_path.iterdir()) == []


def test_a_locked_directory_is_refused_exactly_when_writing_there_fails(tmp_path):
    """Permission bits bind some users and not others (root): the command must agree
    with what writing does."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        possible = writable(locked)
        result = invoke("prune", DEMO, "-o", locked / "x.onnx", "--ratio", "0.5", "-q")
        if possible:
            assert result.exit_code == 0, result.output
            assert [p.name for p in locked.iterdir()] == ["x.onnx"]
        else:
            assert result.exit_code == 2 and "not writable" in result.stderr
            assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)
