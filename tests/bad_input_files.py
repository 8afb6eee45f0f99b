"""The folder of good and bad inputs the bad-input tests run commands in, and a
snapshot of a folder (every file's name and bytes, links as links)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
from helpers import GraphBuilder
from onnx import TensorProto, helper, numpy_helper

DEMO = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"


def two_convs(channels_in: int = 4) -> onnx.ModelProto:
    """x[1, C, 8, 8] → Conv 16 → Relu → Conv 8 (same names whatever C)."""
    builder = GraphBuilder(seed=0)
    x = builder.input("x", [1, channels_in, 8, 8])
    hidden = builder.op("Relu", [builder.conv(x, channels_in, 16)])
    return builder.build(builder.conv(hidden, 16, 8))


def with_custom_op(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its output passed through `MyOp` of domain `custom.ops`."""
    custom = onnx.ModelProto()
    custom.CopyFrom(model)
    graph = custom.graph
    graph.node.append(helper.make_node("MyOp", [graph.output[0].name], ["custom_out"],
                                       name="custom1", domain="custom.ops"))
    out = helper.make_tensor_value_info("custom_out", TensorProto.FLOAT, [1, 8, 8, 8])
    del graph.output[:]
    graph.output.append(out)
    custom.opset_import.append(helper.make_opsetid("custom.ops", 1))
    onnx.checker.check_model(custom)
    return custom


def with_loop(seed: int = 0) -> onnx.ModelProto:
    """A conv output read inside a Loop body (outer scope), then another conv."""
    builder = GraphBuilder(seed=seed)
    conv = builder.conv(builder.input("x", [1, 4, 8, 8]), 4, 16)
    spec = [1, 16, 8, 8]
    body = helper.make_graph(
        [helper.make_node("Add", [conv, "carried"], ["carried_out"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried", TensorProto.FLOAT, spec)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, spec)])
    looped = builder.op("Loop", [builder.const(np.array(2, np.int64)),
                                 builder.const(np.array(True)), conv], body=body)
    out = builder.conv(looped, 16, 8)
    graph = helper.make_graph(builder.nodes, "loop", builder.inputs,
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                             [1, 8, 8, 8])], builder.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def with_nan_weight(model: onnx.ModelProto) -> onnx.ModelProto:
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    first = broken.graph.initializer[0]
    values = numpy_helper.to_array(first).copy()
    values.flat[0] = np.nan
    first.CopyFrom(numpy_helper.from_array(values, first.name))
    return broken


def calibration_files(folder: Path, shape: tuple[int, ...], prefix: str, seed: int) -> None:
    """`{prefix}.npz` (3 samples), `_nan` (NaN in sample 0), `_inf` (inf in sample 2),
    `_zero` (no samples)."""
    rng = np.random.default_rng(seed)
    good = rng.standard_normal((3, *shape[1:])).astype(np.float32)
    np.savez(folder / f"{prefix}.npz", x=good)
    nan, inf = good.copy(), good.copy()
    nan[0].flat[5] = np.nan
    inf[2].flat[7] = -np.inf
    np.savez(folder / f"{prefix}_nan.npz", x=nan)
    np.savez(folder / f"{prefix}_inf.npz", x=inf)
    np.savez(folder / f"{prefix}_zero.npz", x=good[:0])


def build_folder(folder: Path) -> Path:
    """Every input the bad-input matrix names (see test_bad_input.py)."""
    from onnxprune import api

    folder.mkdir(parents=True, exist_ok=True)
    tiny = two_convs()
    onnx.save(tiny, folder / "tiny.onnx")
    onnx.save(two_convs(3), folder / "other.onnx")
    onnx.save(with_custom_op(tiny), folder / "custom.onnx")
    onnx.save(with_nan_weight(tiny), folder / "nanw.onnx")
    invalid = onnx.ModelProto()
    invalid.CopyFrom(tiny)
    invalid.graph.node[1].input[0] = "does_not_exist"
    onnx.save(invalid, folder / "invalid.onnx")
    shutil.copyfile(DEMO, folder / "m.onnx")
    calibration_files(folder, (1, 4, 8, 8), "t", 1)
    np.savez(folder / "m_nan.npz", x=np.full((2, 3, 48, 192), np.nan, np.float32))
    np.savez(folder / "t_shape.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    (folder / "text.npz").write_text("not numbers\n")
    (folder / "garbage.onnx").write_bytes(b"\x08\x07not a model")
    (folder / "empty.onnx").write_bytes(b"")
    (folder / "notes.txt").write_text("notes\n")
    (folder / "adir").mkdir(exist_ok=True)
    (folder / "existing.onnx").write_bytes(b"an earlier result")
    (folder / "r.json").write_text('{"earlier": true}\n')
    _, report = api.prune(tiny, 0.5, round_to=1)
    (folder / "plan.json").write_text(json.dumps(report.plan_document))
    (folder / "bad_plan.json").write_text("{not json")
    os.symlink("tiny.onnx", folder / "link.onnx")
    return folder


def copy_folder(template: Path, target: Path) -> Path:
    """A private copy of the template (links kept) with `hard.onnx`, a hard link to
    `tiny.onnx`."""
    shutil.copytree(template, target, symlinks=True)
    os.link(target / "tiny.onnx", target / "hard.onnx")
    return target


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry under `folder` (hidden ones too): bytes of files, targets of links,
    and folders by name."""
    found: dict[str, object] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = "folder"
            else:
                found[key] = path.read_bytes()
    return found
