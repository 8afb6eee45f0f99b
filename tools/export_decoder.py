"""Export decoder language models with a key/value cache, as optimum writes them.

How to run
----------
Needs the ``export`` extra and ``transformers`` (torch stays outside the package
and its tests)::

    pip install -e '.[export]' transformers
    python tools/export_decoder.py tiny -o models/llama_kv            # the test fixture
    python tools/export_decoder.py qwen2-0.5b -o /tmp/qwen2_kv         # benchmarks only
    python tools/export_decoder.py llama-0.8b -o /tmp/llama_big        # 3.05 GB, external

Nothing is downloaded: each model is built from a config with seeded random
weights (``torch.manual_seed(0)``; constant parameters such as unit RMSNorm
weights get N(0, 0.1) noise) and exported in eval mode with the TorchScript
exporter (opset 17), or with ``--dynamo`` the dynamo exporter (opset 18; models up to
1.8 GB). Tested with transformers 5.24.0.

What is exported
----------------
``tiny``: a 2-layer ``LlamaForCausalLM`` (hidden 64, 8 query and 4 key/value heads
of 8, SwiGLU FFN 128, RMSNorm, rotary, vocab 256). ``qwen2-0.5b``: a 24-layer
``Qwen2ForCausalLM`` shaped like Qwen2-0.5B (hidden 896, 14 query / 2 key/value
heads of 64, FFN 4864; ``--vocab`` defaults to 151936, tied embeddings).
``llama-0.8b``: a 14-layer ``LlamaForCausalLM`` (hidden 2048, 32 query / 8
key/value heads of 64, FFN 5632, vocab 32000, untied head): 762 M parameters,
3.05 GB in float32, written with its weights in external data.

Inputs: ``input_ids``, ``attention_mask`` (past + new tokens), ``position_ids``
and ``past_key_values.N.key`` / ``past_key_values.N.value`` ``[batch, kv_heads,
past, head_size]``; outputs: ``logits`` and ``present.N.key`` /
``present.N.value`` ``[batch, kv_heads, past + new, head_size]``. Batch and the
sequence axes are dynamic; a prompt runs with a past of length 0. Beside
``model.onnx`` go the transformers ``config.json`` and an onnxruntime-genai
``genai_config.json``. Every export is checked against torch on a prompt pass and
a cached single-token step (max |difference| at most 1e-4).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

SEED = 0
OPSET = 17
TOLERANCE = 1e-4

SHAPES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                 num_key_value_heads=4, intermediate_size=128, vocab_size=256),
    "qwen2-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                       tie_word_embeddings=True),
    "llama-0.8b": dict(hidden_size=2048, num_hidden_layers=14, num_attention_heads=32,
                       num_key_value_heads=8, intermediate_size=5632, vocab_size=32000),
}


class CachedDecoder(torch.nn.Module):
    """A causal LM with flat cache tensors in and out, as optimum exports it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(self.layers)]
        cache = DynamicCache(pairs, config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, past_key_values=cache, use_cache=True)
        present = out.past_key_values
        flat = [t for layer in present.layers for t in (layer.keys, layer.values)]
        return (out.logits, *flat)


def build(shape: str, vocab: int | None) -> CachedDecoder:
    """The seeded model of one shape, in eval mode."""
    settings = dict(SHAPES[shape])
    if vocab:
        settings["vocab_size"] = vocab
    common = dict(max_position_embeddings=512, attn_implementation="eager", use_cache=True)
    if shape.startswith(("tiny", "llama")):
        config, cls = LlamaConfig(**settings, **common), LlamaForCausalLM
    else:
        config, cls = Qwen2Config(**settings, **common), Qwen2ForCausalLM
    torch.manual_seed(SEED)
    model = cls(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.numel() > 1 and bool((param == param.flatten()[0]).all()):
                param.add_(torch.randn_like(param) * 0.1)
    return CachedDecoder(model.eval()).eval()


def names(layers: int) -> tuple[list[str], list[str]]:
    """Graph input and output names."""
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def sample(model: CachedDecoder, batch: int, seq: int, past: int, seed: int = 1) -> tuple:
    """Token ids, mask, positions and a random cache of `past` positions."""
    config = model.model.config
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    positions = torch.arange(past, past + seq, dtype=torch.int64).expand(batch, seq)
    head = config.hidden_size // config.num_attention_heads
    cache = [torch.randn(batch, config.num_key_value_heads, past, head, generator=gen)
             for _ in range(2 * config.num_hidden_layers)]
    return (ids, mask, positions.contiguous(), *cache)


def export(model: CachedDecoder, path: Path) -> None:
    """TorchScript export with dynamic batch and sequence axes."""
    inputs, outputs = names(model.layers)
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "position_ids": {0: "batch", 1: "seq"},
               "attention_mask": {0: "batch", 1: "total"}, "logits": {0: "batch", 1: "seq"}}
    dynamic |= {n: {0: "batch", 2: "past"} for n in inputs[3:]}
    dynamic |= {n: {0: "batch", 2: "total"} for n in outputs[1:]}
    external = sum(p.numel() for p in model.parameters()) * 4 > 1_800_000_000
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, sample(model, 2, 3, 4), str(path), dynamo=False,
                          opset_version=OPSET, do_constant_folding=True, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic,
                          external_data=external)


