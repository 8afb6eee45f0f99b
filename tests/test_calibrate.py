"""Calibration data, activation statistics and the data-aware criteria, on graphs
whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import GraphBuilder

import onnxprune
from onnxprune import calibrate
from onnxprune.errors import InputError

RNG = np.random.default_rng(0)


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


def feeds(count=4, batch=2):
    return [{"x": RNG.standard_normal((batch, 3, 8, 8)).astype(np.float32)}
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


def test_wanda_weighs_activations_by_the_consumer_weights():
    model, w2 = two_layer()
    import onnx

    weights = {t.name: t for t in model.graph.initializer}
    values = np.ones((4, 8, 1, 1), np.float32)
    values[:, [0, 4]] = 1e-3  # equal activations, tiny consumer weights
    weights[w2].CopyFrom(onnx.numpy_helper.from_array(values, w2))
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
    x = RNG.standard_normal((10, 3, 8, 8)).astype(np.float32)
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


def test_cli_accepts_npz_calibration(tmp_path):
    from click.testing import CliRunner

    from onnxprune import model as model_io
    from onnxprune.cli import main

    model, _ = two_layer()
    model_io.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=RNG.standard_normal((5, 3, 8, 8)).astype(np.float32))
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "m.onnx"), "-o",
                                       str(tmp_path / "p.onnx"), "--ratio", "0.5",
                                       "--criterion", "wanda", "--calib", str(tmp_path / "c.npz"),
                                       "--input-shape", "x:1x3x8x8", "--round-to", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.onnx").exists()


def write_images(directory, count=6, size=(40, 60)):
    from PIL import Image

    directory.mkdir()
    for k in range(count):
        colour = RNG.integers(0, 256, (size[0], size[1], 3)).astype(np.uint8)
        Image.fromarray(colour).save(directory / f"{k}.png")
    Image.new("RGB", size[::-1], (255, 0, 0)).save(directory / "red.png")


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
    from click.testing import CliRunner

    from onnxprune.cli import main

    write_images(tmp_path / "imgs", size=(48, 192))
    demo = "models/ppocr_mobile_cls.onnx"
    args = ["prune", demo, "-o", str(tmp_path / "p.onnx"), "--ratio", "0.3", "--calib",
            str(tmp_path / "imgs"), "--image-size", "48x192", "--image-mean", "0.5,0.5,0.5",
            "--image-std", "0.5,0.5,0.5", "--input-shape", "x:1x3x48x192"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(main, args[:-2] + ["--image-size", "48"])
    assert bad.exit_code == 2 and "--image-size" in bad.stderr


def test_images_need_a_size_when_the_input_has_none(tmp_path):
    write_images(tmp_path / "imgs")
    b = GraphBuilder()
    x = b.input("x", ["n", 3, "h", "w"])
    model = b.build(b.conv(b.op("Relu", [b.conv(x, 3, 8)]), 8, 2))
    with pytest.raises(InputError, match="image size"):
        calibrate.batches(tmp_path / "imgs", model)
