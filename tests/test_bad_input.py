"""Bad input never yields a broken model or lost data: every case below fails with
its documented exit status and exactly one `onnxprune: error:` line, and leaves the
folder it ran in byte for byte as it was (inputs included), with nothing new."""

from __future__ import annotations

import shlex

import pytest
from bad_input_files import build_folder, copy_folder, snapshot
from click.testing import CliRunner

from onnxprune.cli import main

TINY_CALIB = "--calib t.npz"
CUSTOM = "onnxruntime cannot run op MyOp (domain custom.ops)"
SAME = "are the same file"
INPUT = "refusing to overwrite an input"

CASES = [
    # inspect
    ("inspect missing.onnx", 2, "no such file"),
    ("inspect garbage.onnx", 2, "not a readable ONNX"),
    ("inspect empty.onnx", 2, "not"),
    ("inspect notes.txt", 2, "not a readable ONNX"),
    ("inspect adir", 2, "is a directory"),
    ("inspect invalid.onnx", 3, "checker"),
    ("inspect", 2, "Missing argument"),
    ("inspect tiny.onnx --bogus", 2, "No such option"),
    # prune: outputs that would lose data
    ("prune tiny.onnx -o '' --ratio 0.5", 2, "empty"),
    ("prune tiny.onnx -o tiny.onnx --ratio 0.5", 2, INPUT),
    ("prune tiny.onnx -o adir/../tiny.onnx --ratio 0.5", 2, INPUT),
    ("prune tiny.onnx -o link.onnx --ratio 0.5", 2, INPUT),
    ("prune link.onnx -o tiny.onnx --ratio 0.5", 2, INPUT),
    ("prune tiny.onnx -o hard.onnx --ratio 0.5", 2, INPUT),
    ("prune m.onnx -o m.onnx --ratio 0.5", 2, INPUT),
    ("prune tiny.onnx -o o.onnx --report o.onnx --ratio 0.5", 2, SAME),
    ("prune tiny.onnx -o o.onnx --save-plan ./o.onnx --ratio 0.5", 2, SAME),
    ("prune tiny.onnx -o o.onnx --report r.json --report-md r.json --ratio 0.5", 2, SAME),
    ("prune tiny.onnx -o o.onnx --report-html h.html --report-md h.html --ratio 0.5", 2,
     SAME),
    ("prune tiny.onnx -o o.onnx --save-plan tiny.onnx --ratio 0.5", 2, INPUT),
    ("prune tiny.onnx -o o.onnx --report t.npz --calib t.npz --ratio 0.5", 2, INPUT),
    ("prune tiny.onnx -o o.onnx --plan plan.json --report plan.json", 2, INPUT),
    ("prune tiny.onnx -o o.onnx --report '' --ratio 0.5", 2, "empty"),
    ("prune tiny.onnx -o o.onnx --report-html '' --ratio 0.5", 2, "empty"),
    ("prune tiny.onnx -o nodir/o.onnx --ratio 0.5", 2, "does not exist"),
    ("prune tiny.onnx -o adir --ratio 0.5", 2, "is a directory"),
    ("prune tiny.onnx --ratio 0.5", 2, "Missing option"),
    # prune: options out of range
    ("prune tiny.onnx -o o.onnx --ratio 1.0", 2, "[0, 1)"),
    ("prune tiny.onnx -o o.onnx --ratio nan", 2, "[0, 1)"),
    ("prune tiny.onnx -o o.onnx --ratio x", 2, "not a valid float"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --seed -1", 2, "--seed"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --threads -2", 2, "--threads"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --batch-size 0 " + TINY_CALIB, 2, "--batch-size"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --calib-samples 0 " + TINY_CALIB, 2,
     "--calib-samples"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --ridge -1 " + TINY_CALIB, 2, "--ridge"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --ridge nan " + TINY_CALIB, 2, "--ridge"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --ridge inf " + TINY_CALIB, 2, "--ridge"),
    ("prune tiny.onnx -o o.onnx --target-macs 0", 2, "--target-macs"),
    ("prune tiny.onnx -o o.onnx --head-ratio 1.5", 2, "--head-ratio"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --criterion nope", 2, "unknown criterion"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --reconstruct lsq", 2, "needs calibration"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --input-shape x:1x4", 2, "does not fit"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --image-mean nan,0,0", 2, "finite"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --plan plan.json", 2, "do not give"),
    ("prune tiny.onnx -o o.onnx --plan bad_plan.json", 2, "bad_plan.json"),
    # prune: bad calibration data, bad models
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --calib t_nan.npz", 2, "'x', sample 0: holds NaN"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --calib t_inf.npz", 2,
     "'x', sample 2: holds infinite"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --calib t_zero.npz", 2, "no samples"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --calib text.npz", 2, "not an .npz file"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --calib none.npz", 2, "no such calibration"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --calib t_shape.npz", 2, "has shape"),
    ("prune m.onnx -o o.onnx --ratio 0.5 --calib m_nan.npz", 2, "sample 0: holds NaN"),
    ("prune custom.onnx -o existing.onnx --ratio 0.5 --report r.json", 3, CUSTOM),
    ("prune custom.onnx -o o.onnx --ratio 0.5 " + TINY_CALIB, 3, CUSTOM),
    ("prune nanw.onnx -o existing.onnx --ratio 0.5", 3, "holds NaN"),
    ("prune invalid.onnx -o o.onnx --ratio 0.5", 3, "checker"),
    ("prune garbage.onnx -o o.onnx --ratio 0.5", 2, "not a readable ONNX"),
    # verify
    ("verify tiny.onnx other.onnx", 2, "PRUNED does not run on the inputs of ORIGINAL"),
    ("verify m.onnx tiny.onnx", 2, "different outputs"),
    ("verify tiny.onnx missing.onnx", 2, "no such file"),
    ("verify tiny.onnx tiny.onnx --batch-size 0", 2, "--batch-size"),
    ("verify tiny.onnx tiny.onnx --calib-samples 0 " + TINY_CALIB, 2, "--calib-samples"),
    ("verify tiny.onnx tiny.onnx --calib t_nan.npz", 2, "sample 0: holds NaN"),
    ("verify tiny.onnx tiny.onnx --calib t_inf.npz", 2, "sample 2: holds infinite"),
    ("verify tiny.onnx tiny.onnx --calib t_zero.npz", 2, "no samples"),
    ("verify tiny.onnx tiny.onnx --calib text.npz", 2, "not an .npz file"),
    ("verify m.onnx m.onnx --calib m_nan.npz", 2, "'x', sample 0: holds NaN"),
    ("verify custom.onnx custom.onnx", 3, CUSTOM),
    ("verify tiny.onnx", 2, "Missing argument"),
    # sensitivity
    ("sensitivity tiny.onnx", 2, "Missing option"),
    ("sensitivity tiny.onnx --calib t_nan.npz", 2, "sample 0: holds NaN"),
    ("sensitivity tiny.onnx --calib t_inf.npz", 2, "sample 2: holds infinite"),
    ("sensitivity tiny.onnx --calib t_zero.npz", 2, "no samples"),
    ("sensitivity tiny.onnx --calib text.npz", 2, "not an .npz file"),
    ("sensitivity custom.onnx " + TINY_CALIB, 3, CUSTOM),
    ("sensitivity tiny.onnx --ratios 0,1 " + TINY_CALIB, 2, "(0, 1)"),
    ("sensitivity tiny.onnx --ratios x " + TINY_CALIB, 2, "comma-separated"),
    ("sensitivity tiny.onnx --samples 0 " + TINY_CALIB, 2, "--samples"),
    ("sensitivity tiny.onnx --batch-size 0 " + TINY_CALIB, 2, "--batch-size"),
    ("sensitivity tiny.onnx -o tiny.onnx " + TINY_CALIB, 2, INPUT),
    ("sensitivity tiny.onnx -o t.npz " + TINY_CALIB, 2, INPUT),
    ("sensitivity tiny.onnx -o s.json --plot s.json " + TINY_CALIB, 2, SAME),
    ("sensitivity tiny.onnx -o '' " + TINY_CALIB, 2, "empty"),
    ("sensitivity tiny.onnx --workers 0 " + TINY_CALIB, 2, "--workers must be at least 1"),
    # sweep: nothing is written, the output folder is not made
    ("sweep tiny.onnx --grid ratio=0.5 -o out", 2, "Missing option"),
    ("sweep tiny.onnx --grid speed=1 -o out " + TINY_CALIB, 2, "unknown key 'speed'"),
    ("sweep tiny.onnx --grid ratio=0.5,x -o out " + TINY_CALIB, 2, "is not a number"),
    ("sweep tiny.onnx --grid ratio=1.5 -o out " + TINY_CALIB, 2, "--ratio must be in"),
    ("sweep tiny.onnx --grid ratio=0.5 --target-macs 0.5 -o out " + TINY_CALIB, 2,
     "give only one of"),
    ("sweep tiny.onnx --grid ratio=0.5 --workers 0 -o out " + TINY_CALIB, 2, "--workers"),
    ("sweep tiny.onnx --grid ratio=0.5 -o existing.onnx " + TINY_CALIB, 2,
     "is not a directory"),
    ("sweep tiny.onnx --grid ratio=0.5 -o '' " + TINY_CALIB, 2, "empty"),
    ("sweep tiny.onnx --grid ratio=0.5 -o nodir/out " + TINY_CALIB, 2, "parent directory"),
    ("sweep tiny.onnx --grid ratio=0.5 -o out --calib t_nan.npz", 2, "sample 0: holds NaN"),
    ("sweep tiny.onnx --grid ratio=0.5 -o out --calib missing.npz", 2, "no such"),
    ("sweep garbage.onnx --grid ratio=0.5 -o out " + TINY_CALIB, 2, "not a readable ONNX"),
    ("sweep tiny.onnx --grid ratio=0.5 --held-out 999 -o out " + TINY_CALIB, 2,
     "--held-out 999"),
    ("sweep custom.onnx --grid ratio=0.5 -o out " + TINY_CALIB, 3, CUSTOM),
    # bench
    ("bench custom.onnx --runs 1", 3, CUSTOM),
    ("bench tiny.onnx --runs 0", 2, "--runs"),
    ("bench tiny.onnx --threads -1", 2, "--threads"),
    ("bench tiny.onnx --batch-size 0", 2, "--batch-size"),
    ("bench tiny.onnx --provider NopeExecutionProvider --runs 1", 2, "not available"),
    ("bench missing.onnx", 2, "no such file"),
    ("bench garbage.onnx", 2, "not a readable ONNX"),
    ("bench tiny.onnx --input-shape x", 2, "--input-shape"),
    # finetune (and the chain from prune and sparsify)
    ("finetune tiny.onnx --teacher tiny.onnx --data t.npz -o tiny.onnx", 2, INPUT),
    ("finetune tiny.onnx --teacher tiny.onnx --data t.npz -o t.npz", 2, INPUT),
    ("finetune tiny.onnx --teacher tiny.onnx --data t.npz -o o.onnx --report o.onnx", 2,
     SAME),
    ("finetune tiny.onnx --teacher missing.onnx --data t.npz -o o.onnx", 2, "no such file"),
    ("finetune tiny.onnx --teacher tiny.onnx --data missing.npz -o o.onnx", 2, "no such"),
    ("finetune tiny.onnx --teacher tiny.onnx --data t_nan.npz -o o.onnx", 2, "NaN"),
    ("finetune tiny.onnx --teacher tiny.onnx --data t_shape.npz -o o.onnx", 2, "shape"),
    ("finetune tiny.onnx --teacher other.onnx --data t.npz -o o.onnx", 2, "shape"),
    ("finetune tiny.onnx --teacher tiny.onnx --data text.npz -o o.onnx", 2, "not an .npz"),
    ("finetune custom.onnx --teacher tiny.onnx --data t.npz -o o.onnx", 2, "MyOp"),
    ("finetune tiny.onnx --teacher tiny.onnx --data t.npz -o o.onnx --loss l1", 2, "--loss"),
    ("finetune tiny.onnx --teacher tiny.onnx --data t.npz -o o.onnx --val-fraction 1", 2,
     "--val-fraction"),
    ("finetune tiny.onnx --teacher tiny.onnx --data t.npz -o o.onnx --lr -1", 2, "--lr"),
    ("finetune tiny.onnx --teacher tiny.onnx --data t.npz -o o.onnx --minutes nan", 2,
     "--minutes"),
    ("finetune tiny.onnx --teacher tiny.onnx --data t.npz", 2, "Missing option"),
    ("prune tiny.onnx -o o.onnx --ratio 0.5 --finetune-steps 5", 2, "--calib"),
    ("sparsify tiny.onnx -o o.onnx --finetune-minutes 1", 2, "--calib"),
    # sparsify
    ("sparsify tiny.onnx -o tiny.onnx", 2, INPUT),
    ("sparsify tiny.onnx -o link.onnx", 2, INPUT),
    ("sparsify tiny.onnx -o ''", 2, "empty"),
    ("sparsify tiny.onnx -o o.onnx --report o.onnx", 2, SAME),
    ("sparsify tiny.onnx -o o.onnx --save-plan tiny.onnx", 2, INPUT),
    ("sparsify tiny.onnx -o o.onnx --plan plan.json --report plan.json", 2, INPUT),
    ("sparsify tiny.onnx -o o.onnx --sparse-indices int16", 2, "--storage sparse"),
    ("sparsify tiny.onnx -o o.onnx --storage sparse --sparse-indices int8", 2, "int64"),
    ("sparsify tiny.onnx -o o.onnx --storage bogus", 2, "unknown storage"),
    ("sparsify tiny.onnx -o o.onnx --all --criterion sparsegpt --calib t_nan.npz", 2,
     "sample 0: holds NaN"),
    ("sparsify tiny.onnx -o o.onnx --all --criterion wanda --calib t_inf.npz", 2,
     "sample 2: holds infinite"),
    ("sparsify tiny.onnx -o o.onnx --criterion wanda --calib t_zero.npz", 2, "no samples"),
    ("sparsify tiny.onnx -o o.onnx --criterion wanda --calib text.npz", 2, "not an .npz"),
    ("sparsify tiny.onnx -o o.onnx --criterion wanda", 2, "needs calibration"),
    ("sparsify tiny.onnx -o o.onnx --seed -1", 2, "--seed"),
    ("sparsify tiny.onnx -o o.onnx --batch-size 0", 2, "--batch-size"),
    ("sparsify tiny.onnx -o o.onnx --min-size -1", 2, "--min-size"),
    ("sparsify tiny.onnx -o o.onnx --pattern 3:2", 2, "pattern"),
    ("sparsify tiny.onnx -o o.onnx --pattern unstructured --sparsity nan", 2, "--sparsity"),
    ("sparsify tiny.onnx -o o.onnx --plan plan.json", 2, "plan"),
    ("sparsify custom.onnx -o existing.onnx --all --report r.json", 3, CUSTOM),
    ("sparsify custom.onnx -o o.onnx --all --criterion wanda " + TINY_CALIB, 3, CUSTOM),
    ("sparsify m.onnx -o s.onnx --criterion sparsegpt --calib m_nan.npz --all", 2,
     "'x', sample 0: holds NaN"),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_folder(tmp_path_factory.mktemp("inputs"))


@pytest.fixture
def folder(template, tmp_path, monkeypatch):
    work = copy_folder(template, tmp_path / "work")
    monkeypatch.chdir(work)
    return work


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("command, code, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_changes_no_file(folder, command, code, words):
    before = snapshot(folder)
    result = CliRunner().invoke(main, shlex.split(command))
    lines = error_lines(result)
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error: "), lines
    assert words in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert snapshot(folder) == before


def test_the_matrix_covers_every_command_with_many_cases():
    commands = {c[0].split()[0] for c in CASES}
    assert commands == {"inspect", "prune", "verify", "sensitivity", "bench", "sparsify",
                        "sweep", "finetune"}
    assert len(CASES) >= 80

