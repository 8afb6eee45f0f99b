"""Calibration data, activation statistics and the data-aware criteria, on graphs
whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import GraphBuilder

import onnxprune
from onnxprune import calibrate
from onnxprune.errors import InputError


def two_layer(bias=None, scale=None):
    """x → Conv(3→8) (+bias) → Relu → Conv(8→4); returns model and conv2 weight name."""
    b = GraphBuilder(seed=5)
    x = b.input("x", ["n", 3, 8, 8])
    w1 = b.rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    if scale is not None:
        w1 *= np.asarray(scale, np.float32)[:, None, None, None]
    bias = np.zeros(8, np.float32) if bias is None else np.asarray(bias, np.float32)
    h = b.op("Relu", [b.op("Conv", [x, b.const(w1), b.const(bias)], pads=[1, 1, 1, 1])])
    w2 = b.const(np.ones((4, 8, 1, 1), np.float32))
    return b.build(b.op("Conv", [h, w2])), w2


def feeds(count=4, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)}
            for _ in range(count)]


def removed(report):
    return next(g for g in report.groups if not g.blocked).removed


def test_apoz_removes_the_channels_that_are_always_zero_first():
    model, _ = two_layer(bias=[0, 0, -1e4, 0, 0, -1e4, 0, 0])
    _, report = onnxprune.prune(model, 0.25, criterion="apoz", calib=feeds(), round_to=1)
    assert removed(report) == [2, 5]


def test_activation_removes_the_weakest_channels():
    model, _ = two_layer(scale=[1, 1, 1, 0.01, 1, 1, 0.02, 1])
    _, report = onnxprune.prune(model, 0.25, criterion="activation", calib=feeds(),
                                round_to=1)
    assert removed(report) == [3, 6]


def test_variance_removes_the_constant_channels():
    model, _ = two_layer(bias=[0, 50, 0, 0, 0, 0, 0, 50], scale=[1, 1e-4, 1, 1, 1, 1, 1, 1e-4])
    _, report = onnxprune.prune(model, 0.25, criterion="variance", calib=feeds(), round_to=1)
    assert removed(report) == [1, 7]


def weak_consumer_model():
    """`two_layer()` whose consumer reads channels 0 and 4 through tiny weights."""
    import onnx

    model, w2 = two_layer()
    weights = {t.name: t for t in model.graph.initializer}
    values = np.ones((4, 8, 1, 1), np.float32)
    values[:, [0, 4]] = 1e-3  # equal activations, tiny consumer weights
    weights[w2].CopyFrom(onnx.numpy_helper.from_array(values, w2))
    return model


def test_wanda_weighs_activations_by_the_consumer_weights():
    model = weak_consumer_model()
    _, report = onnxprune.prune(model, 0.25, criterion="wanda", calib=feeds(), round_to=1)
    assert removed(report) == [0, 4]


def test_statistics_are_exact_running_sums():
    model, _ = two_layer()
    data = feeds(3)
    stream = calibrate.batches(data, model)
    stats = calibrate.collect(model, [("x", 1)], stream)[("x", 1)]
    stacked = np.concatenate([f["x"] for f in data])
    per_channel = np.moveaxis(stacked, 1, 0).reshape(3, -1)
    assert np.allclose(stats.mean, per_channel.mean(1))
    assert np.allclose(stats.variance, per_channel.var(1))
    assert np.allclose(stats.mean_abs, np.abs(per_channel).mean(1))


def test_statistics_in_several_passes_equal_one_pass():
    model, _ = two_layer()
    stream = calibrate.batches(feeds(2), model)
    slots = [("x", 1), (model.graph.node[0].output[0], 1)]
    one = calibrate.collect(model, slots, stream)
    many = calibrate.collect(model, slots, stream, budget=1)
    for slot in slots:
        assert np.allclose(one[slot].mean_sq, many[slot].mean_sq)


def test_npz_file_and_directory(tmp_path):
    model, _ = two_layer()
    x = np.random.default_rng(1).standard_normal((10, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=x[:6])
    np.savez(tmp_path / "b.npz", x=x[6:])
    for source, sizes in ((tmp_path / "a.npz", [4, 2]), (tmp_path, [4, 3])):
        stream = calibrate.batches(source, model, samples=7, batch_size=4)
        assert [len(f["x"]) for f in stream()] == sizes


@pytest.mark.parametrize("data, words", [
    ({"y": np.zeros((2, 3, 8, 8), np.float32)}, "no such input"),
    ({"x": np.zeros((2, 3, 9, 8), np.float32)}, "expects"),
    ({"x": np.zeros((2, 3, 8), np.float32)}, "expects"),
    ({"x": np.zeros((2, 3, 8, 8), np.int64)}, "float32"),
])
def test_calibration_that_does_not_fit_names_the_input(data, words):
    model, _ = two_layer()
    with pytest.raises(InputError, match=words):
        onnxprune.prune(model, 0.25, criterion="apoz", calib=[data])


def test_missing_calibration_is_a_clear_error(tmp_path):
    model, _ = two_layer()
    with pytest.raises(InputError, match="needs calibration data"):
        onnxprune.prune(model, 0.25, criterion="wanda")
    with pytest.raises(InputError, match="no such calibration"):
        onnxprune.prune(model, 0.25, criterion="wanda", calib=tmp_path / "none.npz")
    with pytest.raises(InputError, match="empty"):
        onnxprune.prune(model, 0.25, criterion="wanda", calib=[])


def initializers(model) -> dict[str, np.ndarray]:
    import onnx

    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def assert_same_weights(written, expected, rtol=1e-5):
    got, want = initializers(written), initializers(expected)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].shape == value.shape
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=1e-6, err_msg=name)


def test_cli_accepts_npz_calibration(tmp_path):
    import json

    import onnx
    from click.testing import CliRunner

    from onnxprune import model as model_io
    from onnxprune.cli import main

    model = weak_consumer_model()
    model_io.save(model, tmp_path / "m.onnx")
    data = np.random.default_rng(2).standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=data)
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "m.onnx"), "-o",
                                       str(tmp_path / "p.onnx"), "--ratio", "0.25",
                                       "--calib", str(tmp_path / "c.npz"), "--batch-size", "2",
                                       "--input-shape", "x:1x3x8x8", "--round-to", "1",
                                       "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["criterion"], report["reconstruct"]) == ("wanda", "lsq")  # calib defaults
    assert [g["removed"] for g in report["groups"] if g["removed"]] == [[0, 4]]
    # the file's data reached the planner and the refit: the API on the same batches agrees
    batches = [{"x": data[i:i + 2]} for i in range(0, 5, 2)]
    expected, _ = onnxprune.prune(model, 0.25, calib=batches, round_to=1,
                                  input_shapes={"x": (1, 3, 8, 8)})
    assert_same_weights(onnx.load(str(tmp_path / "p.onnx")), expected)


def write_images(directory, count=6, size=(40, 60), seed=0) -> list[np.ndarray]:
    """`count` random pictures (and a red one last, in name order) as PNG files; returns
    their pixels, in name order."""
    from PIL import Image

    directory.mkdir()
    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, (size[0], size[1], 3)).astype(np.uint8)
              for _ in range(count)] + [np.tile(np.uint8([255, 0, 0]), (*size, 1))]
    names = [f"{k}.png" for k in range(count)] + ["red.png"]
    for name, values in zip(names, pixels, strict=True):
        Image.fromarray(values).save(directory / name)
    return [pixels[names.index(n)] for n in sorted(names)]


def test_image_folder_is_resized_normalized_and_laid_out(tmp_path):
    from onnxprune.images import ImageOptions

    model, _ = two_layer()  # input [n, 3, 8, 8]
    write_images(tmp_path / "imgs")
    options = ImageOptions(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    stream = calibrate.batches(tmp_path / "imgs", model, batch_size=4, images=options)
    data = np.concatenate([f["x"] for f in stream()])
    assert data.shape == (7, 3, 8, 8) and data.dtype == np.float32
    red = data[-1]  # files are read in name order; red.png comes last
    assert np.allclose(red[0], 1.0) and np.allclose(red[1:], -1.0)
    bgr = calibrate.batches(tmp_path / "imgs", model, images=ImageOptions(bgr=True))
    assert np.allclose(np.concatenate([f["x"] for f in bgr()])[-1][2], 1.0)


def test_image_folder_through_the_cli(tmp_path):
    import onnx
    from click.testing import CliRunner

    from onnxprune.cli import main

    pixels = write_images(tmp_path / "imgs", size=(48, 192))
    demo = "models/ppocr_mobile_cls.onnx"
    args = ["prune", demo, "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "--calib",
            str(tmp_path / "imgs"), "--image-size", "48x192", "--image-mean", "0.5,0.5,0.5",
            "--image-std", "0.5,0.5,0.5", "--reconstruct", "bias", "--input-shape",
            "x:1x3x48x192"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # the same pictures scaled to [0, 1], normalized and laid out NCHW by hand
    x = (np.stack(pixels).astype(np.float32) / 255 - 0.5) / 0.5
    batch = {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))}
    expected, _ = onnxprune.prune(demo, 0.3, calib=[batch], reconstruct="bias",
                                  input_shapes={"x": (1, 3, 48, 192)})
    assert_same_weights(onnx.load(str(tmp_path / "p.onnx")), expected, rtol=1e-4)
    bad = CliRunner().invoke(main, args[:-2] + ["--image-size", "48"])
    assert bad.exit_code == 2 and "--image-size" in bad.stderr


def test_images_need_a_size_when_the_input_has_none(tmp_path):
    write_images(tmp_path / "imgs")
    b = GraphBuilder()
    x = b.input("x", ["n", 3, "h", "w"])
    model = b.build(b.conv(b.op("Relu", [b.conv(x, 3, 8)]), 8, 2))
    with pytest.raises(InputError, match="image size"):
        calibrate.batches(tmp_path / "imgs", model)
