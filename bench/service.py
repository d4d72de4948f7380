"""Service benchmarks against this machine's PostgreSQL and Redis.

``queue``: N small prune jobs (a tiny random LLaMA, about 0.2 s of work each) over W worker processes:
throughput and queue latency (submit -> an attempt starts), every job checked to succeed exactly once.
``api``: a loopback load test of ``GET /v1/jobs/{id}`` at a fixed request rate against ``adapruner serve``
in its own process: latency percentiles (the target is p99 under 20 ms at 200 requests/s).

    .venv/bin/python bench/service.py                  # both; writes the "service" section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.baseline import write_section  # noqa: E402
from service import crud  # noqa: E402
from service.db import transaction  # noqa: E402
from service.settings import settings_env  # noqa: E402
from tests.backends import Databases, drop_redis_keys, make_settings, require_redis  # noqa: E402
from tests.worker.cluster import Cluster, prune_request  # noqa: E402


def tiny_model(folder: Path) -> tuple[Path, dict[str, str]]:
    from tests.conftest import make_tiny_tokenizer, tiny_llama

    tokenizer = make_tiny_tokenizer()
    model_dir = folder / "model"
    tiny_llama(vocab_size=len(tokenizer), layers=4).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    texts = {}
    for name in ("a", "test"):
        path = folder / f"{name}.txt"
        path.write_text("\n\n".join(f"{name} text for the queue benchmark, block {i}. " * 4 for i in range(60)))
        texts[name] = str(path)
    return model_dir, texts


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def bench_queue(cluster: Cluster, model_dir: Path, texts: dict[str, str], *, jobs: int, workers: int) -> dict:
    for _ in range(workers):
        cluster.start_worker()
    time.sleep(15)  # let every worker import torch and the library before the clock starts
    start = time.monotonic()
    ids = [cluster.submit(prune_request(model_dir, texts)) for _ in range(jobs)]
    cluster.wait(
        lambda: all(cluster.job(i).status.value in ("succeeded", "failed") for i in ids),
        timeout=3600,
        what="all jobs",
    )
    wall = time.monotonic() - start
    rows = [cluster.job(i) for i in ids]
    assert all(j.status.value == "succeeded" and j.attempts == 1 for j in rows), "a job did not succeed exactly once"
    latency = [(j.started_at - j.created_at).total_seconds() for j in rows]
    run = [(j.finished_at - j.started_at).total_seconds() for j in rows]
    return {
        "jobs": jobs,
        "workers": workers,
        "wall_s": wall,
        "throughput": jobs / wall,
        "latency_p50": percentile(latency, 50),
        "latency_p99": percentile(latency, 99),
        "run_p50": statistics.median(run),
        "workers_used": len({j.worker_id for j in rows}),
    }


async def load(url: str, key: str, job_id: str, *, rate: float, seconds: float, connections: int = 32) -> list[float]:
    """Open-loop GETs at ``rate`` per second over ``connections`` keep-alive HTTP/1.1 connections
    (as wrk2): latency counts from each request's scheduled send time, so a backlog counts its wait.

    Plain asyncio streams, not httpx: an httpx client at this rate stalled for tens of seconds even
    against a constant-response Starlette app (see the notes in BENCHMARKS.md); this one did not.
    """
    host, port = url.removeprefix("http://").split(":")
    request = f"GET /v1/jobs/{job_id} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    scheduled_sends: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        while (scheduled := await scheduled_sends.get()) is not None:
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - scheduled)
            errors += not status.startswith(b"HTTP/1.1 200")
        writer.close()

    begin = time.perf_counter()
    senders = [asyncio.create_task(connection()) for _ in range(connections)]
    for i in range(int(rate * seconds)):
        scheduled = begin + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        scheduled_sends.put_nowait(scheduled)
    for _ in senders:
        scheduled_sends.put_nowait(None)
    await asyncio.gather(*senders)
    if errors:
        raise RuntimeError(f"{errors} requests failed")
    return latencies


def bench_api(settings, *, rate: float, seconds: float, api_workers: int) -> dict:
    import socket

    import httpx

    from service.jobs import PruneRequest
    from service.db import make_engine, make_sessionmaker

    sessions = make_sessionmaker(make_engine(settings.db_url))
    with transaction(sessions) as session:
        _, key = crud.create_api_key(session, name="bench")
        job = crud.create_job(session, owner_id=None, request=PruneRequest(), settings=settings)
        job.owner_id = crud.find_api_key(session, plain=key).id
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | settings_env(settings)
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", str(api_workers)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{url}/healthz")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        asyncio.run(load(url, key, job.id, rate=rate, seconds=2))  # warm-up
        latencies = asyncio.run(load(url, key, job.id, rate=rate, seconds=seconds))
    finally:
        server.terminate()
        server.wait()
    ms = [x * 1000 for x in latencies]
    return {
        "rate": rate,
        "requests": len(ms),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn processes")
    parser.add_argument("--repeats", type=int, default=3, help="API load runs per database, each one a table row")
    parser.add_argument("--section", default="service")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    redis_client = require_redis()
    lines = [
        "## Service: job queue and API latency",
        "",
        f"`{' '.join(['.venv/bin/python bench/service.py', *(argv if argv is not None else sys.argv[1:])])}` "
        f"on {os.cpu_count()} CPU cores, PostgreSQL and Redis on loopback.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        databases = Databases(folder)
        try:
            model_dir, texts = tiny_model(folder)
            # API latency first, on fresh databases: the queue run writes a lot (checkpoints, autovacuum).
            results = []
            for backend in ("postgresql", "sqlite"):
                url = databases.postgres() if backend == "postgresql" else databases.sqlite()
                for run in range(args.repeats):
                    a = bench_api(
                        make_settings(url, folder / f"home-{backend}-{run}"),
                        rate=args.rate,
                        seconds=args.seconds,
                        api_workers=args.api_workers,
                    )
                    print(backend, a)
                    results.append((backend, a))
            (folder / "logs").mkdir()
            cluster = Cluster(make_settings(databases.postgres(), folder / "home"), folder / "logs")
            try:
                q = bench_queue(cluster, model_dir, texts, jobs=args.jobs, workers=args.workers)
            finally:
                cluster.stop()
                drop_redis_keys(redis_client, cluster.settings.redis_prefix)
            print(q)
            lines += [
                "| jobs | workers | wall s | jobs/s | queue latency p50 s | queue latency p99 s | run p50 s | workers used |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|",
                f"| {q['jobs']} | {q['workers']} | {q['wall_s']:.1f} | {q['throughput']:.2f} | {q['latency_p50']:.2f} "
                f"| {q['latency_p99']:.2f} | {q['run_p50']:.2f} | {q['workers_used']} |",
                "",
                "Every job succeeded exactly once (one attempt each). Queue latency is the time from submit to the "
                "start of an attempt: with all jobs submitted at once it is mostly waiting for a free worker.",
                "",
            ]
            lines += [
                "| database | rate req/s | requests | p50 ms | p95 ms | p99 ms | max ms |",
                "|---|---:|---:|---:|---:|---:|---:|",
                *(
                    f"| {b} | {a['rate']:.0f} | {a['requests']} | {a['p50']:.1f} | {a['p95']:.1f} | {a['p99']:.1f} "
                    f"| {a['max']:.1f} |"
                    for b, a in results
                ),
                "",
                f"`GET /v1/jobs/{{id}}` with an API key, `adapruner serve --workers {args.api_workers}`, each row "
                f"{args.seconds:g} s after a 2 s warm-up. The client is open-loop (latency counts from each request's "
                "scheduled send time) over 32 keep-alive connections, in another process; the client, the API and the "
                "database share the cores.",
            ]
        finally:
            databases.drop_all()
    if not args.no_write:
        write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