def export_dynamo(model: CachedDecoder, path: Path) -> None:
    """Dynamo export (opset 18). torch names the presents' joined axis `past + seq`; the
    mask's axis, the same length, is renamed to match (as optimum names them alike)."""
    inputs, outputs = names(model.layers)
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", max=256)
    past, total = torch.export.Dim("past", max=256), torch.export.Dim("total", max=512)
    cache = tuple({0: batch, 2: past} for _ in inputs[3:])
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, cache)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, sample(model, 2, 3, 4), str(path), dynamo=True,
                          opset_version=OPSET + 1, input_names=inputs, output_names=outputs,
                          dynamic_shapes=dynamic, external_data=False)
    proto = onnx.load(str(path))
    joined = next(v for v in proto.graph.output if v.name == outputs[1])
    name = joined.type.tensor_type.shape.dim[2].dim_param
    mask = next(v for v in proto.graph.input if v.name == "attention_mask")
    mask.type.tensor_type.shape.dim[1].dim_param = name
    onnx.save(proto, str(path))


def check(model: CachedDecoder, path: Path) -> float:
    """Largest |onnxruntime - torch| over a prompt pass and a cached step."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, _ = names(model.layers)
    worst = 0.0
    for batch, seq, past in ((1, 5, 0), (2, 1, 6)):
        args = sample(model, batch, seq, past)
        with torch.no_grad():
            want = model(*args)
        got = session.run(None, {n: a.numpy() for n, a in zip(inputs, args, strict=True)})
        for value, ref in zip(got, want, strict=True):
            worst = max(worst, float(np.abs(value - ref.numpy()).max()))
    return worst


def genai_config(config) -> dict:
    """The onnxruntime-genai view of the model's sizes and names."""
    return {"model": {
        "type": config.model_type, "vocab_size": config.vocab_size,
        "context_length": config.max_position_embeddings,
        "decoder": {
            "filename": "model.onnx", "hidden_size": config.hidden_size,
            "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": config.num_key_value_heads,
            "head_size": config.hidden_size // config.num_attention_heads,
            "num_hidden_layers": config.num_hidden_layers,
            "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                       "position_ids": "position_ids",
                       "past_key_names": "past_key_values.%d.key",
                       "past_value_names": "past_key_values.%d.value"},
            "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                        "present_value_names": "present.%d.value"}}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary size")
    parser.add_argument("--dynamo", action="store_true", help="the dynamo exporter")
    args = parser.parse_args(argv)
    model = build(args.shape, args.vocab)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "model.onnx"
    (export_dynamo if args.dynamo else export)(model, path)
    diff = check(model, path)
    print(f"check {path}: max |onnxruntime - torch| = {diff:.3g}")
    if diff > TOLERANCE:
        print(f"difference above {TOLERANCE}", file=sys.stderr)
        return 1
    config = model.model.config
    keys = ("model_type", "architectures", "hidden_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
            "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta",
            "tie_word_embeddings")
    full = config.to_dict()
    full.setdefault("head_dim", config.hidden_size // config.num_attention_heads)
    small = {k: full[k] for k in keys if k in full}
    (args.out / "config.json").write_text(json.dumps(small, indent=2) + "\n")
    (args.out / "genai_config.json").write_text(json.dumps(genai_config(config), indent=2)
                                                 + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
