"""Data-aware sparsity on convolutions, against references written here in numpy:
Wanda's |w|·‖x‖ with each output row seeing its own group's channels, SparseGPT on
the Hessian of explicitly unfolded input patches (im2col), and the magnitude fallback
SparseGPT takes for grouped convolutions."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import GraphBuilder, const_values

import onnxprune
from onnxprune.sparsity.pattern import parse_pattern, violations
from onnxprune.sparsity.weight_criteria import sparsegpt

KERNEL, STRIDE, PAD = 3, 2, 1


def conv_model(group: int = 1, channels: int = 16, outputs: int = 16, seed: int = 21):
    """x[n, 16, 7, 7] → Conv 3×3, stride 2, pads 1 (no bias), and its weight name."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", ["n", channels, 7, 7])
    w = b.weight(outputs, channels // group, KERNEL, KERNEL)
    y = b.op("Conv", [x, w], group=group, strides=[STRIDE, STRIDE], pads=[PAD] * 4)
    return b.build(y), w


def calibration(samples: int = 32, channels: int = 16, seed: int = 22) -> np.ndarray:
    """Inputs whose channels differ in scale by two orders of magnitude, so that input
    norms decide differently from weight magnitudes."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.1, 10, channels)[rng.permutation(channels)]
    data = rng.standard_normal((samples, channels, 7, 7)) * scale[None, :, None, None]
    return data.astype(np.float32)


def keep_top(scores: np.ndarray, n: int = 2, m: int = 4) -> np.ndarray:
    """Keep mask of the n highest scores in every m consecutive entries of the last axis."""
    groups = scores.reshape(*scores.shape[:-1], -1, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return keep.reshape(scores.shape)


def wanda_reference(weights: np.ndarray, data: np.ndarray, group: int) -> np.ndarray:
    """2:4 along each filter's input channels for every kernel position, by |w|·‖x_c‖
    with ‖x_c‖ over every sample and position of the channel row k reads."""
    norms = np.sqrt(np.square(data.astype(np.float64)).sum(axis=(0, 2, 3)))
    per_group = weights.shape[1]
    rows = np.stack([norms[(k // (len(weights) // group)) * per_group:][:per_group]
                     for k in range(len(weights))])  # [K, C/g]
    scores = np.abs(weights.astype(np.float64)) * rows[:, :, None, None]
    keep = np.moveaxis(keep_top(np.moveaxis(scores, 1, -1)), -1, 1)
    return np.where(keep, weights, 0)


def patches(data: np.ndarray) -> np.ndarray:
    """Every input patch the convolution multiplies, one row per output position,
    columns in (r, s, c) order: the weight's matrix view [K, R·S·C]."""
    padded = np.pad(data, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    size = (data.shape[2] + 2 * PAD - KERNEL) // STRIDE + 1
    rows = [padded[n, :, i * STRIDE:i * STRIDE + KERNEL, j * STRIDE:j * STRIDE + KERNEL]
            .transpose(1, 2, 0).reshape(-1)
            for n in range(len(data)) for i in range(size) for j in range(size)]
    return np.array(rows, np.float64)


def sparsify(model, criterion: str, data: np.ndarray):
    return onnxprune.sparsify(model, "2:4", criterion=criterion, calib=[{"x": data}],
                              all_layers=True, batch_size=8)


@pytest.mark.parametrize("group", [1, 2, 4])
def test_wanda_on_a_convolution_weighs_each_weight_by_its_channel_norm(group):
    model, w = conv_model(group)
    data = calibration()
    out, report = sparsify(model, "wanda", data)
    weights = const_values(model, w)
    after = const_values(out, w)
    np.testing.assert_array_equal(after, wanda_reference(weights, data, group))
    assert report.layers[0].criterion == "wanda" and report.layers[0].axis == 1
    magnitude, _ = onnxprune.sparsify(model, "2:4", all_layers=True)
    assert np.mean((const_values(magnitude, w) == 0) != (after == 0)) > 0.1


def test_sparsegpt_on_a_convolution_solves_on_the_unfolded_input_patches():
    model, w = conv_model()
    data = calibration()
    out, report = sparsify(model, "sparsegpt", data)
    assert report.layers[0].criterion == "sparsegpt"
    weights = const_values(model, w)
    rows = patches(data)  # 32 samples × 16 positions: every one is sampled
    hessian = rows.T @ rows / len(rows)
    view = np.moveaxis(weights, 1, -1).reshape(len(weights), -1)  # [K, R·S·C]
    spec = parse_pattern("2:4")
    expected = sparsegpt(view, hessian, spec, cross=hessian)
    after = np.moveaxis(const_values(out, w), 1, -1).reshape(len(weights), -1)
    assert violations(after, spec) == 0
    np.testing.assert_array_equal(after == 0, expected == 0)
    np.testing.assert_allclose(after, expected, rtol=1e-3, atol=1e-4)
    # the update pays: the layer's output error is well below magnitude pruning's
    magnitude, _ = onnxprune.sparsify(model, "2:4", all_layers=True)
    pruned = np.moveaxis(const_values(magnitude, w), 1, -1).reshape(len(weights), -1)
    error = np.linalg.norm(rows @ (view - after).T)
    assert error < 0.7 * np.linalg.norm(rows @ (view - pruned).T)


def test_sparsegpt_falls_back_to_magnitude_on_a_grouped_convolution():
    model, w = conv_model(group=2)
    out, report = sparsify(model, "sparsegpt", calibration())
    assert report.layers[0].criterion == "magnitude (grouped or non-2-D convolution)"
    weights = const_values(model, w)
    keep = np.moveaxis(keep_top(np.moveaxis(np.abs(weights), 1, -1)), -1, 1)
    np.testing.assert_array_equal(const_values(out, w), np.where(keep, weights, 0))
