"""Time a PyTorch train step of a torchvision structure, for tools/bench_train_step.py.

    python -m venv /work/venvs/export
    /work/venvs/export/bin/pip install torch torchvision
    /work/venvs/export/bin/python tools/torch_train_step.py [--model resnet18]
        [--batch 16] [--steps 3] [--threads 2]

The same step as bench_train_step.py's JAX one: forward, backward and an SGD update
(lr 1e-3) of every weight on the squared error of the outputs against fixed targets
(twice the untrained model's outputs on the negated inputs), relative to the targets'
(so seeded weights of any scale stay finite), seeded random
weights, 224x224 inputs; BatchNorm in inference mode (running statistics), as the
exported ONNX graph the JAX translation runs. Prints one line of JSON:
the first step's seconds, the median of the next `--steps` and the final loss.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = getattr(torchvision.models, args.model)()
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = 2 * model.eval()(-x)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> float:
        optimizer.zero_grad()
        loss = torch.mean((model(x) - target) ** 2) / torch.mean(target ** 2)
        loss.backward()
        optimizer.step()
        return float(loss)

    start = time.perf_counter()
    loss = step()
    first, times = time.perf_counter() - start, []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    print(json.dumps({"torch": torch.__version__, "threads": args.threads,
                      "first_s": first, "step_s": statistics.median(times), "loss": loss}))


if __name__ == "__main__":
    main()
