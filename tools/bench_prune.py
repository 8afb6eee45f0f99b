"""Benchmark structural pruning: MACs reduction against measured onnxruntime CPU
speedup, and the time inspect + prune take.

    python tools/bench_prune.py                     # the default report
    python tools/bench_prune.py --ratio 0.3 --round-to 1 --round-to 8 --round-to 16

Dense and pruned models are timed in the same run, taking turns in blocks of
runs, on onnxruntime's CPU provider with 2 intra-op threads (default spinning) and
batch 1; each figure is a median over `--runs` runs. Models are the
structure-only torchvision files in models/zoo, filled with seeded random weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from onnxprune import model as model_io
from onnxprune import prune
from onnxprune.bench import interleaved_medians
from onnxprune.depgraph import build, view_of
from onnxprune.structure import fill

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"


def load_zoo(name: str) -> onnx.ModelProto:
    return fill(onnx.load(str(ZOO / f"{name}.onnx")))


def speed_rows(names: list[str], ratio: float, round_tos: list[int | None], runs: int,
               threads: int) -> None:
    print(f"== speed at --ratio {ratio} (onnxruntime CPU, {threads} threads, batch 1, "
          f"median of {runs} runs taken in turns)")
    print(f"{'model':16s} {'round_to':>12s} {'MACs red.':>9s} {'speedup':>8s} "
          f"{'speedup/MACs':>12s} {'dense ms':>9s} {'pruned ms':>9s}")
    for name in names:
        dense = load_zoo(name)
        feed = {dense.graph.input[0].name:
                np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
        for r in round_tos:
            pruned, report = prune(dense, ratio, round_to=r)
            dense_s, pruned_s = interleaved_medians([dense, pruned], feed, runs, threads=threads)
            speedup = dense_s / pruned_s
            label = f"{report.round_to}" + (" (default)" if r is None else "")
            print(f"{name:16s} {label:>12s} {report.macs_reduction:9.2f} {speedup:8.2f} "
                  f"{speedup / report.macs_reduction:12.2f} {dense_s * 1e3:9.2f} "
                  f"{pruned_s * 1e3:9.2f}", flush=True)


def prune_seconds(model: onnx.ModelProto, ratio: float) -> float:
    """Seconds for inspect + prune (analysis, plan, rewrite, verification)."""
    start = time.perf_counter()
    build(view_of(model_io.normalize(model), model))
    prune(model, ratio)
    return time.perf_counter() - start


def synthetic_resnet(blocks: int, width: int = 64, seed: int = 0) -> onnx.ModelProto:
    """A residual network of `blocks` bottlenecks (ResNet-50 has 16), 56×56 input."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def weight(*shape):
        name = f"w{len(inits)}"
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(shape) * 0.05).astype(np.float32), name))
        return name

    def conv(x, c_in, c_out, k):
        y = f"t{len(nodes)}"
        nodes.append(helper.make_node("Conv", [x, weight(c_out, c_in, k, k), weight(c_out)],
                                      [y], pads=[k // 2] * 4))
        r = f"t{len(nodes)}"
        nodes.append(helper.make_node("Relu", [y], [r]))
        return r

    x = conv("x", 3, 4 * width, 3)
    for _ in range(blocks):
        h = conv(conv(conv(x, 4 * width, width, 1), width, width, 3), width, 4 * width, 1)
        y = f"t{len(nodes)}"
        nodes.append(helper.make_node("Add", [x, h], [y]))
        x = y
    pooled = f"t{len(nodes)}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled]))
    flat = f"t{len(nodes)}"
    nodes.append(helper.make_node("Flatten", [pooled], [flat]))
    nodes.append(helper.make_node("Gemm", [flat, weight(10, 4 * width), weight(10)], ["y"],
                                  transB=1))
    graph = helper.make_graph(nodes, "synthetic", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 56, 56])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def timing_rows(ratio: float) -> None:
    print(f"== inspect + prune time at --ratio {ratio} (load and save excluded)")
    seconds = {}
    for name in ("resnet50", "densenet121"):
        model = load_zoo(name)
        seconds[name] = min(prune_seconds(model, ratio) for _ in range(3))
        print(f"{name:16s} {seconds[name]:6.2f} s", flush=True)
    shallow = min(prune_seconds(synthetic_resnet(16), ratio) for _ in range(3))
    deep = min(prune_seconds(synthetic_resnet(160), ratio) for _ in range(2))
    print(f"synthetic residual net, 16 bottlenecks (resnet50's depth) {shallow:6.2f} s; "
          f"160 bottlenecks {deep:6.2f} s", flush=True)
    print(f"10x depth: {deep / shallow:.1f}x the 16-bottleneck time, "
          f"{deep / seconds['resnet50']:.1f}x resnet50's time", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["resnet50", "mobilenet_v2", "efficientnet_b0"])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--round-to", type=int, action="append", dest="round_tos")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args(argv)
    speed_rows(args.models, args.ratio, args.round_tos or [None], args.runs, args.threads)
    if not args.skip_timing:
        timing_rows(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
