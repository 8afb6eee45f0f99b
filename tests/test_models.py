"""Every model of the structural zoo prunes at --ratio 0.5 to a valid model that is
mask-equivalent to the original and loses at least the MACs it lost when these floors
were measured."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_files import LIGHT, light_path, real_inputs, real_path, zoo_model, zoo_names
from stability import assert_stable

from onnxprune import model as model_io
from onnxprune import prune
from onnxprune.depgraph import analyze
from onnxprune.rewrite import mask_sinks
from onnxprune.shapes import sample_shapes
from onnxprune.verify import relative_error, run, sample_feeds

# MACs reduction at --ratio 0.5 (l1, rounding 16), rounded down to a tenth: a rule that
# stops cutting, or a group that becomes blocked, fails its model's test.
MIN_REDUCTION = {
    "alexnet": 3.6, "bert_tiny_dynamo": 1.2, "bert_tiny_dynamo_fused": 1.2, "bert_tiny_ts": 1.2,
    "bert_tiny_ts_fused": 1.2, "convnext_tiny": 1.8, "densenet121": 3.8,
    "efficientnet_b0": 3.1, "efficientnet_v2_s": 3.4, "googlenet": 3.6, "inception_v3": 3.8,
    "llama_gqa_dynamo": 1.3, "llama_gqa_ts": 1.3, "mnasnet1_0": 3.2, "mobilenet_v2": 3.1,
    "mobilenet_v2_dynamo": 3.1, "mobilenet_v3_large": 2.9, "mobilenet_v3_small": 2.4,
    "regnet_x_400mf": 3.0, "regnet_y_400mf": 3.1, "resnet18": 3.7, "resnet18_dynamo": 3.7,
    "resnet50": 3.8, "resnext50_32x4d": 3.6, "shufflenet_v2_x1_0": 3.1, "squeezenet1_0": 2.7,
    "swin_t": 1.4, "vgg11_bn": 3.9, "vit_b_16": 1.4, "wide_resnet50_2": 3.9, "yolo_tiny": 3.2,
    "light_resnet50": 3.8, "light_densenet121": 3.8, "light_inception_v1": 2.5,
    "light_inception_v2": 3.7, "light_squeezenet": 2.5, "light_shufflenet": 1.5,
    "light_vgg19": 3.9, "light_bvlc_alexnet": 1.3, "light_zfnet512": 1.7,
    "ppocr_det_v4": 2.6, "ppocr_rec_v4": 3.2, "ppocr_cls": 2.2, "silero_vad_16k_sequence": 2.2,
}
# ShuffleNet v1: every grouped conv after a channel shuffle reads channels of every
# group of the one before, so all its channels join one group of whole conv groups.
BLOCKED = {"light_shufflenet": "grouped convs across shuffles join every channel"}

def check_prunes_equivalently(model: onnx.ModelProto, input_shapes=None, tol: float = 1e-4,
                              feeds=None, name: str | None = None, **options):
    pruned, report = prune(model, 0.5, input_shapes=input_shapes, **options)
    removed = {g.id: np.array(g.removed) for g in report.groups if g.removed}
    if name is not None:
        assert_stable(f"prune-{name}", report.plan_document, pruned)
        assert report.macs_reduction >= MIN_REDUCTION[name], report.macs_reduction
    shapes = sample_shapes(model, input_shapes)
    dep = analyze(model, shapes)
    masked = model_io.export(mask_sinks(dep, removed), model)
    feeds = sample_feeds(model, shapes, seed=3) if feeds is None else feeds
    want, got = run(masked, feeds), run(pruned, feeds)
    for name, reference in want.items():
        assert got[name].shape == reference.shape
        assert relative_error(reference, got[name]) <= tol, name
    assert [o.name for o in pruned.graph.output] == [o.name for o in model.graph.output]
    assert [i.name for i in pruned.graph.input] == [i.name for i in model.graph.input
                                                    if i.name not in
                                                    {t.name for t in model.graph.initializer}]
    return report


@pytest.mark.zoo
@pytest.mark.parametrize("name", zoo_names())
def test_torchvision_structure_prunes_equivalently(name):
    report = check_prunes_equivalently(zoo_model(name), name=name)
    if name == "shufflenet_v2_x1_0":  # channel shuffles: every channel group prunable
        assert [g.blocked for g in report.groups if g.blocked] == ["output is a graph output"]


@pytest.mark.zoo
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=BLOCKED[n], strict=True)) if n in BLOCKED
    else n for n in LIGHT])
def test_onnx_light_model_prunes_equivalently(name):
    check_prunes_equivalently(onnx.load(str(light_path(name))), name=name)


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["ppocr_det_v4", "ppocr_rec_v4", "ppocr_cls",
                                  "silero_vad_16k_sequence"])
def test_real_model_prunes_equivalently(name):
    check_prunes_equivalently(onnx.load(str(real_path(name))), real_inputs(name), name=name)


def test_every_model_has_a_floor():
    assert sorted(MIN_REDUCTION) == sorted(zoo_names() + LIGHT + [
        "ppocr_det_v4", "ppocr_rec_v4", "ppocr_cls", "silero_vad_16k_sequence"])


def test_qdq_quantized_real_model_prunes_with_its_scales(tmp_path):
    """onnxruntime's static QDQ quantization of the demo model: int8 weights behind
    Quantize/DequantizeLinear, per-channel scales, quantized activations."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.random.default_rng(s).standard_normal(
                (1, 3, 48, 192)).astype(np.float32) for s in range(4))

        def get_next(self):
            return {"x": batch} if (batch := next(self.batches, None)) is not None else None

    source = str(real_path("ppocr_cls"))
    quantize_static(source, str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8)
    model = onnx.load(str(tmp_path / "q.onnx"))
    report = check_prunes_equivalently(model, real_inputs("ppocr_cls"))
    assert report.macs_reduction > 2.0


def magika_bytes(count: int, seed: int) -> dict[str, np.ndarray]:
    """Magika's input: byte values 0-255, with 256 padding the short files."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (count, 2048)).astype(np.int32)
    data[: count // 2, rng.integers(64, 1024):1024] = 256
    return {"bytes": data}


@pytest.mark.zoo
def test_magika_inner_factor_merge_prunes_exactly_and_with_its_hidden_group():
    """jax2tf's flattening merges four positions of a 64-neuron MatMul output into 256
    conv channels: a strided map, exact; the conv outputs under a LayerNorm are hidden."""
    model = onnx.load(str(real_path("magika")))
    shapes = real_inputs("magika")
    dep = analyze(model, shapes)
    assert not [r for g in dep.groups for r in g.blocked if "factor" in r or "straddle" in r]
    assert sorted(g.kind for g in dep.groups if g.prunable) == ["hidden", "neuron"]
    report = check_prunes_equivalently(model, shapes, feeds=magika_bytes(8, 1))
    assert report.macs_reduction > 1.9
    pruned, report = prune(model, 0.5, hidden_ratio=0.5, input_shapes=shapes)
    assert report.macs_reduction >= 2.5
    feeds = magika_bytes(16, 2)
    dense, got = run(model, feeds)["target_label"], run(pruned, feeds)["target_label"]
    assert got.shape == dense.shape and np.allclose(got.sum(1), 1, atol=1e-4)
    assert relative_error(dense, got) <= 0.9  # 0.62 here, 0.78 on real files (tools/)

