"""Plan files and written models of the data-aware criteria, reconstructions, planners,
attention and hidden cuts, and sparsity, held byte for byte against fixtures (see
`stability.py`). Every zoo and real model at --ratio 0.5 is held in test_models.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_files import real_inputs, real_path, zoo_model
from stability import assert_stable

import onnxprune

CLS_SHAPE = {"x": (1, 3, 48, 192)}
TOKENS = {"input_ids": (1, 12), "attention_mask": (1, 12)}


@pytest.fixture(scope="module")
def cls_calib(tmp_path_factory):
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("calib") / "cls.npz"
    np.savez(path, x=rng.uniform(-1, 1, (8, 3, 48, 192)).astype(np.float32))
    return str(path)


@pytest.fixture(scope="module")
def token_calib(tmp_path_factory):
    rng = np.random.default_rng(12)
    path = tmp_path_factory.mktemp("calib") / "tokens.npz"
    mask = np.ones((12, 12), np.int64)
    mask[::3, 9:] = 0
    np.savez(path, input_ids=rng.integers(0, 30000, (12, 12)).astype(np.int64),
             attention_mask=mask)
    return str(path)


CLS_CASES = {
    "cls-wanda-lsq": dict(ratio=0.3),
    "cls-activation-bias": dict(ratio=0.3, criterion="activation", reconstruct="bias"),
    "cls-apoz-global": dict(target_macs=0.7, criterion="apoz", global_ranking=True,
                            reconstruct="none"),
    "cls-variance-lsq-ridge": dict(ratio=0.4, criterion="variance", ridge=1.0, round_to=8),
    "cls-sensitivity": dict(target_macs=0.8, criterion="sensitivity", sensitivity_samples=4,
                            round_to=8, reconstruct="none"),
}


@pytest.mark.parametrize("case", sorted(CLS_CASES))
def test_data_aware_prune_is_stable(case, cls_calib):
    model = str(real_path("ppocr_cls"))
    pruned, report = onnxprune.prune(model, input_shapes=CLS_SHAPE, calib=cls_calib,
                                     batch_size=8, **CLS_CASES[case])
    solved = "refit" if report.plan_document["options"].get("reconstruct") == "lsq" else None
    assert_stable(case, report.plan_document, pruned, solved)


DATA_FREE_CASES = {
    "cls-l2-energy": ("ppocr_cls", dict(target_energy=0.7, criterion="l2")),
    "cls-bn-scale-global": ("ppocr_cls", dict(ratio=0.5, criterion="bn_scale",
                                              global_ranking=True, max_ratio=0.8)),
    "cls-random-min-channels": ("ppocr_cls", dict(ratio=0.6, criterion="random", seed=3,
                                                  min_channels=24, round_to=4)),
    "magika-hidden": ("magika", dict(ratio=0.5, hidden_ratio=0.5)),
}


@pytest.mark.parametrize("case", sorted(DATA_FREE_CASES))
def test_data_free_prune_is_stable(case):
    name, options = DATA_FREE_CASES[case]
    pruned, report = onnxprune.prune(str(real_path(name)), input_shapes=real_inputs(name),
                                     **options)
    assert_stable(case, report.plan_document, pruned)


def test_attention_prune_with_calibration_is_stable(token_calib):
    model = str(real_path("paraphrase_minilm_l3"))
    pruned, report = onnxprune.prune(model, 0.3, head_ratio=0.25, input_shapes=TOKENS,
                                     calib=token_calib, batch_size=4)
    assert_stable("minilm-heads-wanda-lsq", report.plan_document, pruned, "refit")


@pytest.mark.parametrize("name, options", [
    ("bert_tiny_ts_fused", dict(ratio=0.5, head_ratio=0.5)),
    ("llama_gqa_ts", dict(ratio=0.3, head_ratio=0.5)),
    ("convnext_tiny", dict(ratio=0.3, hidden_ratio=0.25)),
])
def test_zoo_heads_and_hidden_prune_is_stable(name, options):
    pruned, report = onnxprune.prune(zoo_model(name), **options)
    assert_stable(f"{name}-{'-'.join(sorted(options))}", report.plan_document, pruned)


SPARSE_CASES = {
    "sparse-cls-magnitude-24": ("ppocr_cls", dict(pattern="2:4", all_layers=True)),
    "sparse-cls-wanda-48": ("ppocr_cls", dict(pattern="4:8", criterion="wanda",
                                              all_layers=True)),
    "sparse-cls-sparsegpt-unstructured": ("ppocr_cls", dict(
        pattern="unstructured", sparsity=0.6, criterion="sparsegpt", all_layers=True)),
    "sparse-minilm-wanda-24": ("paraphrase_minilm_l3", dict(pattern="2:4", criterion="wanda")),
}


@pytest.mark.parametrize("case", sorted(SPARSE_CASES))
def test_sparsify_is_stable(case, cls_calib, token_calib):
    name, options = SPARSE_CASES[case]
    calib = None if options.get("criterion", "magnitude") == "magnitude" else \
        cls_calib if name == "ppocr_cls" else token_calib
    shapes = CLS_SHAPE if name == "ppocr_cls" else TOKENS
    model, report = onnxprune.sparsify(str(real_path(name)), input_shapes=shapes,
                                       calib=calib, batch_size=4, **options)
    solved = "sparsegpt" if options.get("criterion") == "sparsegpt" else None
    assert_stable(case, report.plan_document, model, solved)


def test_fixtures_fail_on_a_changed_decision(tmp_path, monkeypatch):
    import stability

    monkeypatch.setattr(stability, "FIXTURES", tmp_path)
    monkeypatch.setattr(stability, "HASHES", tmp_path / "models.json")
    model = onnx.load(str(real_path("ppocr_cls")))
    monkeypatch.setenv("ONNXPRUNE_WRITE_FIXTURES", "1")
    _, report = onnxprune.prune(model, 0.5, input_shapes=CLS_SHAPE)
    pruned, _ = onnxprune.prune(model, 0.5, input_shapes=CLS_SHAPE)
    stability.assert_stable("case", report.plan_document, pruned)
    monkeypatch.delenv("ONNXPRUNE_WRITE_FIXTURES")
    stability.assert_stable("case", report.plan_document, pruned)
    other_pruned, other = onnxprune.prune(model, 0.4, input_shapes=CLS_SHAPE)
    with pytest.raises(AssertionError, match="plan file changed"):
        stability.assert_stable("case", other.plan_document, pruned)
    with pytest.raises(AssertionError, match="written model changed"):
        stability.assert_stable("case", report.plan_document, other_pruned)


def test_solved_fixtures_tolerate_rounding_but_not_a_changed_weight(tmp_path, monkeypatch):
    """A solved case passes with every weight moved by 1e-6 of its scale and fails with
    one weight tensor moved by 1 % of it."""
    import stability
    from onnx import numpy_helper

    monkeypatch.setattr(stability, "FIXTURES", tmp_path)
    monkeypatch.setattr(stability, "HASHES", tmp_path / "models.json")
    pruned, report = onnxprune.prune(str(real_path("ppocr_cls")), 0.5, input_shapes=CLS_SHAPE)
    monkeypatch.setenv("ONNXPRUNE_WRITE_FIXTURES", "1")
    stability.assert_stable("case", report.plan_document, pruned, "refit")
    monkeypatch.delenv("ONNXPRUNE_WRITE_FIXTURES")

    def moved(fraction: float, tensors: int) -> onnx.ModelProto:
        model = onnx.ModelProto()
        model.CopyFrom(pruned)
        floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
        for tensor in floats[:tensors]:
            values = numpy_helper.to_array(tensor)
            shifted = values + fraction * np.abs(values).mean() * (values != 0)
            tensor.CopyFrom(numpy_helper.from_array(shifted.astype(values.dtype), tensor.name))
        return model

    stability.assert_stable("case", report.plan_document, moved(1e-6, 10**6), "refit")
    with pytest.raises(AssertionError, match="written model changed"):
        stability.assert_stable("case", report.plan_document, moved(0.01, 1), "refit")
