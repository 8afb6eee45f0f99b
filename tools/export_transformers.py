"""Export small Hugging Face transformers as structure-only ONNX test models.

How to run
----------
Like ``tools/export_zoo.py`` this needs torch, which stays outside the package
and its tests. In the same virtual environment (torch 2.14.1, torchvision,
onnx, onnxscript) add ``transformers`` and ``onnxruntime``::

    /work/torchenv/bin/pip install transformers==5.24.0 onnxruntime
    /work/torchenv/bin/python tools/export_transformers.py         # all models
    /work/torchenv/bin/python tools/export_transformers.py llama   # just some

Run it as a script (not ``python -m``): it imports ``export_zoo`` from its own
folder. Nothing is downloaded: every model is built from a config object with
random weights (``torch.manual_seed(0)``), every constant parameter (zero
biases, unit LayerNorm/RMSNorm weights) gets N(0, 0.1) noise added (so norms
are not identities and no two initializers are equal), and it is exported in
eval mode.

What is exported
----------------
``bert`` is a 2-layer ``BertModel`` (hidden 64, 4 heads, FFN 128, vocab 1000)
and ``llama`` a 2-layer ``LlamaModel`` without LM head and with grouped-query
attention (4 query heads, 2 key/value heads, no KV cache). Both use the eager
attention. Inputs are ``input_ids`` and ``attention_mask`` (int64, batch and
sequence axes dynamic); outputs are ``last_hidden_state`` and, for BERT,
``pooler_output``. Each model is exported twice, with the TorchScript exporter
(opset 17) as ``NAME_ts.onnx`` and with the dynamo exporter (opset 18) as
``NAME_dynamo.onnx``. The BERT exports are also run through onnxruntime's
transformer optimizer (``model_type="bert"``), which replaces subgraphs with
com.microsoft fused operators (Attention, SkipLayerNormalization, BiasGelu,
EmbedLayerNormalization), as ``NAME_fused.onnx``.

Every model is checked with onnxruntime against torch before stripping, at
batch 2 x seq 7 and batch 1 x seq 16 with a mask of ones and at batch 3 x seq 9
with a padded row; the largest absolute difference must be at most 1e-4.
Weights are then stripped with ``export_zoo.strip_weights`` (same
structure-only format as the torchvision zoo) and the files go to
``models/zoo/`` (``--out`` changes the folder).
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import export_zoo
import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.transformers.optimizer import optimize_model
from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

SEED = export_zoo.SEED
TORCHSCRIPT_OPSET = export_zoo.TORCHSCRIPT_OPSET
DYNAMO_OPSET = export_zoo.DYNAMO_OPSET
VOCAB_SIZE = 1000
MAX_POSITIONS = 128
NUM_HEADS = 4
HIDDEN_SIZE = 64
TOLERANCE = 1e-4
INPUT_NAMES = ("input_ids", "attention_mask")
# (batch, seq, padded tokens at the end of row 0)
CHECK_SHAPES: tuple[tuple[int, int, int], ...] = ((2, 7, 0), (1, 16, 0), (3, 9, 3))
EXAMPLE_SHAPE = (2, 7)
FUSED_OPT_LEVEL = 1
EXPECTED_FUSED_OPS = frozenset({"Attention", "SkipLayerNormalization", "BiasGelu"})


class HiddenStates(torch.nn.Module):
    """Wrap a transformers model: positional inputs, a tuple of tensors out."""

    def __init__(self, model: torch.nn.Module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        result = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return tuple(result[key] for key in self.outputs)


@torch.no_grad()
def randomize_constant_parameters(model: torch.nn.Module, scale: float = 0.1) -> None:
    """Add noise to every constant parameter (zero biases, unit norm weights).

    Trained models have no such parameters; left alone, the TorchScript
    exporter would also merge equal initializers and share them via Identity.
    """
    for param in model.parameters():
        if param.numel() > 1 and bool((param == param.flatten()[0]).all()):
            param.add_(torch.randn_like(param) * scale)


def build_bert() -> HiddenStates:
    """A 2-layer BERT encoder with seeded random weights, in eval mode."""
    config = BertConfig(
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=NUM_HEADS,
        intermediate_size=128,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_POSITIONS,
        attn_implementation="eager",
    )
    torch.manual_seed(SEED)
    model = BertModel(config)
    randomize_constant_parameters(model)
    return HiddenStates(model, ("last_hidden_state", "pooler_output")).eval()


def build_llama() -> HiddenStates:
    """A 2-layer Llama decoder with grouped-query attention, in eval mode."""
    config = LlamaConfig(
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_POSITIONS,
        attn_implementation="eager",
        use_cache=False,
    )
    torch.manual_seed(SEED)
    model = LlamaModel(config)
    randomize_constant_parameters(model)
    return HiddenStates(model, ("last_hidden_state",)).eval()


@dataclass(frozen=True)
class Spec:
    """One transformer to export."""

    name: str
    build: Callable[[], HiddenStates]
    fuse_type: str | None  # onnxruntime optimizer model_type, None: no fusion


MODELS: dict[str, Spec] = {
    "bert": Spec("bert_tiny", build_bert, "bert"),
    "llama": Spec("llama_gqa", build_llama, None),
}


def sample_inputs(batch: int, seq: int, pad: int = 0, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Seeded token ids in [0, VOCAB_SIZE) and a mask, ``pad`` zeros in row 0."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB_SIZE, (batch, seq), generator=generator)
    mask = torch.ones_like(ids)
    if pad:
        mask[0, -pad:] = 0
    return ids, mask


def export_torchscript(model: HiddenStates, path: Path) -> None:
    """TorchScript exporter, opset 17, batch and seq axes dynamic."""
    axes = {"batch": 0, "seq": 1}
    dynamic = {name: {i: n for n, i in axes.items()} for name in INPUT_NAMES}
    for output in model.outputs:
        dynamic[output] = {0: "batch"} if output == "pooler_output" else {0: "batch", 1: "seq"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on Python ifs over shapes
        torch.onnx.export(
            model,
            sample_inputs(*EXAMPLE_SHAPE),
            str(path),
            dynamo=False,
            opset_version=TORCHSCRIPT_OPSET,
            do_constant_folding=True,
            input_names=list(INPUT_NAMES),
            output_names=list(model.outputs),
            dynamic_axes=dynamic,
        )


def export_dynamo(model: HiddenStates, path: Path) -> None:
    """Dynamo exporter, opset 18, batch and seq axes dynamic."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("seq", min=1, max=MAX_POSITIONS)
    torch.onnx.export(
        model,
        sample_inputs(*EXAMPLE_SHAPE),
        str(path),
        dynamo=True,
        opset_version=DYNAMO_OPSET,
        input_names=list(INPUT_NAMES),
        output_names=list(model.outputs),
        dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
        external_data=False,
    )


