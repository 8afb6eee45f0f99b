"""The measurements a readable report needs beyond the prune report: latency of the
dense and pruned models timed in turns, and fidelity on calibration data."""

from __future__ import annotations

from dataclasses import asdict

from onnx import ModelProto

from .api import Report
from .bench import CPU, benchmark


def measured_latency(original: ModelProto, pruned: ModelProto, report: Report,
                     runs: int = 30, provider: str = CPU, progress=None) -> dict:
    """Median latency (ms) of both models at the report's input shapes, in turns."""
    shapes = {name: tuple(shape) for name, shape in report.input_shapes.items()}
    batch = next(iter(shapes.values()))[0] if shapes else 1
    row = benchmark(original, pruned, batch_sizes=(batch,), providers=(provider,), runs=runs,
                    input_shapes=shapes, progress=progress)[0]
    return {"provider": provider, "batch_size": batch, "runs": runs,
            "before_ms": row.dense.p50_ms, "after_ms": row.pruned.p50_ms,
            "speedup": row.speedup}


def measured_fidelity(original: ModelProto, pruned: ModelProto, calib,
                      samples: int | None = None, batch_size: int = 8, images=None) -> dict:
    """Per-output agreement of the pruned model with the original on `calib`."""
    from .compare import compare

    result = compare(original, pruned, calib, samples, batch_size, runs=1, images=images)
    return {"samples": result.samples, "outputs": [asdict(o) for o in result.outputs]}


def report_document(report: Report, latency: dict | None = None,
                    fidelity: dict | None = None, sensitivity: dict | None = None,
                    title: str = "onnxprune report") -> dict:
    """Everything a rendered report shows, as plain data (also the JSON report)."""
    data = report.to_dict()
    data.pop("nodes", None)
    return {"title": title, "report": data, "latency": latency, "fidelity": fidelity,
            "sensitivity": sensitivity}
