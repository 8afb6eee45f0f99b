"""Peak resident memory and time of prune and sparsify on a model larger than 2 GB.

    python tools/bench_big.py [--dir /tmp/big/m] [--blocks 20] [--hidden 4096] [--ffn F]
                              [--calib] [--only-calib]

Writes the model with tools/make_big_model.py when it is missing (40 MatMul layers
of 4096², 2.68 GB of external data; with `--ffn`, Llama-shaped RMSNorm and SwiGLU
blocks), then runs each command under `/usr/bin/time -v`
and prints its wall and CPU time (user and system), peak resident set size, and that
peak over the model's size on disk: `prune --ratio 0.3`, `sparsify --pattern 2:4`
(magnitude) and, with `--calib`, `prune --ratio 0.3 --calib` (wanda ranking,
least-squares refit) on 8 seeded samples; `--only-calib` runs that one alone. Outputs
go beside the model; the model's own files are never written.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_big_model import make  # noqa: E402

COMMANDS = {
    "prune --ratio 0.3": ["prune", "-o", "p30.onnx", "--ratio", "0.3"],
    "sparsify --pattern 2:4": ["sparsify", "-o", "s24.onnx", "--pattern", "2:4"],
}
CALIB = {"prune --ratio 0.3 --calib (wanda, lsq)":
         ["prune", "-o", "pc30.onnx", "--ratio", "0.3", "--calib", "calib.npz"]}


def measured(model: Path, arguments: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak resident bytes of one onnxprune command."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "onnxprune", arguments[0],
               str(model), *arguments[1:], "--quiet"]
    done = subprocess.run(command, cwd=model.parent, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(arguments)} failed: {done.stderr.strip()[-400:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)",
                      done.stderr)[1]
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(clock.split(":"))))
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", done.stderr)[1])
              for kind in ("User", "System"))
    return seconds, cpu, peak * 1024


def on_disk(model: Path) -> int:
    data = model.parent / (model.name + ".data")
    return model.stat().st_size + (data.stat().st_size if data.exists() else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/big/m"))
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--ffn", type=int, help="Llama-shaped SwiGLU blocks of this width")
    parser.add_argument("--calib", action="store_true")
    parser.add_argument("--only-calib", action="store_true",
                        help="run only the calibrated command (implies --calib)")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    name = f"swiglu{args.blocks}" if args.ffn else f"mlp{2 * args.blocks}"
    model = args.dir / f"{name}.onnx"
    if not model.exists():
        make(model, args.blocks, args.hidden, ffn=args.ffn)
    commands = {} if args.only_calib else dict(COMMANDS)
    if args.calib or args.only_calib:
        samples = np.random.default_rng(0).standard_normal((8, 16, args.hidden))
        np.savez(args.dir / "calib.npz", x=samples.astype(np.float32))
        commands.update(CALIB)
    size = on_disk(model)
    print(f"model {model}: {size / 1e9:.2f} GB on disk")
    print(f"{'command':42} {'wall s':>8} {'CPU s':>8} {'peak GB':>8} {'peak/size':>9}")
    for name, arguments in commands.items():
        seconds, cpu, peak = measured(model, arguments)
        print(f"{name:42} {seconds:8.1f} {cpu:8.1f} {peak / 1e9:8.2f} {peak / size:9.2f}",
              flush=True)


if __name__ == "__main__":
    main()
