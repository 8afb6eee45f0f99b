"""Write a large float32 model with external data, for the big-file benchmark.

    python tools/make_big_model.py /tmp/big/mlp40.onnx [--blocks 20] [--hidden 4096]
    python tools/make_big_model.py /tmp/big/swiglu16.onnx --blocks 16 --hidden 2048 --ffn 8192

Blocks of a residual MLP, `x + MatMul(Relu(MatMul(x, up)), down)`, with `up` and
`down` hidden × hidden, seeded random weights: 20 blocks of 4096 make 40 MatMul
layers of 4096², 2.68 GB (2.5 GiB) of weights. Each weight is generated and
appended to `<name>.data` one at a time (page-aligned offsets), so writing the
model never holds more than one weight in memory. The input `x` is [batch, 16,
hidden] with a symbolic batch; the output is `y`. With `--ffn`, each block is the MLP
half of a Llama layer instead: `x + down(silu(gate(n)) * up(n))` with `n` the RMSNorm
of `x` (decomposed, unit scale): 16 blocks of hidden 2048 and FFN 8192 hold 3.2 GB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ALIGN = 4096


def external_tensor(name: str, values: np.ndarray, data, data_name: str) -> TensorProto:
    """Append `values` to the open data file; the tensor that references them."""
    offset = -(-data.tell() // ALIGN) * ALIGN
    data.write(b"\0" * (offset - data.tell()))
    data.write(np.ascontiguousarray(values).tobytes())
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=values.shape)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", data_name), ("offset", str(offset)),
                       ("length", str(values.nbytes))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def block(index: int, x: str, hidden: int, rng: np.random.Generator, data, data_name: str
          ) -> tuple[list[onnx.NodeProto], list[TensorProto], str]:
    """One residual MLP block: its nodes, weights and output name."""
    scale = 1.0 / np.sqrt(hidden)
    weights, nodes = [], []
    for name in (f"up{index}", f"down{index}"):
        values = (rng.standard_normal((hidden, hidden), np.float32) * scale).astype(np.float32)
        weights.append(external_tensor(name, values, data, data_name))
        del values
    nodes.append(helper.make_node("MatMul", [x, f"up{index}"], [f"u{index}"], name=f"up{index}"))
    nodes.append(helper.make_node("Relu", [f"u{index}"], [f"r{index}"], name=f"relu{index}"))
    nodes.append(helper.make_node("MatMul", [f"r{index}", f"down{index}"], [f"d{index}"],
                                  name=f"down{index}"))
    out = f"h{index}"
    nodes.append(helper.make_node("Add", [x, f"d{index}"], [out], name=f"add{index}"))
    return nodes, weights, out


def swiglu_block(index: int, x: str, hidden: int, ffn: int, rng: np.random.Generator,
                 data, data_name: str) -> tuple[list[onnx.NodeProto], list[TensorProto], str]:
    """One Llama-shaped MLP block: x + down(silu(gate(n)) * up(n)), n = RMSNorm(x)."""
    i = index
    weights = [onnx.numpy_helper.from_array(np.ones(hidden, np.float32), f"norm{i}")]
    for name, shape in ((f"gate{i}", (hidden, ffn)), (f"up{i}", (hidden, ffn)),
                        (f"down{i}", (ffn, hidden))):
        values = rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(shape[0]))
        weights.append(external_tensor(name, values, data, data_name))
        del values
    op = helper.make_node
    nodes = [op("Mul", [x, x], [f"sq{i}"]), op("ReduceMean", [f"sq{i}"], [f"ms{i}"], axes=[-1]),
             op("Add", [f"ms{i}", "eps"], [f"mse{i}"]), op("Sqrt", [f"mse{i}"], [f"rms{i}"]),
             op("Div", [x, f"rms{i}"], [f"nx{i}"]), op("Mul", [f"nx{i}", f"norm{i}"], [f"n{i}"]),
             op("MatMul", [f"n{i}", f"gate{i}"], [f"g{i}"]), op("Sigmoid", [f"g{i}"], [f"s{i}"]),
             op("Mul", [f"g{i}", f"s{i}"], [f"silu{i}"]),
             op("MatMul", [f"n{i}", f"up{i}"], [f"u{i}"]),
             op("Mul", [f"silu{i}", f"u{i}"], [f"m{i}"]),
             op("MatMul", [f"m{i}", f"down{i}"], [f"d{i}"]), op("Add", [x, f"d{i}"], [f"h{i}"])]
    for node in nodes:
        node.name = node.output[0]
    return nodes, weights, f"h{i}"


def make(path: Path, blocks: int = 20, hidden: int = 4096, seed: int = 0,
         ffn: int | None = None) -> Path:
    """Write the model and its data file; return the model's path."""
    rng = np.random.default_rng(seed)
    data_name = path.name + ".data"
    nodes, x = [], "x"
    weights = [onnx.numpy_helper.from_array(np.array(1e-5, np.float32), "eps")] if ffn else []
    with open(path.parent / data_name, "wb") as data:
        for index in range(blocks):
            more, tensors, x = swiglu_block(index, x, hidden, ffn, rng, data, data_name) \
                if ffn else block(index, x, hidden, rng, data, data_name)
            nodes += more
            weights += tensors
    nodes.append(helper.make_node("Identity", [x], ["y"], name="output"))
    graph = helper.make_graph(
        nodes, "big_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         ["batch", 16, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16, hidden])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="onnxprune-tools")
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ffn", type=int, help="Llama-shaped blocks instead (RMSNorm, SwiGLU "
                        "of this width); e.g. --blocks 16 --hidden 2048 --ffn 8192: 3.2 GB")
    args = parser.parse_args()
    path = make(args.output, args.blocks, args.hidden, args.seed, args.ffn)
    size = path.stat().st_size + (path.parent / (path.name + ".data")).stat().st_size
    print(f"{path}: {size / 1e9:.2f} GB ({size / 2**30:.2f} GiB) with external data")


if __name__ == "__main__":
    main()
