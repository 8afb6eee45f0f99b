"""One-step pruning against `--rounds K` on the PP-OCR classifier, on real images.

    pip install scikit-image   # the pictures
    python tools/bench_rounds.py [--ratio 0.5] [--rounds 3] [--finetune-steps 0]

Crops of scikit-image's sample pictures (`bench_calibration_ocr.py`: calibration and
evaluation use different pictures). For each criterion and reconstruction it prunes
the shipped classifier at `--ratio` in one step and in `--rounds` rounds and prints,
on the held-out crops, the relative L2 error of the outputs against the dense model,
the cosine and the top-1 agreement. With `--finetune-steps N`, each run is also
fine-tuned from the dense model on the calibration crops for N steps in all (one step:
after the cut; rounds: N/K between rounds and after the last), and measured again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from bench_calibration_ocr import CALIB_IMAGES, EVAL_IMAGES, crops, outputs, relative_l2

import onnxprune

MODEL = Path(__file__).resolve().parent.parent / "models" / "ppocr_mobile_cls.onnx"
SETTINGS = [("l1", "none"), ("wanda", "lsq")]


def agreement(dense: np.ndarray, pruned: np.ndarray) -> tuple[float, float]:
    """Mean cosine of the output rows and top-1 agreement."""
    cos = np.sum(dense * pruned, 1) / (np.linalg.norm(dense, axis=1)
                                       * np.linalg.norm(pruned, axis=1) + 1e-30)
    return float(cos.mean()), float(np.mean(dense.argmax(1) == pruned.argmax(1)))


def tuner(model: onnx.ModelProto, data: dict, steps: int, lr: float, log: list):
    """Fine-tuning from the dense model for `steps` steps (None: not at all)."""
    def tune(current: onnx.ModelProto, _round: int = 0) -> onnx.ModelProto:
        tuned, report = onnxprune.finetune(current, model, data, steps=steps, lr=lr,
                                           eval_every=max(1, steps // 4), seed=0)
        log.append(f"{report.validation_before:.3g}->{report.validation_after:.3g}")
        return tuned
    return tune


def run(model, calib, held_out, dense, criterion, reconstruct, rounds, args) -> str:
    name = model.graph.input[0].name
    feeds = [{name: calib[i:i + 8]} for i in range(0, len(calib), 8)]
    log: list[str] = []
    share = max(1, args.finetune_steps // rounds) if args.finetune_steps else 0
    tune = tuner(model, {name: calib}, share, args.lr, log) if share else None
    start = time.perf_counter()
    pruned, report = onnxprune.prune(
        model, args.ratio, criterion=criterion, reconstruct=reconstruct,
        round_to=args.round_to, input_shapes={name: (1, 3, 48, 192)},
        calib=None if criterion in ("l1", "l2") else feeds, rounds=rounds,
        between_rounds=tune if rounds > 1 else None)
    line = _measure(pruned, held_out, dense)
    if tune is not None:
        tune_last = tuner(model, {name: calib}, args.finetune_steps - share * (rounds - 1),
                          args.lr, log)
        line += " | tuned " + _measure(tune_last(pruned), held_out, dense)
        line += f" | validation {', '.join(log)}"
    return (f"{criterion}+{reconstruct:4s} rounds {rounds}: MACs {report.macs_reduction:.2f}x "
            f"fewer, {line}; {time.perf_counter() - start:.0f} s")


def _measure(pruned, held_out, dense) -> str:
    got = outputs(pruned, held_out)
    cosine, top1 = agreement(dense, got)
    return f"rel. L2 {relative_l2(dense, got):.4f}, cosine {cosine:.4f}, top-1 {top1:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--per-image", type=int, default=12)
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--settings", default=",".join(f"{c}:{r}" for c, r in SETTINGS))
    args = parser.parse_args(argv)
    model = onnx.load(str(MODEL))
    calib = crops(CALIB_IMAGES, (48, 192), args.per_image, seed=0)
    held_out = crops(EVAL_IMAGES, (48, 192), args.per_image, seed=1)
    dense = outputs(model, held_out)
    print(f"== PP-OCR cls, --ratio {args.ratio}; {len(calib)} calibration crops of "
          f"{', '.join(CALIB_IMAGES)}; {len(held_out)} held-out crops of "
          f"{', '.join(EVAL_IMAGES)}", flush=True)
    for criterion, reconstruct in (s.split(":") for s in args.settings.split(",")):
        for rounds in (1, args.rounds):
            print(run(model, calib, held_out, dense, criterion, reconstruct, rounds, args),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
