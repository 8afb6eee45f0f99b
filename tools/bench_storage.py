"""File sizes of unstructured sparsity under each storage, and the outputs onnxruntime
computes from the written files.

    python tools/bench_storage.py [--sparsity 0.5 0.7]

For resnet50 (torchvision structure, seeded weights), paraphrase-MiniLM-L3 and the
PP-OCRv4 detector: every Conv/MatMul/Gemm weight is sparsified (magnitude, `--all`)
and saved; the table gives the file size, the original size over it, and the
largest relative L2 difference between the outputs onnxruntime computes from the
saved file and from the same weights saved dense (float32, or float16 for the
--fp16 rows), on seeded sample inputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from model_files import real_inputs, real_path, zoo_model  # noqa: E402

from onnxprune import model as model_io  # noqa: E402
from onnxprune import sparsify  # noqa: E402
from onnxprune.shapes import sample_shapes  # noqa: E402
from onnxprune.verify import relative_error, run, sample_feeds  # noqa: E402

STORAGES = [("dense", False, "int64"), ("sparse", False, "int64"), ("sparse", False, "int16"),
            ("dense", True, "int64"), ("sparse", True, "int16")]


def models() -> list[tuple[str, onnx.ModelProto, dict]]:
    found = [("resnet50", zoo_model("resnet50"), {})]
    for name in ("paraphrase_minilm_l3", "ppocr_det_v4"):
        found.append((name, onnx.load(str(real_path(name))), real_inputs(name)))
    return found


def saved_size(model: onnx.ModelProto, folder: str, name: str) -> tuple[int, str]:
    path = os.path.join(folder, name)
    model_io.save(model, path)
    return os.path.getsize(path), path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.7])
    args = parser.parse_args(argv)
    print(f"{'model':>22s} {'sparsity':>8s} {'storage':>22s} {'MB':>8s} {'smaller':>8s} "
          f"{'output diff':>11s}")
    with tempfile.TemporaryDirectory() as folder:
        for label, model, shapes in models():
            original, _ = saved_size(model, folder, "original.onnx")
            feeds = sample_feeds(model, sample_shapes(model, shapes))
            for sparsity in args.sparsity:
                twins = {}
                for storage, fp16, indices in STORAGES:
                    out, _ = sparsify(model, "unstructured", sparsity=sparsity, all_layers=True,
                                      storage=storage, fp16=fp16, sparse_indices=indices,
                                      input_shapes=shapes)
                    size, path = saved_size(out, folder, "sparse.onnx")
                    outputs = run(path, feeds)
                    twins.setdefault(fp16, outputs)
                    diff = max(relative_error(twins[fp16][k], v) for k, v in outputs.items())
                    what = f"{storage}{' fp16' if fp16 else ''}" + \
                        (f" {indices}" if storage == "sparse" else "")
                    print(f"{label:>22s} {sparsity:8.2f} {what:>22s} {size / 1e6:8.2f} "
                          f"{original / size:7.2f}x {diff:11.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