Exporter = Callable[[HiddenStates, Path], None]
EXPORTERS: dict[str, Exporter] = {"ts": export_torchscript, "dynamo": export_dynamo}


def fuse(source: Path, target: Path, model_type: str) -> None:
    """Run onnxruntime's transformer optimizer and check it fused attention."""
    fused = optimize_model(
        str(source),
        model_type=model_type,
        num_heads=NUM_HEADS,
        hidden_size=HIDDEN_SIZE,
        opt_level=FUSED_OPT_LEVEL,
    )
    fused.save_model_to_file(str(target))
    found = {n.op_type for n in fused.model.graph.node if n.domain == "com.microsoft"}
    if not found:
        raise RuntimeError(f"{source.name}: the optimizer fused nothing")
    missing = EXPECTED_FUSED_OPS - found
    if missing:
        print(f"note {target.name}: not fused: {', '.join(sorted(missing))}")


def max_difference(model: HiddenStates, path: Path) -> float:
    """Largest |onnxruntime - torch| over all outputs and CHECK_SHAPES."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed_names = {i.name for i in session.get_inputs()}
    worst = 0.0
    for batch, seq, pad in CHECK_SHAPES:
        inputs = sample_inputs(batch, seq, pad)
        with torch.no_grad():
            expected = model(*inputs)
        feeds = {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs, strict=True) if n in feed_names}
        got = session.run(list(model.outputs), feeds)
        for out, ref in zip(got, expected, strict=True):
            worst = max(worst, float(np.abs(out - ref.numpy()).max()))
    return worst


def op_inventory(model: onnx.ModelProto) -> str:
    """Sorted ``op:count`` list, domain-qualified outside the default domain."""
    counts = Counter(
        f"{n.domain}:{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in model.graph.node
    )
    return " ".join(f"{op}:{count}" for op, count in sorted(counts.items()))


def save_stripped(full: Path, target: Path) -> None:
    """Strip the weights of ``full`` and write the structure-only ``target``."""
    proto = onnx.load(str(full))
    onnx.checker.check_model(proto, full_check=True)
    export_zoo.strip_weights(proto)
    onnx.save(proto, str(target))
    print(f"ok {target.name} ({target.stat().st_size / 1024:.1f} KiB): {op_inventory(proto)}")


def verify_and_save(model: HiddenStates, full: Path, target: Path) -> None:
    """Compare ``full`` with torch, then save it structure-only as ``target``."""
    diff = max_difference(model, full)
    print(f"check {target.name}: max |onnxruntime - torch| = {diff:.3g}")
    if diff > TOLERANCE:
        raise RuntimeError(f"{target.name}: difference {diff:.3g} above {TOLERANCE}")
    save_stripped(full, target)


def export_spec(spec: Spec, out_dir: Path) -> list[str]:
    """Export every variant of ``spec``; return the labels that failed."""
    model = spec.build()
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, export in EXPORTERS.items():
            full = Path(tmp) / f"{spec.name}_{kind}.onnx"
            failed += export_variant(model, export, full, out_dir)
            if spec.fuse_type is not None and full.exists():
                failed += fuse_variant(model, full, spec.fuse_type, out_dir)
    return failed


def export_variant(model: HiddenStates, export: Exporter, full: Path, out_dir: Path) -> list[str]:
    """Export to ``full``, check and save it stripped; return the failed label."""

    def step() -> None:
        export(model, full)
        verify_and_save(model, full, out_dir / full.name)

    return [] if run_step(full.stem, step) else [full.stem]


def fuse_variant(model: HiddenStates, full: Path, model_type: str, out_dir: Path) -> list[str]:
    """Fuse an exported model, check and save it; return the failed label."""
    fused = full.with_name(f"{full.stem}_fused.onnx")

    def step() -> None:
        fuse(full, fused, model_type)
        verify_and_save(model, fused, out_dir / fused.name)

    return [] if run_step(fused.stem, step) else [fused.stem]


def run_step(label: str, step: Callable[[], None]) -> bool:
    """Run one export step; print a failure and return False instead of raising."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - report and go on
        print(f"FAILED {label}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Export every model asked for; report failures and go on."""
    args = export_zoo.parse_args(argv, MODELS, __doc__.splitlines()[0])
    args.out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    for name in args.names or list(MODELS):
        failed += export_spec(MODELS[name], args.out)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
