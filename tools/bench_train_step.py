"""Time a jitted train step of the JAX translation, depthwise convolutions and
convolution weight gradients translated each way asked, measured in the same run.

    pip install -e '.[train]'
    python tools/bench_train_step.py [--models ppocr_cls,mobilenet_v2] [--batch 16]
                                     [--steps 3] [--paths slices,conv]
                                     [--conv-grad auto] [--threads 2]
                                     [--torch /work/venvs/export/bin/python]

A step is forward, backward and an SGD update of every trainable weight on the squared
error of the outputs against fixed targets (the outputs of the untrained model on other
inputs, scaled), relative to the targets'. For each model and depthwise path ("conv": XLA's
grouped convolution; "slices": a sum of shifted slices times the weights) it prints
the compile time, the median step time and the loss after the steps (both paths must
agree); `--conv-grad host,xla` also times each place of the convolution weight
gradients (`ops.conv_grad`: "host", numpy and BLAS; "xla"; "auto", the default: host
on CPU). Models: `ppocr_cls` (the shipped MobileNetV3 text-direction classifier, input
48x192) and any zoo structure (`models/zoo/NAME.onnx`, seeded random weights, 224x224).
With `--torch PYTHON` (an interpreter with torch and torchvision, never this one's),
each zoo model is also timed in PyTorch with `--threads` threads in the same run
(tools/torch_train_step.py: the same step on torchvision's structure), and the line
gives JAX's step time over PyTorch's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    """The model and its input shape (batch left out)."""
    import onnx

    from onnxprune.structure import fill

    if name == "ppocr_cls":
        return onnx.load(str(ROOT / "models" / "ppocr_mobile_cls.onnx")), (3, 48, 192)
    return fill(onnx.load(str(ROOT / "models" / "zoo" / f"{name}.onnx")), 0), (3, 224, 224)


def train_step(translated, lr: float = 1e-3):
    """A jitted (params, x, target) -> (params, loss) SGD step on the squared error
    relative to the target's."""
    import jax
    import jax.numpy as jnp

    from onnxprune.train.compile import jit

    name = translated.program.inputs[0]
    f = translated.function()

    def loss(params, x, target):
        (out,) = f(params, {name: x}).values()
        return jnp.mean((out - target) ** 2) / jnp.mean(target ** 2)

    @jit  # the compiler options fine-tuning uses (onnxprune.train.compile)
    def step(params, x, target):
        value, grads = jax.value_and_grad(loss)(params, x, target)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), value
    return step


def measure(model, shape, batch: int, steps: int, path: str, conv_grad: str = "auto") -> dict:
    """Compile time, step times and final loss of one depthwise path and one place of
    the convolution weight gradients."""
    import jax
    import numpy as np

    from onnxprune.train import translate

    translated = translate(model, depthwise=path, conv_weight_grad=conv_grad)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    f = jax.jit(translated.function())
    (ref,) = f(translated.params, {translated.program.inputs[0]: -x}).values()
    target = 2 * np.asarray(ref)
    step = train_step(translated)
    params = {k: jax.numpy.asarray(v) for k, v in translated.params.items()}
    start = time.perf_counter()
    params, loss = jax.block_until_ready(step(params, x, target))
    compile_s, times = time.perf_counter() - start, []
    for _ in range(steps):
        start = time.perf_counter()
        params, loss = jax.block_until_ready(step(params, x, target))
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "step_s": statistics.median(times), "loss": float(loss)}


def torch_step(python: str, name: str, batch: int, steps: int, threads: int) -> dict:
    """PyTorch's step for the same torchvision structure, run by `python`."""
    script = ROOT / "tools" / "torch_train_step.py"
    done = subprocess.run([python, str(script), "--model", name, "--batch", str(batch),
                           "--steps", str(steps), "--threads", str(threads)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ppocr_cls,mobilenet_v2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--paths", default="slices,conv")
    parser.add_argument("--conv-grad", default="auto", help="auto, host, xla; comma-separated")
    parser.add_argument("--torch", default=None, help="a Python with torch, torchvision")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import jax

    print(f"jax {jax.__version__} on {jax.default_backend()}, batch {args.batch}, "
          f"{args.steps} timed steps")
    print(f"{'model':<18}{'depthwise':<10}{'conv grad':<10}{'compile s':>10}{'step s':>9}"
          f"{'loss':>12}")
    for name in args.models.split(","):
        model, shape = load(name)
        for path in args.paths.split(","):
            for place in args.conv_grad.split(","):
                r = measure(model, shape, args.batch, args.steps, path, place)
                print(f"{name:<18}{path:<10}{place:<10}{r['compile_s']:>10.1f}"
                      f"{r['step_s']:>9.2f}{r['loss']:>12.5g}", flush=True)
        if args.torch and name != "ppocr_cls":
            t = torch_step(args.torch, name, args.batch, args.steps, args.threads)
            print(f"{name:<18}{'torch':<20}{t['first_s']:>10.1f}{t['step_s']:>9.2f}"
                  f"{t['loss']:>12.5g}  (torch {t['torch']}, {t['threads']} threads; "
                  f"JAX/torch step time {r['step_s'] / t['step_s']:.2f})", flush=True)


if __name__ == "__main__":
    main()
