"""Outputs of one command appear together or not at all: a failed write (a full
disk, a read-only file system), an error between two outputs, or Ctrl-C at any
moment leaves the folder as it was; Ctrl-C is one line and exit status 130."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from bad_input_files import copy_folder, snapshot, two_convs
from click.testing import CliRunner

from onnxprune import files
from onnxprune.cli import main

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PRUNE = ["prune", "tiny.onnx", "--ratio", "0.5", "--round-to", "1"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    onnx.save(two_convs(), folder / "tiny.onnx")
    (folder / "existing.onnx").write_bytes(b"an earlier result")
    (folder / "r.json").write_text('{"earlier": true}\n')
    return folder


@pytest.fixture
def folder(template, tmp_path, monkeypatch):
    work = copy_folder(template, tmp_path / "work")
    monkeypatch.chdir(work)
    return work


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_transaction_commits_all_outputs_or_none(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    with files.transaction() as outputs:
        outputs.write(tmp_path / "a.txt", "new a")
        outputs.write(tmp_path / "b.txt", b"new b")
        assert (tmp_path / "a.txt").read_text() == "old a"  # nothing before the commit
    assert (tmp_path / "a.txt").read_text() == "new a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    with pytest.raises(RuntimeError), files.transaction() as outputs:
        outputs.write(tmp_path / "a.txt", "newer a")
        outputs.write(tmp_path / "c.txt", "c")
        raise RuntimeError("fails between outputs")
    assert (tmp_path / "a.txt").read_text() == "new a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_failed_report_write_removes_the_staged_model(folder, monkeypatch):
    """The model is staged first; the report's write fails (no space): exit 2 naming
    the report, and neither output, nor any temporary file, remains."""
    real = files.Transaction.write

    def full_disk(self, target, data):
        if Path(target).name == "r.json":
            self.temp_path(target).write_bytes(b"partial")  # a half-written temp file
            raise files.unwritable(target, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return real(self, target, data)

    monkeypatch.setattr(files.Transaction, "write", full_disk)
    before = snapshot(folder)
    result = CliRunner().invoke(main, PRUNE + ["-o", "existing.onnx", "--save-plan", "p.json",
                                               "--report", "r.json"])
    assert result.exit_code == 2, result.output
    assert lines_of(result.stderr) == ["onnxprune: error: r.json: cannot write (No space left "
                                       "on device)"]
    assert snapshot(folder) == before


def test_ctrl_c_while_outputs_are_renamed_waits_until_all_are(folder, monkeypatch):
    """SIGINT arriving during the renames is held back until the last one: exit 130,
    and every output is complete."""
    real = os.replace
    sent = []

    def replace(source, target):
        if not sent:
            sent.append(target)
            os.kill(os.getpid(), signal.SIGINT)
        return real(source, target)

    monkeypatch.setattr(files.os, "replace", replace)
    # A shell that starts a job in the background makes it ignore SIGINT; this test
    # wants Python's own Ctrl-C whatever started it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = CliRunner().invoke(main, PRUNE + ["-o", "o.onnx", "--report", "r.json"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sent and result.exit_code == 130, result.output
    assert lines_of(result.stderr) == ["onnxprune: interrupted"]
    onnx.checker.check_model(onnx.load("o.onnx"), full_check=True)
    assert json.loads(Path("r.json").read_text())["macs_after"] > 0
    assert not list(folder.glob(".onnxprune-*"))


# Run as a separate interpreter, with a real SIGINT sent at a chosen moment.
INTERRUPT_AT_IMPORT = """
import os, signal, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime":
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
from onnxprune.__main__ import run
run()
"""
INTERRUPT_AT_WRITE = """
import os, signal
from onnxprune import files
real = files.Transaction.write
def write(self, target, data):
    os.kill(os.getpid(), signal.SIGINT)
    return real(self, target, data)
files.Transaction.write = write
from onnxprune.__main__ import run
run()
"""


def default_sigint() -> None:
    """In the child: SIGINT as a terminal delivers it, even when this test runs in a job
    a shell started in the background (such jobs inherit SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("program", [INTERRUPT_AT_IMPORT, INTERRUPT_AT_WRITE],
                         ids=["during-start-up", "between-outputs"])
def test_ctrl_c_is_one_line_exit_130_and_leaves_nothing(folder, program):
    before = snapshot(folder)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", program, *PRUNE, "-o", "existing.onnx", "--report", "r.json"],
        capture_output=True, text=True, env=env, timeout=300, preexec_fn=default_sigint)
    assert done.returncode == 130, done.stderr
    assert lines_of(done.stderr) == ["onnxprune: interrupted"]
    assert snapshot(folder) == before


def digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256(value).hexdigest() if isinstance(value, bytes) else
            str(value) for name, value in snapshot(folder).items()}


def on_tmpfs(source: str, mount: str, size: int, read_only: bool) -> None:
    """Inside a private mount namespace: a tmpfs of `size` bytes at `mount` holding
    an earlier `r.json`, then prune `source` into it; prints what happened as JSON."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount], check=True)
    Path(mount, "r.json").write_text('{"earlier": true}\n')
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
    before = digests(Path(mount))
    result = CliRunner().invoke(main, ["prune", source, "--ratio", "0.5", "--round-to", "1",
                                       "-o", f"{mount}/o.onnx", "--report", f"{mount}/r.json"])
    print(json.dumps({"code": result.exit_code, "stderr": result.stderr, "before": before,
                      "after": digests(Path(mount))}))


@pytest.mark.parametrize("read_only", [False, True], ids=["disk-full", "read-only"])
def test_full_or_read_only_disk_is_an_unwritable_output(template, tmp_path, read_only):
    if not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("needs unshare(1) and mount(8) for a private tmpfs")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"private mount namespaces are not permitted here: {probe.stderr.strip()}")
    from onnxprune import api

    pruned, _ = api.prune(str(template / "tiny.onnx"), 0.5, round_to=1)
    pages = -(-len(pruned.SerializeToString()) // 4096)
    mount = tmp_path / "out"
    mount.mkdir()
    code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(ROOT)!r}]; "
            f"from test_bad_input_writes import on_tmpfs; on_tmpfs("
            f"{str(template / 'tiny.onnx')!r}, {str(mount)!r}, {4096 * (pages + 1)}, "
            f"{read_only})")
    done = subprocess.run(["unshare", "-m", sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300)
    if done.returncode and "mount" in done.stderr:
        pytest.skip(f"mounting a tmpfs is not permitted here: {lines_of(done.stderr)[-1]}")
    outcome = json.loads(lines_of(done.stdout)[-1])
    why = "Read-only file system" if read_only else "No space left on device"
    where = "o.onnx" if read_only else "r.json"  # the model fits, the report does not
    assert outcome["code"] == 2
    assert lines_of(outcome["stderr"]) == [f"onnxprune: error: {mount}/{where}: "
                                           f"{'not writable' if read_only else 'cannot write'}"
                                           f" ({why})"]
    assert outcome["after"] == outcome["before"] and list(outcome["before"]) == ["r.json"]
