"""Latency budgets: prune to `--target-latency` and measure what was reached.

    python tools/bench_latency_target.py [--target 0.6] [--threads 1] [--repeats 3]

For resnet50 and mobilenet_v2 (structure-only torchvision files in models/zoo,
seeded weights), batch 1, onnxruntime CPU: prunes with `target_latency`, then times
the dense and pruned models in the same run, in turns of 10 runs after a warm-up
turn, and prints the measured latency ratio (`onnxprune.bench.paired_ratio`: median
over turns of the ratio of back-to-back turns' lower quartiles) against the target,
`--repeats` times, with the load average at each measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from model_files import zoo_model  # noqa: E402

from onnxprune import prune  # noqa: E402
from onnxprune.bench import interleaved_times, paired_ratio, timing_session  # noqa: E402


def measured_ratio(dense, pruned, threads: int, runs: int, block: int = 10) -> tuple:
    """(pruned/dense latency ratio, dense ms, pruned ms), timed in turns."""
    feeds = {dense.graph.input[0].name:
             np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    sessions = [timing_session(m, threads=threads) for m in (dense, pruned)]
    times = interleaved_times(sessions, feeds, runs, block)
    return (paired_ratio(times, block), statistics.median(times[0]) * 1e3,
            statistics.median(times[1]) * 1e3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v2"])
    parser.add_argument("--target", type=float, default=0.6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"== --target-latency {args.target} (onnxruntime CPU, {args.threads} threads, "
          f"batch 1; {args.runs} runs per model per measurement)")
    for name in args.models:
        dense = zoo_model(name)
        start = time.perf_counter()
        pruned, report = prune(dense, target_latency=args.target, threads=args.threads)
        seconds = time.perf_counter() - start
        print(f"{name}: planned in {seconds:.0f} s, MACs {report.macs_reduction:.2f}x fewer, "
              f"closed loop measured {report.target['measured']:.3f} "
              f"({len(report.target['rounds'])} rounds), round-to {report.round_to}", flush=True)
        for repeat in range(args.repeats):
            ratio, dense_ms, pruned_ms = measured_ratio(dense, pruned, args.threads, args.runs)
            print(f"  measurement {repeat + 1}: dense {dense_ms:.2f} ms, pruned {pruned_ms:.2f} "
                  f"ms, measured/dense {ratio:.3f}, measured/target {ratio / args.target:.3f} "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
