"""Latency measurement with onnxruntime: sessions on a chosen execution provider,
models timed in turns (blocks of runs, so every model sees the same machine state),
percentiles and throughput, and the `onnxprune bench` comparison."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
from onnx import ModelProto

from .errors import InputError, first_line
from .shapes import input_specs, sample_shapes
from .targets.onnxruntime import CPU, Session, check_provider, session
from .verify import sample_feeds

Progress = Callable[[int], None] | None


def timing_session(model: ModelProto, provider: str = CPU, threads: int = 0
                   ) -> Session:
    """A session as a deployment would build it: full graph optimization, one
    inter-op thread, `threads` intra-op threads (0: onnxruntime's default)."""
    check_provider(provider)
    return session(model, providers=[provider], optimization="all", threads=threads,
                   inter_threads=1)


def interleaved_times(sessions: list[Session], feeds: dict[str, np.ndarray],
                      runs: int, block: int = 10, pause: float = 0.05,
                      progress: Progress = None) -> list[list[float]]:
    """Seconds of each run of each session. Sessions take turns in blocks of `block`
    runs after one warm-up turn; a short pause between turns lets the idle sessions'
    spinning worker threads stop before the next one is timed."""
    block = max(1, min(block, runs))
    times: list[list[float]] = [[] for _ in sessions]
    own = [fitted(feeds, sess) for sess in sessions]
    for turn in range(-(-runs // block) + 1):
        for k, sess in enumerate(sessions):
            time.sleep(pause)
            for _ in range(block):
                start = time.perf_counter()
                sess.run(None, own[k])
                if turn:
                    times[k].append(time.perf_counter() - start)
            if progress and turn:
                progress(block)
    return [t[:runs] for t in times]


def fitted(feeds: dict[str, np.ndarray], sess: Session) -> dict[str, np.ndarray]:
    """Timing feeds cut to a session's smaller static input sizes (a pruned model's
    key/value cache lost heads): its first entries, as good as any for timing. A
    stand-in without `get_inputs` takes the feeds as they are."""
    own = dict(feeds)
    for spec in sess.get_inputs() if hasattr(sess, "get_inputs") else ():
        value = own.get(spec.name)
        if value is None or len(spec.shape) != value.ndim:
            continue
        for axis, size in enumerate(spec.shape):
            if isinstance(size, int) and 0 < size < value.shape[axis]:
                value = np.take(value, np.arange(size), axis=axis)
        own[spec.name] = value
    return own


def interleaved_medians(models: list[ModelProto], feeds: dict[str, np.ndarray], runs: int,
                        provider: str = CPU, threads: int = 0, block: int = 10) -> list[float]:
    """Median seconds per run of each model, timed in turns."""
    sessions = [timing_session(m, provider, threads) for m in models]
    return [statistics.median(t) for t in interleaved_times(sessions, feeds, runs, block)]


@dataclass
class LatencyStats:
    """Latency percentiles (milliseconds) and throughput (samples per second)."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float
    runs: int


def latency_stats(seconds: list[float], batch: int) -> LatencyStats:
    """Percentiles of per-run times; throughput from the median."""
    ms = np.asarray(seconds) * 1e3
    p50, p90, p99 = (float(np.percentile(ms, q)) for q in (50, 90, 99))
    return LatencyStats(p50, p90, p99, float(ms.mean()), batch * 1e3 / p50, len(seconds))


def batch_shapes(model: ModelProto, batch: int,
                 overrides: dict[str, tuple[int, ...]] | None = None
                 ) -> dict[str, tuple[int, ...]]:
    """Input shapes with the leading axis set to `batch` (refused where it is fixed to
    another size)."""
    if batch < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch}")
    shapes = sample_shapes(model, overrides)
    for spec in input_specs(model):
        dims = spec.type.tensor_type.shape.dim
        if not dims:
            continue
        fixed = max(dims[0].dim_value, 0) if dims[0].HasField("dim_value") else 0
        if fixed and fixed != batch:
            raise InputError(f"input {spec.name!r} has a fixed batch size of {fixed}; "
                             f"cannot run batch {batch}")
        shapes[spec.name] = (batch,) + tuple(shapes[spec.name][1:])
    return shapes


@dataclass
class BenchRow:
    """One provider and batch size: the dense model, and the pruned one when given."""

    provider: str
    batch_size: int
    dense: LatencyStats
    pruned: LatencyStats | None = None

    @property
    def speedup(self) -> float | None:
        """Dense median latency over pruned median latency."""
        return self.dense.p50_ms / self.pruned.p50_ms if self.pruned else None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["speedup"] = self.speedup
        return data


def benchmark(dense: ModelProto, pruned: ModelProto | None = None, *,
              batch_sizes: tuple[int, ...] = (1,), providers: tuple[str, ...] = (CPU,),
              runs: int = 50, threads: int = 0, block: int = 10,
              input_shapes: dict[str, tuple[int, ...]] | None = None, seed: int = 0,
              progress: Progress = None) -> list[BenchRow]:
    """Latency percentiles and throughput per provider and batch size; dense and
    pruned are timed in turns within each row, on the same seeded inputs."""
    if runs < 1:
        raise InputError(f"--runs must be at least 1, got {runs}")
    for provider in providers:
        check_provider(provider)
    models = [dense] + ([pruned] if pruned is not None else [])
    rows = []
    for provider in providers:
        sessions = [timing_session(m, provider, threads) for m in models]
        for batch in batch_sizes:
            feeds = sample_feeds(dense, batch_shapes(dense, batch, input_shapes), seed)
            times = _timed(sessions, feeds, runs, block, progress)
            stats = [latency_stats(t, batch) for t in times]
            rows.append(BenchRow(provider, batch, stats[0], stats[1] if pruned else None))
    return rows


def _timed(sessions, feeds, runs: int, block: int, progress: Progress) -> list[list[float]]:
    try:
        return interleaved_times(sessions, feeds, runs, block, progress=progress)
    except InputError:
        raise
    except Exception as exc:
        shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in feeds.items())
        raise InputError(f"onnxruntime could not run the models on {shapes}: "
                         f"{first_line(exc)}") from None


class Timer(Protocol):
    """What the latency budget measures with (`bench.OrtTimer` times in onnxruntime)."""

    def layer(self, model: ModelProto) -> float:
        """Seconds of one run of a one-layer model."""

    def ratio(self, pruned: ModelProto, repeat: int = 1) -> float:
        """Latency of a pruned model over the dense model's (`repeat`: longer)."""


class OrtTimer:
    """Times with onnxruntime what the latency budget needs: one-layer models alone
    (median of `layer_runs`), and pruned models against the dense model in turns (about
    `seconds` of dense runs, 40 to `runs`; see `paired_ratio`). The budget reaches
    onnxruntime only through such a timer, so another can stand in for it."""

    layer_runs = 20
    runs = 400
    seconds = 1.5
    pause = 0.02

    def __init__(self, dense: ModelProto, feeds: dict[str, np.ndarray], provider: str = CPU,
                 threads: int = 0):
        self.dense, self.feeds, self.provider, self.threads = dense, feeds, provider, threads
        self._session = None
        self._runs = self.runs

    def layer(self, model: ModelProto) -> float:
        """Median seconds of one run of a one-layer model (seeded inputs)."""
        sess = timing_session(model, self.provider, self.threads)
        rng = np.random.default_rng(1)
        feeds = {i.name: rng.standard_normal(list(i.shape)).astype(np.float32)
                 for i in sess.get_inputs()}
        times = interleaved_times([sess], feeds, self.layer_runs, block=self.layer_runs,
                                  pause=0)
        return statistics.median(times[0])

    def ratio(self, pruned: ModelProto, repeat: int = 1) -> float:
        """Latency of `pruned` over the dense model's, timed in turns (`repeat` times the
        usual number of runs)."""
        if self._session is None:
            self._session = timing_session(self.dense, self.provider, self.threads)
            self._runs = self._run_count()
        runs = repeat * self._runs
        block = max(5, runs // 20)
        sessions = [self._session, timing_session(pruned, self.provider, self.threads)]
        times = interleaved_times(sessions, self.feeds, runs, block, pause=self.pause)
        return paired_ratio(times, block)

    def _run_count(self) -> int:
        """About `seconds` of dense runs (timed on the second of two), 40 to `runs`."""
        for _ in range(2):
            start = time.perf_counter()
            self._session.run(None, self.feeds)
        each = max(time.perf_counter() - start, 1e-6)
        return min(self.runs, max(40, int(self.seconds / each)))


def paired_ratio(times: list[list[float]], block: int) -> float:
    """Second model's latency over the first's: the median over turns of the ratio of
    the two blocks' lower quartiles taken back to back. Load only ever adds time to a
    run, so the lower quartile of a block tracks the unloaded latency and the pairing
    cancels load that comes and goes."""
    count = min(len(times[0]), len(times[1]))
    ratios = [float(np.percentile(times[1][i:i + block], 25)
                    / np.percentile(times[0][i:i + block], 25))
              for i in range(0, count, block)]
    return statistics.median(ratios)
