"""The numerical threads of this process (`--threads`), and the one BLAS thread count
of the work whose results a run's weights are made of.

OpenBLAS rounds by its thread count: a Gram matrix XᵀX (SYRK), a large product and a
factorization (SparseGPT's inverse and Cholesky factor, the refit's solve) each split
their sums by it, so each count gives its own last bits — and SparseGPT's column-by-
column choices turn last bits into other masks. onnxruntime's kernels do not (threads
split the outputs). A run therefore fixes BLAS's count once for the statistics
products of the layer-wise walk and for every solve, wherever they run (`fixed_blas`):
one thread when `--threads` is given (the same weights for every `--threads` and
`--workers`), else the count BLAS has in the process that starts the run (what an
in-process run uses, so a run fanned out on Ray gives its weights). Thread counts are
set through threadpoolctl (the `distributed` extra installs it); without it BLAS keeps
the counts its environment gave it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from .targets.onnxruntime import default_threads

_FACTOR = [0]  # threads of factorizations in this process (0: BLAS's own count)


def _limits(threads: int) -> contextlib.AbstractContextManager:
    """BLAS held to `threads` meanwhile (nothing without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


@functools.cache
def _controller():
    """threadpoolctl's view of this process's thread pools, made once (None without it)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS held to one thread meanwhile, cheaply enough to wrap each of many calls
    (nothing without threadpoolctl)."""
    controller = _controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def blas_threads() -> int:
    """The thread count of BLAS in this process now (0: unknown, no threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return 0
    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(counts, default=0)


def factor_threads(threads: int) -> int:
    """The factorizations' thread count of a run with `--threads threads`: one when it
    is given, else BLAS's count here (0: unknown)."""
    return 1 if threads > 0 else blas_threads()


@contextlib.contextmanager
def limited(threads: int, factor: int = 0) -> Iterator[None]:
    """This process's BLAS and onnxruntime intra-op threads held to `threads` (0: left
    alone), and its factorizations to `factor` threads (0: BLAS's count), meanwhile."""
    before, _FACTOR[0] = _FACTOR[0], factor
    try:
        if threads < 1:
            yield
            return
        with _limits(threads), default_threads(threads):
            yield
    finally:
        _FACTOR[0] = before


@contextlib.contextmanager
def fixed_blas() -> Iterator[None]:
    """Around BLAS work the weights are made of: the run's fixed thread count."""
    if _FACTOR[0] < 1:
        yield
        return
    with _limits(_FACTOR[0]):
        yield
