"""The layer-wise walk that the least-squares refit, Wanda, SparseGPT and the
sensitivity curves share.

Layers are visited in *levels* in topological order: a layer's level is one more than
that of the deepest layer its inputs are computed from, so no layer of a level feeds
another of the same level. For each level the walk runs two prefixes of the model in
onnxruntime up to the level's inputs — the model as changed so far (earlier levels
already pruned, refit or sparsified) and, when asked for, the dense model — hands each
layer the running statistics (`Moments`) of its input over the calibration stream, and
lets the caller apply the level's new weights before the next level runs. Errors
therefore do not compound from one level to the next. The two prefixes run one after
the other (the dense one over every batch first, its outputs kept), so onnxruntime
holds one of them at a time.

The statistics are measured in this process; the per-layer solves of one level are
independent, so `solve_level` runs them as tasks of an executor (`distributed.py`:
in-process, or fanned out on Ray), each the same function of the same arrays wherever
it runs, and the caller applies the results in layer order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any, TypeVar

import numpy as np
from onnx import ModelProto

from .calibrate import Feeds, not_running
from .distributed import Executor
from .external import fresh
from .moments import Moments
from .targets.onnxruntime import Session, serialized, session
from .threads import fixed_blas

L = TypeVar("L")
Fetch = Callable[[Feeds], dict[str, np.ndarray]]  # feeds → the feeds and named tensors
Node = tuple[Sequence[str], Sequence[str], bool]  # inputs, outputs, whether a layer
Prefixes = Callable[[list[str]], AbstractContextManager[tuple[Fetch, Fetch | None]]]
Check = Callable[[int, int], None]  # (level number, bytes of its dense inputs held) -> None
# (moments, layer, current tensors, dense tensors or None, batch number) -> None
Add = Callable[[Moments, L, dict, dict | None, int], None]


def levels(nodes: Iterable[Node], layers: Sequence[L],
           reads: Callable[[L], Iterable[str]]) -> list[list[L]]:
    """The layers in levels, from the graph's nodes in topological order (which of them
    are layers) and the tensors each layer reads; within a level, in `layers` order."""
    depth: dict[str, int] = {}
    for inputs, outputs, is_layer in nodes:
        here = max((depth.get(name, 0) for name in inputs), default=0) + int(is_layer)
        for name in outputs:
            depth[name] = here
    found: dict[int, list[L]] = {}
    for layer in layers:
        level = max((depth.get(name, 0) for name in reads(layer)), default=0)
        found.setdefault(level, []).append(layer)
    return [found[level] for level in sorted(found)]


def walk(layer_levels: list[list[L]], stream: Callable[[], Iterator[Feeds]],
         prefixes: Prefixes, tensor: Callable[[L], str], key: Callable[[L], Hashable],
         add: Add, update: Callable[[list[L], dict[int, Moments]], None],
         progress: Callable[[int], None] | None = None, check: Check | None = None) -> None:
    """For each level: run the `prefixes` up to the tensors the layers read, measure
    their inputs over the stream (layers with equal `key` share one `Moments`, filled
    by `add`), then `update` the model with the level's new weights. `check` is told
    the bytes of the dense inputs a level holds once they are measured."""
    for number, level in enumerate(layer_levels):
        names = sorted({tensor(layer) for layer in level})
        with prefixes(names) as (current, dense):
            stats = measure(level, stream, current, dense, key, add, progress,
                            None if check is None else partial(check, number))
        update(level, stats)
        del stats  # let go of the level's statistics before the next level is measured


def measure(level: list[L], stream: Callable[[], Iterator[Feeds]], current: Fetch,
            dense: Fetch | None, key: Callable[[L], Hashable], add: Add,
            progress: Callable[[int], None] | None = None,
            held: Callable[[int], None] | None = None) -> dict[int, Moments]:
    """Input statistics of a level's layers over the stream, by `id` of the layer. The
    dense prefix runs first over every batch and is let go before the current one runs
    (one of them in memory at a time); `held` is told the bytes of its outputs kept."""
    shared = {key(layer): layer for layer in level}  # e.g. Q, K and V read one input
    stats = {name: Moments() for name in shared}
    references, size = _run_all(dense, stream) if dense is not None else (None, 0)
    if held is not None:
        held(size)
    for number, feeds in enumerate(stream()):
        values = current(feeds)
        reference = references[number] if references is not None else None
        with fixed_blas():  # Gram and cross products round by BLAS's thread count
            for name, layer in shared.items():
                add(stats[name], layer, values, reference, number)
        if progress:
            progress(len(next(iter(feeds.values()))))
    getattr(current, "close", lambda: None)()
    return {id(layer): stats[key(layer)] for layer in level}


def _run_all(fetch: Fetch, stream: Callable[[], Iterator[Feeds]]) -> tuple[list[dict], int]:
    """One prefix's tensors for every batch and their bytes (the feeds aside); then its
    session is let go."""
    found, size = [], 0
    for feeds in stream():
        found.append(fetch(feeds))
        size += sum(v.nbytes for name, v in found[-1].items() if name not in feeds)
    getattr(fetch, "close", lambda: None)()
    return found, size


def solve_level(executor: Executor, solve: Callable[[Any, Moments, Any], Any],
                level: list[L], stats: dict[int, Moments], task_of: Callable[[L], Any],
                settings: Any = None) -> list:
    """`solve(settings, moments of the layer, task_of(layer))` for every layer of a
    level as tasks of `executor`, results in layer order. The level's distinct
    statistics (layers reading one input share theirs) and `settings` are the map's
    shared value, which travels once per worker; each layer's own data is its item."""
    index: dict[int, int] = {}
    distinct: list[Moments] = []
    for layer in level:
        moments = stats[id(layer)]
        if id(moments) not in index:
            index[id(moments)] = len(distinct)
            distinct.append(moments)
    items = ((index[id(stats[id(layer)])], task_of(layer)) for layer in level)
    return executor.map(_solve_one, items, (solve, settings, distinct))


