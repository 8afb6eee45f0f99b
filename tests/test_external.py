"""Models with external data: read lazily, written back as external data, checked by
path past the size limit, and never written over their inputs' data files."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune import datafiles, external
from onnxprune import model as model_io
from onnxprune.errors import InputError
from onnxprune.memory import check_level, layer_need, level_need, parse_size
from onnxprune.targets import onnxruntime as ort_target
from onnxprune.verify import run

HIDDEN = 64


def mlp(blocks: int = 2, seed: int = 0) -> onnx.ModelProto:
    """Residual MLP blocks of two MatMuls (hidden 64, intermediate 128) with biases."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for b in range(blocks):
        for name, shape in ((f"up{b}", (HIDDEN, 128)), (f"bu{b}", (128,)),
                            (f"down{b}", (128, HIDDEN))):
            inits.append(numpy_helper.from_array(
                rng.standard_normal(shape).astype(np.float32) / 8, name))
        nodes += [helper.make_node("MatMul", [x, f"up{b}"], [f"m{b}"]),
                  helper.make_node("Add", [f"m{b}", f"bu{b}"], [f"a{b}"]),
                  helper.make_node("Relu", [f"a{b}"], [f"r{b}"]),
                  helper.make_node("MatMul", [f"r{b}", f"down{b}"], [f"d{b}"]),
                  helper.make_node("Add", [x, f"d{b}"], [f"h{b}"])]
        x = f"h{b}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, HIDDEN])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [2, 8, HIDDEN])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_external(model: onnx.ModelProto, path: Path, data: str = "weights.bin") -> Path:
    """Save with every tensor external (onnx's size threshold lowered to 0)."""
    onnx.save_model(model, str(path), save_as_external_data=True, location=data,
                    size_threshold=0)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_values(path: Path) -> dict[str, np.ndarray]:
    full = onnx.load(str(path), load_external_data=True)
    return {t.name: numpy_helper.to_array(t) for t in full.graph.initializer}


def external_names(path: Path) -> set[str]:
    bare = onnx.load(str(path), load_external_data=False)
    return {t.name for t in bare.graph.initializer if external.is_external(t)}


def test_read_is_lazy_and_maps_values(tmp_path):
    path = write_external(mlp(), tmp_path / "m.onnx")
    proto = model_io.load(path)
    assert all(external.is_external(t) for t in proto.graph.initializer)
    assert all(not t.raw_data for t in proto.graph.initializer)
    up = next(t for t in proto.graph.initializer if t.name == "up0")
    values = external.array(up)
    assert isinstance(values, np.memmap) and not values.flags.writeable
    assert np.array_equal(values, numpy_helper.to_array(mlp().graph.initializer[0]))


def test_prune_external_equals_in_memory(tmp_path):
    path = write_external(mlp(), tmp_path / "m.onnx")
    before = digest(tmp_path / "weights.bin")
    lazy, report = onnxprune.prune(path, ratio=0.5, round_to=1)
    model_io.save(lazy, tmp_path / "p.onnx")
    eager, _ = onnxprune.prune(mlp(), ratio=0.5, round_to=1)
    assert report.params_after < report.params_before
    large = [t for t in lazy.graph.initializer if t.name.startswith(("up", "down"))]
    assert large and all(external.is_external(t) and not t.raw_data for t in large)
    written = stored_values(tmp_path / "p.onnx")
    expected = {t.name: numpy_helper.to_array(t) for t in eager.graph.initializer}
    assert written.keys() == expected.keys()
    for name, value in expected.items():
        assert np.array_equal(written[name], value), name
    assert (tmp_path / "p.onnx.data").is_file()
    assert {"up0", "down0", "up1", "down1"} <= external_names(tmp_path / "p.onnx")
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 8, HIDDEN)).astype(np.float32)}
    got = run(str(tmp_path / "p.onnx"), feeds)
    want = run(eager.SerializeToString(), feeds)
    assert np.array_equal(got["h1"], want["h1"])
    assert digest(tmp_path / "weights.bin") == before


