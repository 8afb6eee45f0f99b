"""Recovery by distillation on a convolutional network, where data is unlimited.

    pip install -e '.[train]'
    python tools/bench_finetune.py [--model resnet18] [--ratio 0.3] [--minutes 10]
                                   [--train 1024] [--eval 64] [--batch 8] [--lr 1e-3]
                                   [--match-hidden] [--clock cpu|wall]

A torchvision structure from `models/zoo` with seeded random weights
(`onnxprune.structure.fill`, seed 0) is pruned with `onnxprune.prune(model, ratio)`
(criterion l1, no data), then fine-tuned by `onnxprune.finetune` from its own dense
model on `--train` generated inputs (standard normal pixels, seed 1; 10 % of them
held out for early stopping) for at most `--minutes`. The held-out error is the
relative L2 error ‖s − t‖/‖t‖ of the logits against the dense model's, measured with
onnxruntime on `--eval` other generated inputs (seed 2) that fine-tuning never saw;
the script prints it before and after, and their ratio.

`--clock cpu` (the default) measures the budget as this process's CPU time divided by
2: the wall time the run takes alone on 2 cores, whatever else shares the machine
(`--clock wall`: elapsed time).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLOCKS = {"cpu": lambda: time.process_time() / 2, "wall": time.monotonic}


def held_out_error(model, dense, inputs: np.ndarray, name: str) -> float:
    """Relative L2 error of the first output against the dense model's (onnxruntime)."""
    from onnxprune.verify import run

    got, want = run(model, {name: inputs}), run(dense, {name: inputs})
    key = next(iter(want))
    return float(np.linalg.norm(got[key] - want[key]) / np.linalg.norm(want[key]))


def _printer():
    """Print the mean training loss every 20 steps (on stderr)."""
    seen: list[float] = []

    def show(loss: float) -> None:
        seen.append(loss)
        if len(seen) % 20 == 0:
            print(f"step {len(seen)}: loss {np.mean(seen[-20:]):.4g}", file=sys.stderr,
                  flush=True)
    return show


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--train", type=int, default=1024)
    parser.add_argument("--eval", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--match-hidden", action="store_true")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()

    import onnx

    import onnxprune
    from onnxprune.structure import fill

    dense = fill(onnx.load(str(ROOT / "models" / "zoo" / f"{args.model}.onnx")), 0)
    name = dense.graph.input[0].name
    shape = tuple(d.dim_value for d in dense.graph.input[0].type.tensor_type.shape.dim[1:])
    pruned, prune_report = onnxprune.prune(dense, args.ratio)
    data = np.random.default_rng(1).standard_normal((args.train, *shape), np.float32)
    held = np.random.default_rng(2).standard_normal((args.eval, *shape), np.float32)
    before = held_out_error(pruned, dense, held, name)
    start = time.perf_counter()
    tuned, report = onnxprune.finetune(
        pruned, dense, {name: data}, minutes=args.minutes, steps=args.steps, lr=args.lr,
        batch_size=args.batch, val_fraction=0.1, match_hidden=args.match_hidden,
        eval_every=20, patience=5, clock=CLOCKS[args.clock], progress=_printer())
    seconds, cpu = time.perf_counter() - start, report.train_seconds
    after = held_out_error(tuned, dense, held, name)
    print(f"{args.model} --ratio {args.ratio}: MACs {prune_report.macs_reduction:.2f}x fewer; "
          f"{report.steps} steps of batch {args.batch} in {cpu / 60:.1f} min by the "
          f"{args.clock} clock ({seconds / 60:.1f} min elapsed) "
          f"(stopped: {report.stop_reason}; best step {report.best_step}; "
          f"{len(report.hidden)} hidden tensors matched)")
    print(f"validation loss {report.validation_before:.4g} -> {report.validation_after:.4g}")
    print(f"held-out relative L2 error of the logits ({args.eval} inputs): "
          f"{before:.4f} -> {after:.4f} ({before / after:.2f}x lower)")


if __name__ == "__main__":
    main()
