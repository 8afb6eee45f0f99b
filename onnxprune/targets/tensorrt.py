"""TensorRT settings for sparse models: onnxruntime's TensorRT provider options, the
equivalent `trtexec` command line, and (with TensorRT installed: `pip install
'onnxprune[tensorrt]'`) an engine build that reports which layers TensorRT found
eligible for sparse math and which picked sparse tactics, from the builder log.

Sparse tensor cores run FP16 or INT8 (and TF32) math on 2:4 weights; TensorRT times
sparse and dense tactics and keeps the faster one, so `picked` may be shorter than
`eligible`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import InputError, ModelError

ELIGIBLE = re.compile(r"\(Sparsity\) Layers eligible for sparse math:\s*(.*)$")
PICKED = re.compile(r"\(Sparsity\) TRT inference plan picked sparse implementation for "
                    r"layers:\s*(.*)$")


def _shapes(shapes: dict[str, tuple[int, ...]]) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def provider_options(fp16: bool = True, int8: bool = False, sparsity: bool = True,
                     cache_dir: str | None = None, workspace_bytes: int | None = None,
                     input_shapes: dict[str, tuple[int, ...]] | None = None
                     ) -> dict[str, str]:
    """Options for onnxruntime's TensorrtExecutionProvider."""
    options = {"trt_fp16_enable": str(fp16), "trt_int8_enable": str(int8),
               "trt_sparsity_enable": str(sparsity)}
    if cache_dir:
        options.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(cache_dir))
    if workspace_bytes:
        options["trt_max_workspace_size"] = str(int(workspace_bytes))
    if input_shapes:
        profile = _shapes(input_shapes)
        options.update(trt_profile_min_shapes=profile, trt_profile_opt_shapes=profile,
                       trt_profile_max_shapes=profile)
    return options


def trtexec_command(model: str | os.PathLike, fp16: bool = True, int8: bool = False,
                    sparsity: str = "enable", input_shapes: dict | None = None,
                    engine: str | os.PathLike | None = None) -> list[str]:
    """The trtexec command that builds the same engine (`sparsity`: enable or force)."""
    if sparsity not in ("disable", "enable", "force"):
        raise InputError(f"trtexec --sparsity is disable, enable or force, not {sparsity!r}")
    command = ["trtexec", f"--onnx={model}", f"--sparsity={sparsity}"]
    command += ["--fp16"] if fp16 else []
    command += ["--int8"] if int8 else []
    command += [f"--shapes={_shapes(input_shapes)}"] if input_shapes else []
    command += [f"--saveEngine={engine}"] if engine else []
    return command + ["--verbose"]


@dataclass
class SparseTactics:
    """Layers TensorRT found eligible for sparse math, and those that picked it."""

    eligible: list[str] = field(default_factory=list)
    picked: list[str] = field(default_factory=list)


def sparse_tactics(log: list[str]) -> SparseTactics:
    """Read the (Sparsity) lines of a TensorRT builder or trtexec log."""
    found = SparseTactics()
    for line in log:
        for pattern, target in ((ELIGIBLE, found.eligible), (PICKED, found.picked)):
            match = pattern.search(line)
            if match:
                target.extend(n.strip() for n in match.group(1).split(",") if n.strip())
    return found


@dataclass
class EngineReport:
    """An engine build: its size, the sparse tactics, and the builder log."""

    engine_bytes: int
    tactics: SparseTactics
    log: list[str]


def build_engine(model: str | os.PathLike, fp16: bool = True, int8: bool = False,
                 sparsity: bool = True, input_shapes: dict | None = None,
                 engine: str | os.PathLike | None = None) -> EngineReport:
    """Build a TensorRT engine from an ONNX file and report its sparse tactics."""
    trt = _import_tensorrt()
    log: list[str] = []
    logger = _collecting_logger(trt, log)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {model}: {errors}")
    config = builder.create_builder_config()
    for flag, wanted in (("FP16", fp16), ("INT8", int8), ("SPARSE_WEIGHTS", sparsity)):
        if wanted:
            config.set_flag(getattr(trt.BuilderFlag, flag))
    if input_shapes:
        config.add_optimization_profile(_profile(builder, input_shapes))
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"TensorRT could not build an engine: {(log or ['no log'])[-1]}")
    if engine:
        with open(engine, "wb") as handle:
            handle.write(plan)
    return EngineReport(plan.nbytes, sparse_tactics(log), log)


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise InputError("TensorRT is not installed: pip install 'onnxprune[tensorrt]' "
                         "(needs an NVIDIA GPU)") from None
    return trt


def _collecting_logger(trt, lines: list[str]):
    class Collecting(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            lines.append(str(msg))

    return Collecting()


def _profile(builder, input_shapes: dict):
    profile = builder.create_optimization_profile()
    for name, dims in input_shapes.items():
        profile.set_shape(name, dims, dims, dims)
    return profile