def test_sparsify_external_equals_in_memory(tmp_path):
    path = write_external(mlp(), tmp_path / "m.onnx")
    before = digest(tmp_path / "weights.bin")
    lazy, report = onnxprune.sparsify(path, pattern="2:4", all_layers=True)
    model_io.save(lazy, tmp_path / "s.onnx")
    eager, _ = onnxprune.sparsify(mlp(), pattern="2:4", all_layers=True)
    assert sum(layer.sparsified for layer in report.layers) == 4
    written = stored_values(tmp_path / "s.onnx")
    for tensor in eager.graph.initializer:
        assert np.array_equal(written[tensor.name], numpy_helper.to_array(tensor))
    assert "up0" in external_names(tmp_path / "s.onnx")
    assert np.count_nonzero(written["up0"]) == written["up0"].size // 2
    assert digest(tmp_path / "weights.bin") == before


def test_refit_external_equals_in_memory(tmp_path):
    path = write_external(mlp(), tmp_path / "m.onnx")
    calib = [{"x": np.random.default_rng(2).standard_normal((2, 8, HIDDEN)).astype(np.float32)}]
    lazy, _ = onnxprune.prune(path, ratio=0.5, round_to=1, calib=calib)
    eager, _ = onnxprune.prune(mlp(), ratio=0.5, round_to=1, calib=calib)
    model_io.save(lazy, tmp_path / "p.onnx")
    written = stored_values(tmp_path / "p.onnx")
    for tensor in eager.graph.initializer:
        assert np.array_equal(written[tensor.name], numpy_helper.to_array(tensor)), tensor.name


def test_cli_prune_external_writes_external(tmp_path):
    write_external(mlp(), tmp_path / "m.onnx")
    before = digest(tmp_path / "weights.bin")
    result = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(tmp_path / "m.onnx"),
                             "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.onnx.data").is_file()
    onnx.checker.check_model(str(tmp_path / "out.onnx"), full_check=True)
    assert digest(tmp_path / "weights.bin") == before
    assert not list(tmp_path.glob(".onnxprune-*"))


def test_output_never_replaces_an_input_data_file(tmp_path):
    path = write_external(mlp(), tmp_path / "m.onnx", data="out.onnx.data")
    before = digest(tmp_path / "out.onnx.data")
    pruned, _ = onnxprune.prune(path, ratio=0.5, round_to=1)
    with pytest.raises(InputError, match="external data"):
        model_io.save(pruned, tmp_path / "out.onnx")
    assert digest(tmp_path / "out.onnx.data") == before
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("command", [["prune"], ["sparsify", "--criterion", "wanda"]])
def test_cli_refuses_an_input_data_file_as_output_before_work(tmp_path, command):
    """Refused before the calibration data is read (it does not fit the model)."""
    write_external(mlp(), tmp_path / "m.onnx", data="out.onnx.data")
    before = digest(tmp_path / "out.onnx.data")
    np.savez(tmp_path / "bad.npz", nope=np.zeros((2, 3), np.float32))
    result = subprocess.run([sys.executable, "-m", "onnxprune", command[0],
                             str(tmp_path / "m.onnx"), *command[1:], "-o",
                             str(tmp_path / "out.onnx"), "--calib", str(tmp_path / "bad.npz"),
                             "--report", str(tmp_path / "r.json")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "external data of an input" in result.stderr
    assert digest(tmp_path / "out.onnx.data") == before
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "r.json").exists()


def test_external_data_outside_the_folder_is_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write_external(mlp(), tmp_path / "sub" / "m.onnx")
    bare = onnx.load(str(path), load_external_data=False)
    for entry in bare.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../weights.bin"
    (tmp_path / "sub" / "weights.bin").rename(tmp_path / "weights.bin")
    (tmp_path / "sub" / "m.onnx").write_bytes(bare.SerializeToString())
    with pytest.raises(InputError, match="outside"):
        model_io.load(tmp_path / "sub" / "m.onnx")


def test_linked_files_read_like_the_hub_cache_stores_them(tmp_path):
    """A model folder of symbolic links into a store elsewhere (as a hub cache keeps
    downloads) reads as the files the links name."""
    store, folder = tmp_path / "blobs", tmp_path / "snapshot"
    store.mkdir()
    folder.mkdir()
    write_external(mlp(), store / "m.onnx")
    (folder / "m.onnx").symlink_to(store / "m.onnx")
    (folder / "weights.bin").symlink_to(store / "weights.bin")
    pruned, _ = onnxprune.prune(folder / "m.onnx", ratio=0.5, round_to=1)
    eager, _ = onnxprune.prune(mlp(), ratio=0.5, round_to=1)
    model_io.save(pruned, tmp_path / "p.onnx")
    written = stored_values(tmp_path / "p.onnx")
    for tensor in eager.graph.initializer:
        assert np.array_equal(written[tensor.name], numpy_helper.to_array(tensor))


def test_large_models_are_checked_by_path(tmp_path, monkeypatch):
    """Past the size limit (faked: 10 kB) the checker and onnxruntime get a path with
    external data, never the serialized model, and the output is written split."""
    monkeypatch.setattr(model_io, "EXTERNAL_DATA_THRESHOLD", 10_000)
    monkeypatch.setattr(ort_target, "EXTERNAL_DATA_THRESHOLD", 10_000)
    checked = []
    real = onnx.checker.check_model

    def recording(model, *args, **kwargs):
        checked.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx.checker, "check_model", recording)
    pruned, _ = onnxprune.prune(mlp(), ratio=0.5, round_to=1)
    assert checked and all(isinstance(model, str) for model in checked)
    model_io.save(pruned, tmp_path / "p.onnx")
    assert (tmp_path / "p.onnx.data").is_file()
    assert external_names(tmp_path / "p.onnx")


