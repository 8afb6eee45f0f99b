"""A real local Ray cluster for the tests: `ray start --head` on the loopback address
with 2 CPUs and a small object store, in its own temporary folder, stopped at the end
of the session. The tests that use it are skipped, with the reason, only when Ray is
not installed.

It runs with `--block`: the `ray start` process supervises the cluster's processes
(its reaper kills them when it ends), so stopping it — and its process group, which
this fixture made — stops exactly this cluster, not another Ray on the machine (as
`ray stop`, which stops every Ray process of the user, would).

Ray enables token authentication for a cluster when `~/.ray/auth_token` exists, and a
client given an explicit address sends it only with `RAY_AUTH_MODE=token` set before
Ray is imported; this loopback-only cluster runs with `RAY_AUTH_MODE=disabled`, so the
tests need no token and change nothing in the home folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

OBJECT_STORE_BYTES = 200_000_000
START_SECONDS = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the cluster's process group (made by this fixture), then SIGKILL to
    whatever is left of it."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
            if sig == signal.SIGTERM:
                time.sleep(2)  # the reaper stops the rest


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Start a Ray head on 127.0.0.1 (2 CPUs, small object store); yield its address;
    stop it."""
    port = free_port()
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths
    ray = str(Path(sys.executable).parent / "ray")
    log = open(os.path.join(folder, "start.log"), "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--object-store-memory",
         str(OBJECT_STORE_BYTES), "--include-dashboard", "false", "--temp-dir", folder,
         "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ray start failed: "
                                   + Path(folder, "start.log").read_text()[-2000:])
            time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(process)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """The address (127.0.0.1:PORT) of a Ray head started for this session."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install "
                                      "'onnxprune[distributed]'")
    with cluster() as address:
        yield address
