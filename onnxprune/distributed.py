"""Fan-out of independent tasks: in-process by default, on Ray (the `distributed`
extra: `pip install 'onnxprune[distributed]'`) with `--workers N` (a local Ray
runtime of N CPUs) or `--ray-address ADDR` (an existing cluster).

One interface, `Executor.map(fn, items, shared)`: `fn(shared, item)` for every item,
results in the items' order. On Ray, `shared` (the model's bytes, calibration
arrays) is put in the object store once and passed by reference; each worker
process fetches it once and keeps it for the tasks it runs after, so it travels
once per worker, not once per task. Ray is imported only here, and only when asked
for. Nothing a task computes depends on where it runs, so results are the same
in-process and on Ray.

`threads` (`--threads T`) bounds the numerical threads of every process that works
(`threads.py`): BLAS (through threadpoolctl, and in Ray's workers also through
OMP/OPENBLAS/MKL_NUM_THREADS in the runtime environment, read as they start) and
onnxruntime's intra-op threads, so `--workers 2 --threads 1` uses two cores. Each task
runs its LAPACK factorizations with the run's one thread count (`threads.py`), so
their rounding does not depend on where they run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, TypeVar

from .errors import InputError, first_line
from .threads import factor_threads, limited

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

NEEDS_RAY = "needs Ray: pip install 'onnxprune[distributed]'"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# The value a worker process fetched last, by object id (one at a time).
_FETCHED: dict[str, Any] = {}


class Executor(Protocol):
    """Runs `fn(shared, item)` for every item; results in the items' order."""

    workers: int

    def map(self, fn: Callable[[S, T], R], items: Iterable[T], shared: S = None,
            done: Callable[[int], None] | None = None) -> list[R]:
        ...


@dataclass
class Stats:
    """What a Ray executor did: tasks run, and the worker processes that fetched the
    shared value (each at most once per value)."""

    tasks: int = 0
    fetches: list[int] = field(default_factory=list)


class InProcess:
    """Every task in this process, one after another (the default)."""

    workers = 1

    def map(self, fn: Callable[[S, T], R], items: Iterable[T], shared: S = None,
            done: Callable[[int], None] | None = None) -> list[R]:
        """`[fn(shared, item) for item in items]`; `done(1)` after each."""
        results = []
        for item in items:
            results.append(fn(shared, item))
            if done:
                done(1)
        return results


class RayExecutor:
    """Tasks on a Ray cluster, one CPU each; `shared` goes through the object store."""

    def __init__(self, ray_module, workers: int, threads: int = 0, factor: int = 0) -> None:
        self.ray, self.workers, self.stats = ray_module, workers, Stats()
        self.threads, self.factor = threads, factor
        self._task = ray_module.remote(num_cpus=1, max_retries=0)(_run)

    def map(self, fn: Callable[[S, T], R], items: Iterable[T], shared: S = None,
            done: Callable[[int], None] | None = None) -> list[R]:
        """Submit every item as a task, then gather the results in the items' order
        (`done(n)` as n more finish; a failing task's error is raised as it was)."""
        box = [self.ray.put(shared)]  # boxed: Ray passes it on as a reference
        refs = [self._task.remote(fn, box, item, self.threads, self.factor) for item in items]
        try:
            self._wait(refs, done)
            answers = self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None
        self.stats.tasks += len(answers)
        self.stats.fetches += [pid for _, pid in answers if pid is not None]
        return [result for result, _ in answers]

    def _wait(self, refs: list, done: Callable[[int], None] | None) -> None:
        pending = list(refs)
        while done and pending:
            finished, pending = self.ray.wait(pending, num_returns=1)
            done(len(finished))


def _run(fn: Callable, box: list, item, threads: int = 0, factor: int = 0
         ) -> tuple[Any, int | None]:
    """One task on a worker: the shared value, fetched by this process on its first
    task that needs it, then `fn` (its threads and factorizations held to the run's).
    Returns the result and this pid when it fetched."""
    import ray

    key = box[0].hex()
    fetched = key not in _FETCHED
    if fetched:
        _FETCHED.clear()
        _FETCHED[key] = ray.get(box[0])
    with limited(threads, factor):
        result = fn(_FETCHED[key], item)
    return result, os.getpid() if fetched else None


def import_ray(flag: str) -> ModuleType:
    """The ray module, or one clear error naming the extra."""
    try:
        import ray
    except ImportError:
        raise InputError(f"{flag} {NEEDS_RAY}") from None
    return ray


def check_request(workers: int, address: str | None, threads: int = 0) -> None:
    """Refuse a bad request before any work: workers below 1, threads below 0, or Ray
    missing."""
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if threads < 0:
        raise InputError(f"--threads must be at least 0, got {threads}")
    if address is not None and not address.strip():
        raise InputError("--ray-address is empty")
    if address is not None:
        import_ray("--ray-address")
    elif workers > 1:
        import_ray(f"--workers {workers}")


@contextlib.contextmanager
def executor(workers: int = 1, address: str | None = None,
             object_store_bytes: int | None = None, threads: int = 0) -> Iterator[Executor]:
    """In-process for one worker and no address; else Ray: a local runtime of
    `workers` CPUs (its object store `object_store_bytes`, Ray's default when None),
    or the cluster at `address` (all its CPUs). Ray is shut down afterwards (a local
    runtime with it). `threads` > 0 bounds each process's numerical threads
    (`threads.limited`; 0: each library's default, BLAS one per task on Ray)."""
    check_request(workers, address, threads)
    if address is None and workers == 1:
        with limited(threads, factor_threads(threads) if threads else 0):  # 0: as it was
            yield InProcess()
        return
    ray = import_ray("--ray-address" if address else f"--workers {workers}")
    factor = factor_threads(threads)  # this process's, before Ray starts
    _start(ray, workers, address, object_store_bytes, threads)
    try:
        size = workers if address is None else int(ray.cluster_resources().get("CPU", 1))
        with limited(threads, factor):
            yield RayExecutor(ray, max(size, 1), threads, factor)
    finally:
        ray.shutdown()


def _start(ray, workers: int, address: str | None, object_store_bytes: int | None,
           threads: int = 0) -> None:
    """Join the cluster at `address`, or start a local runtime (never joining one
    that happens to run on this machine); workers start with BLAS held to `threads`."""
    settings = dict(log_to_driver=False, logging_level="ERROR", configure_logging=True)
    if threads > 0:
        settings["runtime_env"] = {"env_vars": {name: str(threads)
                                             for name in THREAD_VARIABLES}}
    try:
        if address is not None:
            ray.init(address=address, **settings)
        else:
            ray.init(address="local", num_cpus=workers, include_dashboard=False,
                     object_store_memory=object_store_bytes, **settings)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        raise InputError(f"cannot start or reach {where}: {first_line(exc)}") from None