def test_small_models_stay_one_file(tmp_path):
    model_io.save(mlp(), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx.data").exists()
    assert not external_names(tmp_path / "m.onnx")


def test_parse_size():
    assert parse_size("4GB") == 4 * 10**9
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1.5g") == 1_500_000_000
    assert parse_size("2048") == 2048
    for bad in ("", "4 parsecs", "-1GB", "0"):
        with pytest.raises(InputError):
            parse_size(bad)


def test_level_accounting_names_the_largest_layer():
    needs = [layer_need("a", 128, 64, "lsq"), layer_need("b", 256, 512, "lsq", rows=10)]
    assert needs[1].statistics == 8 * 513 * 513 + 8 * 512 * 513 + 8 * 256 * 512
    assert layer_need("c", 256, 512, "wanda").statistics == 8 * 513
    assert needs[1].activations == 2 * 4 * 10 * 512
    check_level(needs, level_need(needs))
    with pytest.raises(InputError, match="layer b"):
        check_level(needs, level_need(needs) - 1)


def test_max_memory_too_small_is_refused_before_work(tmp_path):
    write_external(mlp(), tmp_path / "m.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.zeros((4, 8, HIDDEN), np.float32))
    for command in (["prune", "--ratio", "0.5", "--calib", str(calib)],
                    ["sparsify", "--criterion", "sparsegpt", "--calib", str(calib), "--all"]):
        result = subprocess.run([sys.executable, "-m", "onnxprune", command[0],
                                 str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"),
                                 *command[1:], "--max-memory", "100kB"],
                                capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("onnxprune: error: ")
        assert "--max-memory" in lines[0] and "layer" in lines[0]
        assert not (tmp_path / "o.onnx").exists()


def test_max_memory_that_fits_changes_nothing(tmp_path):
    calib = [{"x": np.random.default_rng(2).standard_normal((2, 8, HIDDEN)).astype(np.float32)}]
    capped, _ = onnxprune.prune(mlp(), ratio=0.5, calib=calib, max_memory=parse_size("1GB"))
    free, _ = onnxprune.prune(mlp(), ratio=0.5, calib=calib)
    for a, b in zip(capped.graph.initializer, free.graph.initializer, strict=True):
        assert np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


def test_bad_max_memory_is_a_usage_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "onnxprune", "sparsify", "m.onnx", "-o",
                             str(tmp_path / "o.onnx"), "--max-memory", "lots"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("onnxprune: error: ") and "lots" in result.stderr
    with pytest.raises(InputError, match="max-memory"):
        onnxprune.PruneOptions(ratio=0.5, max_memory=0)


def test_write_streams_without_changing_the_model(tmp_path):
    model = mlp()
    before = model.SerializeToString()
    datafiles.write(model, tmp_path / "w.onnx", "w.onnx.data")
    assert model.SerializeToString() == before
    bare = onnx.load(str(tmp_path / "w.onnx"), load_external_data=False)
    offsets = [int(e.value) for t in bare.graph.initializer for e in t.external_data
               if e.key == "offset"]
    assert offsets and all(offset % external.ALIGN == 0 for offset in offsets)
    for tensor in model.graph.initializer:
        assert np.array_equal(stored_values(tmp_path / "w.onnx")[tensor.name],
                              numpy_helper.to_array(tensor))
