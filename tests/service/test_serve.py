"""``adapruner serve --with-worker`` supervises its workers: SIGTERM or SIGINT stops the API and every
worker (tests/worker/test_parent.py: a worker whose parent dies hands its job back and exits)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.backends import REDIS_URL, require_redis
from tests.worker.cluster import ROOT

pytestmark = pytest.mark.slow


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def wait_for(predicate, *, timeout: float, what: str, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-3000:] if log else ''}")


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


class Serve:
    """``adapruner serve ARGS`` in a subprocess on a free port, with a fresh home (SQLite) and the test Redis."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        require_redis()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = os.environ | {
            "ADAPRUNER_HOME": str(tmp_path / "home"),
            "ADAPRUNER_REDIS_URL": REDIS_URL,
            "ADAPRUNER_REDIS_PREFIX": f"adapruner-serve-{self.port}",
            "ADAPRUNER_PRELOAD": "false",
            "ADAPRUNER_HEARTBEAT_S": "0.5",
            "ADAPRUNER_BLOCK_S": "0.2",
            "PYTHONPATH": str(ROOT),
        }
        self.log = tmp_path / "serve.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def up(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def __enter__(self) -> Serve:
        wait_for(self.up, timeout=60, what="the API", log=self.log)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_serve_stops_the_api_and_its_workers(tmp_path, signum):
    workers: list[int] = []
    try:
        with Serve(tmp_path, "--with-worker", "2") as server:
            workers = children(server.proc.pid)
            assert len(workers) == 2, workers
            log = server.log
            wait_for(lambda: log.read_text().count("consuming") == 2, timeout=60, what="the workers", log=log)
            server.proc.send_signal(signum)
            assert server.proc.wait(30) == 0, log.read_text()[-3000:]
            wait_for(lambda: not any(alive(p) for p in workers), timeout=15, what="the workers to exit", log=log)
    finally:
        kill_leftovers(workers)


def test_plain_serve_on_a_fresh_home_says_how_to_create_a_key(tmp_path):
    with Serve(tmp_path) as server:
        wait_for(lambda: "keys create" in server.log.read_text(), timeout=10, what="the hint", log=server.log)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
