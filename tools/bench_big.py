"""Peak resident memory and time of prune and sparsify on a model larger than 2 GB.

    python tools/bench_big.py [--dir /tmp/big/m] [--blocks 20] [--hidden 4096] [--ffn F]
                              [--calib] [--only-calib] [--model PATH] [--head-ratio R]
                              [--sparsegpt] [--only TEXT]

Writes the model with tools/make_big_model.py when it is missing (40 MatMul layers
of 4096², 2.68 GB of external data; with `--ffn`, Llama-shaped RMSNorm and SwiGLU
blocks), then runs each command under `/usr/bin/time -v`
and prints its wall and CPU time (user and system), peak resident set size, and that
peak over the model's size on disk: `prune --ratio 0.3`, `sparsify --pattern 2:4`
(magnitude) and, with `--calib`, `prune --ratio 0.3 --calib` (wanda ranking,
least-squares refit) on 8 seeded samples; `--only-calib` runs that one alone. Outputs
go beside the model; the model's own files are never written.

`--model PATH` measures an existing model instead (its size on disk counts the model
file and every external data file it names), for example a decoder with a key/value
cache from `tools/export_decoder.py llama-0.8b`; its calibration samples are 8
prompts of 16 seeded token ids (below the logits' vocabulary) with empty caches.
`--head-ratio R` adds `prune --ratio 0.3 --head-ratio R` (heads with their cache);
`--sparsegpt` adds `sparsify --pattern 2:4 --criterion sparsegpt --calib`; `--only
TEXT` runs only the commands whose name holds TEXT.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

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
    """The model file and every external data file it names, in bytes."""
    proto = onnx.load(str(model), load_external_data=False)
    files = {entry.value for tensor in proto.graph.initializer
             for entry in tensor.external_data if entry.key == "location"}
    return model.stat().st_size + sum((model.parent / f).stat().st_size for f in files)


def samples_for(model: Path, hidden: int, count: int = 8, length: int = 16) -> dict:
    """Seeded calibration samples: float inputs [count, length, hidden], or for a
    decoder with a cache, prompts of token ids with empty caches."""
    from onnxprune.cache import cache_pairs

    rng = np.random.default_rng(0)
    proto = onnx.load(str(model), load_external_data=False)
    if not any(v.name == "input_ids" for v in proto.graph.input):
        return {"x": rng.standard_normal((count, length, hidden)).astype(np.float32)}
    logits = next(v for v in proto.graph.output if v.name == "logits")
    vocab = logits.type.tensor_type.shape.dim[-1].dim_value
    feeds = {"input_ids": rng.integers(0, vocab, (count, length)),
             "attention_mask": np.ones((count, length), np.int64),
             "position_ids": np.tile(np.arange(length), (count, 1))}
    values = {v.name: v for v in proto.graph.input}
    for pair in cache_pairs(proto):
        dims = values[pair.past].type.tensor_type.shape.dim
        shape = [count if axis == 0 else 0 if axis == pair.axis else d.dim_value
                 for axis, d in enumerate(dims)]
        feeds[pair.past] = np.zeros(shape, np.float32)
    return feeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/big/m"))
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--ffn", type=int, help="Llama-shaped SwiGLU blocks of this width")
    parser.add_argument("--calib", action="store_true")
    parser.add_argument("--only-calib", action="store_true",
                        help="run only the calibrated command (implies --calib)")
    parser.add_argument("--model", type=Path, help="measure this model instead")
    parser.add_argument("--head-ratio", type=float, help="also prune heads at this ratio")
    parser.add_argument("--sparsegpt", action="store_true", help="also 2:4 SparseGPT")
    parser.add_argument("--only", help="run only the commands whose name holds this")
    args = parser.parse_args()
    model = args.model or generated(args)
    commands = {} if args.only_calib else dict(COMMANDS)
    if args.head_ratio and not args.only_calib:
        commands[f"prune --ratio 0.3 --head-ratio {args.head_ratio:g}"] = [
            "prune", "-o", "ph30.onnx", "--ratio", "0.3", "--head-ratio",
            str(args.head_ratio)]
    if args.sparsegpt:
        commands["sparsify --pattern 2:4 --criterion sparsegpt --calib"] = [
            "sparsify", "-o", "sg24.onnx", "--pattern", "2:4", "--criterion", "sparsegpt",
            "--calib", "calib.npz"]
    if args.calib or args.only_calib:
        commands.update(CALIB)
    commands = {k: v for k, v in commands.items() if not args.only or args.only in k}
    if any("calib.npz" in arguments for arguments in commands.values()):
        np.savez(model.parent / "calib.npz", **samples_for(model, args.hidden))
    size = on_disk(model)
    print(f"model {model}: {size / 1e9:.2f} GB on disk")
    print(f"{'command':42} {'wall s':>8} {'CPU s':>8} {'peak GB':>8} {'peak/size':>9}")
    for name, arguments in commands.items():
        seconds, cpu, peak = measured(model, arguments)
        print(f"{name:42} {seconds:8.1f} {cpu:8.1f} {peak / 1e9:8.2f} {peak / size:9.2f}",
              flush=True)


def generated(args: argparse.Namespace) -> Path:
    """The generated model of `args`' sizes, written when missing."""
    args.dir.mkdir(parents=True, exist_ok=True)
    name = f"swiglu{args.blocks}" if args.ffn else f"mlp{2 * args.blocks}"
    model = args.dir / f"{name}.onnx"
    if not model.exists():
        make(model, args.blocks, args.hidden, ffn=args.ffn)
    return model


if __name__ == "__main__":
    main()
