"""Pruning Magika's file-type classifier (a jax2tf export) on real files.

    pip install --no-deps -r models/requirements.txt
    python tools/bench_magika.py [--files 256] [--seed 0]

Magika reads the first and last 1024 bytes of a file (whitespace stripped, padded
with token 256) into `bytes: int32 [N, 2048]`. Files come from this Python
installation (sources, compiled modules, shared libraries, data and text files of
every kind found under `sys.prefix` and the standard library), shuffled with the
seed; half calibrate and the other half evaluate. For each setting it prints the MACs
reduction, the relative L2 error of the output probabilities against the dense model
and the top-1 agreement on the evaluation files.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np
import onnx

from onnxprune import prune
from onnxprune.verify import relative_error, run

BEG, END, BLOCK, PAD = 1024, 1024, 4096, 256
SETTINGS = [  # (label, prune options)
    ("--ratio 0.5", {}),
    ("--ratio 0.5 --hidden-ratio 0.5", {"hidden_ratio": 0.5}),
    ("--ratio 0.5 --hidden-ratio 0.5 --calib (wanda, lsq)",
     {"hidden_ratio": 0.5, "criterion": "wanda", "reconstruct": "lsq"}),
]


def features(path: Path) -> np.ndarray:
    """Magika's input for one file: stripped first and last bytes, padded."""
    data = path.read_bytes()
    head, tail = data[:BLOCK], data[-BLOCK:]
    if len(data) <= BLOCK:
        head = tail = data.strip()
    beg = list(head.lstrip()[:BEG])
    end = list(tail.rstrip()[-END:]) if END else []
    return np.array(beg + [PAD] * (BEG - len(beg)) + [PAD] * (END - len(end)) + end,
                    np.int32)


def sample_files(count: int, seed: int) -> list[Path]:
    """Files of many types from the Python installation, one per suffix round-robin."""
    roots = {Path(sysconfig.get_paths()["stdlib"]), Path(sys.prefix)}
    by_suffix: dict[str, list[Path]] = {}
    for root in sorted(roots):
        for folder, _, names in os.walk(root):
            for name in sorted(names):
                path = Path(folder, name)
                if path.is_file() and not path.is_symlink() and path.stat().st_size >= 8:
                    by_suffix.setdefault(path.suffix, []).append(path)
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(paths)) for _, paths in sorted(by_suffix.items())]
    picked: list[Path] = []
    while len(picked) < count and any(pools):
        picked += [pool.pop() for pool in pools if pool][:count - len(picked)]
    return [Path(p) for p in rng.permutation(picked)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = importlib.metadata.distribution("magika").locate_file(
        "magika/models/standard_v3_3/model.onnx")
    model = onnx.load(str(path))
    data = np.stack([features(p) for p in sample_files(args.files, args.seed)])
    calib, held = data[: len(data) // 2], data[len(data) // 2:]
    dense = run(model, {"bytes": held})["target_label"]
    print(f"{len(calib)} calibration and {len(held)} evaluation files")
    print("| options | MACs reduction | relative L2 error | top-1 agreement |")
    print("| --- | --- | --- | --- |")
    batches = [{"bytes": calib[i:i + 16]} for i in range(0, len(calib), 16)]
    for label, options in SETTINGS:
        pruned, report = prune(model, 0.5, input_shapes={"bytes": (1, 2048)},
                               calib=batches if "criterion" in options else None, **options)
        got = run(pruned, {"bytes": held})["target_label"]
        agree = float(np.mean(got.argmax(1) == dense.argmax(1)))
        print(f"| `{label}` | {report.macs_reduction:.2f}x | "
              f"{relative_error(dense, got):.4f} | {agree:.3f} |")

if __name__ == "__main__":
    main()