def _solve_one(shared: tuple, item: tuple) -> Any:
    """One layer's solve (a task)."""
    solve, settings, distinct = shared
    number, data = item
    return solve(settings, distinct[number], data)


def fetcher(sess: Session | None, names: list[str]) -> Fetch:
    """feeds → the feeds and the named tensors of one run (None: no run)."""

    def fetch(feeds: Feeds) -> dict[str, np.ndarray]:
        values = dict(feeds)
        try:
            values.update(zip(names, sess.run(names, feeds), strict=True) if sess else {})
        except Exception as exc:
            raise not_running(exc) from None
        return values

    return fetch


class Later:
    """A `Fetch` whose session is made at its first run and let go by `close()`."""

    def __init__(self, make: Callable[[], Session], names: list[str]) -> None:
        self.make, self.names, self.fetch = make, names, None

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        if self.fetch is None:
            self.fetch = fetcher(self.make(), self.names)
        return self.fetch(feeds)

    def close(self) -> None:
        self.fetch = None


def with_values(model: ModelProto | bytes | str, values: dict[str, np.ndarray]) -> Session:
    """A session of the model with some constants replaced by new values (initializer
    overrides: nothing is re-exported), unoptimized so values are not folded away."""
    return session(model, optimization="none", initializers=values, explain=False)


def changed_prefixes(dense: ModelProto, values: dict[str, np.ndarray]) -> Prefixes:
    """Prefixes cut from the dense model at a level's inputs: run as they are, and with
    the constants of `values` (read at each level, so new values are seen) replaced.
    Their sessions are made one at a time (`Later`)."""
    from .verify import truncated

    @contextmanager
    def run(names: list[str]) -> Iterator[tuple[Fetch, Fetch]]:
        probe = truncated(dense, names)
        with serialized(probe) as data:
            yield _replaced(data, probe, values, names), Later(
                lambda: with_values(data, {}), names)

    return run


def teacher_prefixes(current: ModelProto, teacher: ModelProto,
                     values: dict[str, np.ndarray]) -> Prefixes:
    """Prefixes cut at a level's inputs from `current` with the constants of `values`
    replaced (read at each level) and from `teacher`, the dense model it is fit to (its
    tensors named as `current`'s)."""
    from .verify import truncated

    @contextmanager
    def run(names: list[str]) -> Iterator[tuple[Fetch, Fetch]]:
        probe = truncated(current, names)
        with serialized(probe) as data, serialized(truncated(teacher, names)) as dense:
            yield _replaced(data, probe, values, names), Later(
                lambda: with_values(dense, {}), names)

    return run


def _replaced(data: bytes | str, probe: ModelProto, values: dict[str, np.ndarray],
              names: list[str]) -> Later:
    """The prefix `probe` (serialized as `data`) with the constants of `values` it holds
    replaced, each through a map of its own when it is on disk (let go with the
    session)."""
    kept = {t.name for t in probe.graph.initializer}
    return Later(lambda: with_values(data, {n: fresh(v) for n, v in values.items()
                                            if n in kept}), names)


def model_prefixes(current: ModelProto, dense: ModelProto | None) -> Prefixes:
    """Prefixes cut at a level's inputs from `current`, a model changed in place between
    levels (read at each level), and from `dense` (None: not run). Graph inputs are not
    fetched (the feeds hold them)."""
    inputs = {value.name for value in current.graph.input}

    @contextmanager
    def run(names: list[str]) -> Iterator[tuple[Fetch, Fetch | None]]:
        names = [name for name in names if name not in inputs]
        yield _prefix(current, names), _prefix(dense, names) if dense is not None else None

    return run


def _prefix(model: ModelProto, names: list[str]) -> Fetch:
    """The prefix of `model` up to `names`, its session made when first run (`Later`)."""
    from .verify import truncated

    return Later(lambda: session(truncated(model, names)), names) if names else \
        fetcher(None, names)
