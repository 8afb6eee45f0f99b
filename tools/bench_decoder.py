"""Prune a decoder with a key/value cache and measure it: cache shapes before and after,
a greedy generation from the pruned model against the masked reference, and the
onnxruntime latency per generated token of the dense and pruned models, in one run.

    python tools/export_decoder.py qwen2-0.5b -o /tmp/qwen2_kv --vocab 32000
    python tools/bench_decoder.py /tmp/qwen2_kv/model.onnx --head-ratio 0.5 --ratio 0.3

Latency: both models decode the same greedy continuation (the dense model's) after the
prompt, step by step with their own caches; the dense and pruned generations take turns
(`--turns`), and the ratio is the median over turns of pruned / dense time per token.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import onnx

from onnxprune import prune
from onnxprune.depgraph import analyze
from onnxprune.targets.onnxruntime import session
from onnxprune.verify import reference_model, relative_error
from onnxprune.verify.generation import generate, prompt_for


def cache_shapes(model: onnx.ModelProto) -> str:
    """The first cache input's declared shape."""
    value = next(v for v in model.graph.input if v.name.startswith("past"))
    dims = [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]
    return f"{value.name} {dims}"


def decode_seconds(model: onnx.ModelProto, prompt: np.ndarray, tokens: list[int],
                   threads: int) -> callable:
    """A function timing the decoding of `tokens` after `prompt` (seconds per token)."""
    sess = session(model, optimization="all", threads=threads)
    pairs = [(v.name, v.name.replace("past_key_values", "present")) for v in model.graph.input
             if v.name.startswith("past_key_values")]
    empty = {}
    for value in model.graph.input:
        if value.name.startswith("past_key_values"):
            dims = [d.dim_value if d.HasField("dim_value") else 1
                    for d in value.type.tensor_type.shape.dim]
            dims[2] = 0
            empty[value.name] = np.zeros(dims, np.float32)
    names = [o.name for o in sess.get_outputs()]

    def feeds_for(ids, start):
        end = start + ids.shape[1]
        return {"input_ids": ids, "attention_mask": np.ones((1, end), np.int64),
                "position_ids": np.arange(start, end, dtype=np.int64)[None]}

    def timed() -> float:
        out = dict(zip(names, sess.run(None, feeds_for(prompt[None], 0) | empty), strict=True))
        start, spent = prompt.size, 0.0
        for token in tokens:
            feeds = feeds_for(np.array([[token]]), start) | {p: out[q] for p, q in pairs}
            begin = time.perf_counter()
            out = dict(zip(names, sess.run(None, feeds), strict=True))
            spent += time.perf_counter() - begin
            start += 1
        return spent / len(tokens)

    return timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--head-ratio", type=float, default=0.5)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--turns", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pruned, report = prune(args.model, args.ratio, head_ratio=args.head_ratio)
    model = onnx.load(args.model)  # loaded after pruning: one copy less at the peak
    print(f"pruned in {time.perf_counter() - start:.1f} s (verification included); "
          f"MACs {report.macs_reduction:.2f}x fewer, params {report.params_before / 1e6:.1f}M"
          f" -> {report.params_after / 1e6:.1f}M")
    for kind in ("head", "neuron"):
        cut = [(g.size, g.kept) for g in report.groups if g.kind == kind and g.removed]
        print(f"{kind} groups cut: {len(cut)}, size -> kept: {sorted(set(cut))}")
    print(f"cache: {cache_shapes(model)} -> {cache_shapes(pruned)}; "
          f"{len(report.io_changes)} graph inputs/outputs changed")
    units = {g.id: np.array(g.removed) for g in report.groups if g.removed}
    reference = reference_model(analyze(model), units, model)
    prompt = prompt_for(model)
    want = generate(reference, prompt, args.tokens - 1)
    got = generate(pruned, prompt, args.tokens - 1)
    worst = max(relative_error(a, b) for a, b in zip(want.logits, got.logits, strict=True))
    same = want.tokens == got.tokens
    print(f"{args.tokens}-token greedy generation: pruned {'equals' if same else 'DIFFERS from'}"
          f" the masked reference; max relative logits error {worst:.2e}")
    print(f"tokens: {got.tokens}")
    del reference
    dense_tokens = generate(model, prompt, args.tokens).tokens[:args.tokens]
    timers = [decode_seconds(m, prompt, dense_tokens, args.threads) for m in (model, pruned)]
    for timer in timers:
        timer()  # warm-up
    ratios, dense_ms, pruned_ms = [], [], []
    for _ in range(args.turns):
        dense, small = timers[0](), timers[1]()
        ratios.append(small / dense)
        dense_ms.append(dense * 1e3)
        pruned_ms.append(small * 1e3)
    print(f"latency per generated token ({args.threads} thread(s), {args.turns} turns): dense "
          f"{statistics.median(dense_ms):.2f} ms, pruned {statistics.median(pruned_ms):.2f} "
          f"ms, pruned/dense {statistics.median(ratios):.3f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
