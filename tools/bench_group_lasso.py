"""Group lasso then lossless pruning on the shipped PP-OCR classifier, real pictures.

    pip install -e '.[train]' scikit-image
    python tools/bench_group_lasso.py [--lambdas 0.5,2] [--steps 300] [--lr 1e-3]
                                      [--per-image 24]

`models/ppocr_mobile_cls.onnx` (its Constant-node weights stored as initializers, the
weights `finetune` trains) is fine-tuned from itself (`finetune(dense, dense,
group_lasso=λ)`) on crops of the calibration pictures of `bench_calibration_ocr.py`
(the tool holds out 20 % of them for validation), then pruned with `prune(tuned,
criterion="zero", round_to=1)`. For each λ it prints the units at exactly zero, the
MACs reduction of the pruned model, how far the pruned model is from the fine-tuned
one (it must be ~0: the cut is lossless) and the held-out error against the dense
model on crops of the other pictures, never seen in fine-tuning: relative L2 error of
the class probabilities and top-1 agreement.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
from bench_calibration_ocr import CALIB_IMAGES, EVAL_IMAGES, crops, outputs, relative_l2

import onnxprune
from onnxprune import model as model_io

MODEL = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"
SIZE = (48, 192)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lambdas", default="0.5,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--per-image", type=int, default=24)
    args = parser.parse_args(argv)
    raw = onnx.load(MODEL)  # weights in Constant nodes: as initializers, they train
    dense = model_io.export(model_io.normalize(raw), raw)
    train = crops(CALIB_IMAGES, SIZE, args.per_image, seed=0)
    held = crops(EVAL_IMAGES, SIZE, args.per_image, seed=1)
    want = outputs(dense, held)
    print(f"{len(train)} training crops ({', '.join(CALIB_IMAGES)}), {len(held)} held-out "
          f"({', '.join(EVAL_IMAGES)}); {args.steps} steps at lr {args.lr}")
    print(f"{'lambda':>7s} {'zero units':>11s} {'MACs red.':>9s} {'cut error':>9s} "
          f"{'held-out L2':>11s} {'top-1 agree':>11s} {'best step':>9s} {'stop':>14s} "
          f"{'seconds':>8s}")
    for strength in (float(v) for v in args.lambdas.split(",")):
        start = time.perf_counter()
        tuned, report = onnxprune.finetune(dense, dense, {"x": train}, steps=args.steps,
                                           lr=args.lr, group_lasso=strength)
        small, pruned = onnxprune.prune(tuned, criterion="zero", round_to=1)
        got, tuned_out = outputs(small, held), outputs(tuned, held)
        agree = float(np.mean(got.argmax(-1) == want.argmax(-1)))
        print(f"{strength:7g} {report.zero_units:5d}/{report.lasso_units:<5d} "
              f"{pruned.macs_reduction:8.3f}x {relative_l2(tuned_out, got):9.1e} "
              f"{relative_l2(want, got):11.4f} {agree:11.3f} {report.best_step:9d} "
              f"{report.stop_reason:>14s} {time.perf_counter() - start:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
