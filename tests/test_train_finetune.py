"""Fine-tuning by distillation: validation error against onnxruntime, structure and
zeros kept exactly, 2:4 and float16 kept, the input returned when nothing improves."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("optax")
import onnx  # noqa: E402
from finetune_graphs import convnet, inputs, mlp, pruned, sparsified  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from test_sparsity_models import polygraphy_verdicts  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.sparsity.layers import WeightStore, effective, find_layers, to_matrix  # noqa: E402
from onnxprune.sparsity.pattern import parse_pattern, violations  # noqa: E402
from onnxprune.verify import run  # noqa: E402


def weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def ort_validation_mse(student, teacher, data, indices) -> float:
    """The mse loss over the validation samples, measured with onnxruntime."""
    feeds = {k: v[indices] for k, v in data.items()}
    got, want = run(student, feeds), run(teacher, feeds)
    return sum(float(np.sum((got[k] - want[k]) ** 2) / np.sum(want[k] ** 2)) for k in want)


def assert_same_structure(before, after) -> None:
    assert list(before.graph.node) == list(after.graph.node)
    assert before.graph.input == after.graph.input
    assert before.graph.output == after.graph.output
    assert [(t.name, t.data_type, list(t.dims)) for t in before.graph.initializer] == \
        [(t.name, t.data_type, list(t.dims)) for t in after.graph.initializer]


def test_pruned_mlp_recovers_on_validation_measured_by_onnxruntime():
    dense = mlp()
    student, data = pruned(dense), inputs(dense, 160)
    tuned, report = onnxprune.finetune(student, dense, data, steps=120, lr=1e-2,
                                       batch_size=32, eval_every=20)
    val = np.array(report.validation_samples)
    assert len(val) == 32 and report.train_samples == 128
    before = ort_validation_mse(student, dense, data, val)
    after = ort_validation_mse(tuned, dense, data, val)
    assert report.validation_before == pytest.approx(before, rel=1e-3)
    assert report.validation_after == pytest.approx(after, rel=1e-3)
    assert after < before / 3 and report.improved
    assert_same_structure(student, tuned)
    assert report.steps == 120 and report.stop_reason == "steps"
    assert len(report.loss_curve) == 120
    assert report.validation_curve[0] == (0, report.validation_before)


def test_cosine_schedule_keeps_the_first_step_and_shrinks_the_later_ones():
    dense = mlp()
    student, data = pruned(dense), inputs(dense, 96)
    runs = {schedule: onnxprune.finetune(student, dense, data, steps=3, lr=1e-2,
                                         batch_size=32, eval_every=1, patience=5,
                                         lr_schedule=schedule)[1]
            for schedule in ("constant", "cosine")}
    constant, cosine = runs["constant"], runs["cosine"]
    assert cosine.lr_schedule == "cosine" and constant.lr_schedule == "constant"
    # Step 1 runs at the full rate under both schedules (nothing of the budget spent).
    assert cosine.validation_curve[:2] == constant.validation_curve[:2]
    assert cosine.validation_curve[2][1] != constant.validation_curve[2][1]
    with pytest.raises(onnxprune.InputError, match="--lr-schedule"):
        onnxprune.finetune(student, dense, data, steps=1, lr_schedule="linear")


def test_zeros_kept_exactly_and_other_weights_trained():
    dense = convnet()
    student = sparsified(pruned(dense), "unstructured", sparsity=0.5)
    tuned, report = onnxprune.finetune(student, dense, inputs(dense, 96), steps=40, lr=1e-2,
                                       batch_size=16, eval_every=10)
    old, new = weights(student), weights(tuned)
    assert report.improved and report.masked_zeros > 0
    for name, value in old.items():
        assert np.array_equal(value == 0, new[name] == 0) or value.dtype.kind != "f", name
        assert np.array_equal(np.signbit(value[value == 0]), np.signbit(new[name][value == 0]))
    assert any(not np.array_equal(old[n], new[n]) for n in old)
    assert_same_structure(student, tuned)


@pytest.mark.parametrize("fp16", [False, True])
def test_two_four_stays_two_four_and_dtypes_stay(fp16, tmp_path):
    """By our pattern checker and by Polygraphy's (`polygraphy inspect sparsity`)."""
    dense = mlp(seed=1)
    student = sparsified(dense, "2:4", fp16=fp16)
    tuned, report = onnxprune.finetune(student, dense, inputs(dense, 96), steps=30, lr=1e-2,
                                       batch_size=16, eval_every=10)
    assert report.improved
    store, layers = WeightStore(tuned), find_layers(tuned)
    matrices = [to_matrix(effective(layer, store), layer.axis) for layer in layers
                if layer.weight is not None]
    assert len(matrices) == 3
    assert not any(violations(m, parse_pattern("2:4")) for m in matrices)
    assert_same_structure(student, tuned)
    dtypes = {v.dtype for v in weights(tuned).values()}
    assert (np.dtype(np.float16) in dtypes) == fp16
    onnxprune.model.save(tuned, tmp_path / "tuned.onnx")
    verdicts = polygraphy_verdicts(tmp_path / "tuned.onnx")
    sparse_weights = {layer.weight for layer in layers if layer.weight is not None}
    assert len(sparse_weights) == 3 and all(verdicts.get(name) for name in sparse_weights), \
        verdicts


def test_nothing_to_gain_returns_the_input_unchanged():
    dense = mlp()
    tuned, report = onnxprune.finetune(dense, dense, inputs(dense, 40), steps=10,
                                       eval_every=5)
    assert not report.improved and report.best_step == 0
    assert tuned.SerializeToString() == dense.SerializeToString()
    assert report.validation_after == report.validation_before


def _shapes(model) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim[1:]]
            for v in inferred.graph.value_info}


def test_match_hidden_matches_tensors_of_equal_name_and_shape():
    dense = convnet()
    student = onnxprune.prune(dense, 0.5, round_to=1, ignore=(dense.graph.node[0].name,))[0]
    _, report = onnxprune.finetune(student, dense, inputs(dense, 40), steps=5,
                                   match_hidden=True, eval_every=5)
    mine, theirs = _shapes(student), _shapes(dense)
    same = {n for n in theirs if mine.get(n) == theirs[n]}
    assert set(report.hidden) == same and len(same) == 3  # the first conv's block


@pytest.mark.parametrize("loss", ["kl", "cosine"])
def test_other_losses_lower_their_validation_error(loss):
    dense = mlp()
    _, report = onnxprune.finetune(pruned(dense), dense, inputs(dense, 80), steps=40,
                                   lr=1e-2, loss=loss, temperature=2.0, eval_every=10)
    assert report.validation_after < report.validation_before


def test_labels_are_read_from_the_data():
    dense = mlp()
    data = inputs(dense, 64)
    data["labels"] = np.random.default_rng(0).integers(0, 8, 64)
    _, report = onnxprune.finetune(pruned(dense), dense, data, steps=10, lr=1e-2,
                                   eval_every=5)
    assert report.train_samples + len(report.validation_samples) == 64
