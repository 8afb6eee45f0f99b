"""Export a zoo of torchvision classifiers as small structure-only ONNX files.

How to run
----------
torch is needed only here, never in the package or its tests. Use a separate
virtual environment outside the checkout::

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 onnx onnxscript
    /work/torchenv/bin/python tools/export_zoo.py            # all models
    /work/torchenv/bin/python tools/export_zoo.py resnet18   # just some

Files go to ``models/zoo/NAME.onnx`` (``--out`` changes the folder).

What is exported
----------------
Each model is built with random weights (``torch.manual_seed(0)``), every
BatchNorm gets random affine parameters and running statistics (so a folded or
unfolded BatchNorm is not an identity), and it is exported in eval mode with
the TorchScript exporter (opset 17, constant folding on, batch axis 0 of the
input and output dynamic). resnet18 and mobilenet_v2 are also exported with
the dynamo exporter (opset 18) as ``NAME_dynamo.onnx``.

Structure-only format
---------------------
Every initializer of a floating dtype with at least 16 elements has its data
cleared (``raw_data`` and the typed data fields are empty) while ``name``,
``dims`` and ``data_type`` stay. Its ``doc_string`` holds a compact JSON of the
original values' statistics, 6 significant digits::

    {"mean":0.0012,"std":0.0514,"min":-0.2311,"max":0.2402}

Other initializers (integer shape constants, tensors under 16 elements) and all
``Constant`` nodes are kept as they are. The model's ``metadata_props`` has
``onnxprune.structure_only`` = ``1``. To run such a file, refill each stripped
initializer, e.g. with seeded normal(mean, std) values clipped to [min, max].
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
import torchvision
from onnx import numpy_helper

STRUCTURE_ONLY_KEY = "onnxprune.structure_only"
MIN_STRIPPED_ELEMENTS = 16
TORCHSCRIPT_OPSET = 17
DYNAMO_OPSET = 18
SEED = 0

# name -> input height/width
MODELS: dict[str, int] = {
    "resnet18": 224,
    "resnet50": 224,
    "resnext50_32x4d": 224,
    "wide_resnet50_2": 224,
    "mobilenet_v2": 224,
    "mobilenet_v3_small": 224,
    "mobilenet_v3_large": 224,
    "efficientnet_b0": 224,
    "efficientnet_v2_s": 224,
    "regnet_x_400mf": 224,
    "regnet_y_400mf": 224,
    "densenet121": 224,
    "googlenet": 224,
    "inception_v3": 299,
    "squeezenet1_0": 224,
    "shufflenet_v2_x1_0": 224,
    "mnasnet1_0": 224,
    "vgg11_bn": 224,
    "alexnet": 224,
    "convnext_tiny": 224,
    "vit_b_16": 224,
    "swin_t": 224,
}
DYNAMO_MODELS: tuple[str, ...] = ("resnet18", "mobilenet_v2")
EXTRA_KWARGS: dict[str, dict[str, bool]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
FLOAT_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
    }
)
DATA_FIELDS = (
    "raw_data",
    "float_data",
    "double_data",
    "int32_data",
    "int64_data",
    "uint64_data",
    "string_data",
    "external_data",
)


def build_model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """Build ``name`` with seeded random weights and return it with an input."""
    torch.manual_seed(SEED)
    model = torchvision.models.get_model(name, weights=None, **EXTRA_KWARGS.get(name, {}))
    randomize_batchnorm(model)
    model.eval()
    size = MODELS[name]
    return model, torch.randn(1, 3, size, size)


@torch.no_grad()
def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Give every BatchNorm non-trivial affine parameters and statistics."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            if module.weight is not None:
                module.weight.uniform_(0.5, 1.5)
            if module.bias is not None:
                module.bias.normal_(0.0, 0.1)
            if module.running_mean is not None:
                module.running_mean.normal_(0.0, 0.1)
            if module.running_var is not None:
                module.running_var.uniform_(0.5, 1.5)


def export_torchscript(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """Export with the TorchScript exporter, opset 17, dynamic batch."""
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=False,
        opset_version=TORCHSCRIPT_OPSET,
        do_constant_folding=True,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )


def export_dynamo(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """Export with the dynamo exporter, opset 18, dynamic batch."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=True,
        opset_version=DYNAMO_OPSET,
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes=({0: batch},),
        external_data=False,
    )


def tensor_stats(tensor: onnx.TensorProto) -> dict[str, float]:
    """Mean, std, min and max of a tensor's values, 6 significant digits."""
    values = numpy_helper.to_array(tensor).astype(np.float64)
    stats = {
        "mean": values.mean(),
        "std": values.std(),
        "min": values.min(),
        "max": values.max(),
    }
    return {key: float(f"{value:.6g}") for key, value in stats.items()}


def should_strip(tensor: onnx.TensorProto) -> bool:
    """True for a floating initializer with at least 16 elements."""
    count = int(np.prod(tensor.dims, dtype=np.int64))
    return tensor.data_type in FLOAT_TYPES and count >= MIN_STRIPPED_ELEMENTS


def strip_tensor(tensor: onnx.TensorProto) -> None:
    """Replace a tensor's data with a JSON summary in its doc_string."""
    tensor.doc_string = json.dumps(tensor_stats(tensor), separators=(",", ":"))
    for field in DATA_FIELDS:
        tensor.ClearField(field)
    tensor.data_location = onnx.TensorProto.DEFAULT


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """Yield a graph and, recursively, every subgraph in its nodes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_graphs(sub)


def strip_weights(model: onnx.ModelProto) -> int:
    """Make ``model`` structure-only in place; return the stripped count."""
    stripped = 0
    for graph in iter_graphs(model.graph):
        for tensor in graph.initializer:
            if should_strip(tensor):
                strip_tensor(tensor)
                stripped += 1
    set_metadata(model, STRUCTURE_ONLY_KEY, "1")
    return stripped


def set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    """Set one metadata_props entry, replacing an old one of the same key."""
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    model.metadata_props.add(key=key, value=value)


def export_one(name: str, dynamo: bool, out_dir: Path) -> Path:
    """Export one model, strip its weights and save it; return the file."""
    model, x = build_model(name)
    target = out_dir / (f"{name}_dynamo.onnx" if dynamo else f"{name}.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.onnx"
        if dynamo:
            export_dynamo(model, x, full)
        else:
            export_torchscript(model, x, full)
        proto = onnx.load(str(full))
    strip_weights(proto)
    onnx.save(proto, str(target))
    return target


def jobs(names: list[str]) -> list[tuple[str, bool]]:
    """The (model, dynamo) pairs to export for the names asked for."""
    chosen = names or list(MODELS)
    pairs = [(name, False) for name in chosen]
    pairs += [(name, True) for name in chosen if name in DYNAMO_MODELS]
    return pairs


def parse_args(argv: list[str] | None, models=None, description: str | None = None
               ) -> argparse.Namespace:
    """Command-line arguments: model names (all by default) and --out."""
    models = MODELS if models is None else models
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="default: all")
    default_out = Path(__file__).resolve().parent.parent / "models" / "zoo"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(models))
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Export every model asked for; report failures and go on."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    for name, dynamo in jobs(args.names):
        label = f"{name}{' (dynamo)' if dynamo else ''}"
        try:
            path = export_one(name, dynamo, args.out)
        except Exception as exc:  # noqa: BLE001 - report and go on
            failed.append(label)
            print(f"FAILED {label}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        print(f"ok {label}: {path} ({path.stat().st_size / 1024:.1f} KiB)")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
