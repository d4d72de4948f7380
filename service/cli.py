"""The ``adapruner`` console script: the library's commands (:mod:`adapruner.cli`) plus the service's: run
the API and workers, manage keys and the database, and talk to a server from a pipeline (``submit | status |
wait | cancel | download``). Parsing and printing only; none of these imports torch except ``worker``.
The library's parser is extended here, so the library never imports the service."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from adapruner import cli
from adapruner.errors import UserError
from service.jobs import JobRequest

DEFAULT_SERVER = "http://127.0.0.1:8000"


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse names the option in its one-line error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def add_commands(sub: Any, *, parser_class: type) -> None:
    serve = sub.add_parser("serve", help="run the REST API and dashboard (migrates the database first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="API processes (each reads the same settings)")
    serve.add_argument(
        "--with-worker",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="N",
        help="also run N local workers (embedded mode: one machine, SQLite by default)",
    )
    serve.add_argument(
        "--open",
        action="store_true",
        help="single-user machine: jobs may read any path, hub id or URL (sets ADAPRUNER_CONFINE=false)",
    )

    worker = sub.add_parser("worker", help="run a worker that pulls jobs from Redis")
    worker.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    worker.add_argument(
        "--gpus", help="GPU indices this worker owns, e.g. 0 or 2,3 (sets CUDA_VISIBLE_DEVICES; default: all visible)"
    )

    _add_keys_command(sub, parser_class=parser_class)

    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?", default=None, help="default: head (upgrade) / base (downgrade)")

    def remote(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--server",
            default=os.environ.get("ADAPRUNER_SERVER", DEFAULT_SERVER),
            help="server URL (env ADAPRUNER_SERVER)",
        )
        p.add_argument("--key", default=os.environ.get("ADAPRUNER_API_KEY"), help="API key (env ADAPRUNER_API_KEY)")
        return p

    submit = remote("submit", 'submit a job request (JSON: {"kind": "search"|"prune", "spec": {...}})')
    submit.add_argument("request", help="path of the JSON request, or - for stdin")
    submit.add_argument("--idempotency-key", default=None)
    submit.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 unless it succeeded")
    for name, help_ in (("status", "show a job"), ("cancel", "cancel a job"), ("wait", "wait for a job to end")):
        p = remote(name, help_)
        p.add_argument("job_id")
        if name == "wait":
            p.add_argument("--timeout", type=float, default=None)
    download = remote("download", "download a job's artifacts")
    download.add_argument("job_id")
    download.add_argument("folder")


def _add_keys_command(sub: Any, *, parser_class: type) -> None:
    keys = sub.add_parser("keys", help="API keys (stored hashed; the key is printed once)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=parser_class)
    create = keys_sub.add_parser("create", help="create a key and print it")
    create.add_argument("--name", required=True)
    create.add_argument("--admin", action="store_true", help="sees and manages every job")
    create.add_argument(
        "--max-job-cost",
        type=_positive_int,
        default=None,
        help="largest estimated cost of one of its jobs, in token-passes (default: the server's ADAPRUNER_MAX_JOB_COST)",
    )
    keys_sub.add_parser("list", help="list keys (id, name, prefix, scope, job cost limit, revoked)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key: the API refuses it at once")
    revoke.add_argument("key", help="the key's id or prefix, as `keys list` shows them")


def _client(args: argparse.Namespace):
    from adapruner.client import Client

    if not args.key:
        raise UserError(
            "--key: an API key is required (or set ADAPRUNER_API_KEY); create one with `adapruner keys create`"
        )
    return Client(args.server, api_key=args.key)


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _ended(job: dict[str, Any]) -> int:
    _print(job)
    return 0 if job["status"] == "succeeded" else 1


def read_request(path: str):
    """A job request from a JSON file (or stdin), validated with the library's configs."""
    try:
        data = json.loads(sys.stdin.read() if path == "-" else Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"request: cannot read {path}: {error}") from None
    return TypeAdapter(JobRequest).validate_python(data)


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.submit(read_request(args.request), idempotency_key=args.idempotency_key)
    if not args.wait:
        _print(job)
        return 0
    print(f"submitted {job['id']}", file=sys.stderr)
    return _ended(client.wait(job["id"]))


def cmd_status(args: argparse.Namespace) -> int:
    _print(_client(args).job(args.job_id))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    _print(_client(args).cancel(args.job_id))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    return _ended(_client(args).wait(args.job_id, timeout=args.timeout))


def cmd_download(args: argparse.Namespace) -> int:
    for path in _client(args).download(args.job_id, args.folder):
        print(path)
    return 0


def _settings():
    from service.settings import Settings

    return Settings.from_env()


def cmd_keys(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from service import crud
    from service.db import make_engine, make_sessionmaker, transaction
    from service.migrate import upgrade
    from service.models import ApiKey

    settings = _settings()
    upgrade(settings.db_url)
    with transaction(make_sessionmaker(make_engine(settings.db_url))) as session:
        if args.keys_command == "create":
            key, plain = crud.create_api_key(
                session, name=args.name, admin=args.admin, max_job_cost=args.max_job_cost
            )
            print(plain)
            print(
                f"key {key.id} ({'admin' if key.admin else 'user'}): store it now, it is not shown again",
                file=sys.stderr,
            )
        elif args.keys_command == "revoke":
            key = crud.revoke_api_key(session, ident=args.key)
        else:
            for key in session.scalars(select(ApiKey).order_by(ApiKey.id)):
                scope = "admin" if key.admin else "user"
                limit = f"max-job-cost={key.max_job_cost}" if key.max_job_cost is not None else "max-job-cost=server"
                print("\t".join([str(key.id), key.name, key.prefix + "...", scope, limit] + ["revoked"] * key.revoked))
    if args.keys_command == "revoke":
        _note_revocation(settings)
        print(f"key {key.id} ({key.name}, {key.prefix}...) revoked", file=sys.stderr)
    return 0


def _note_revocation(settings) -> None:
    """Tell the API's key caches (through Redis) that a key was revoked, so they check SQL again."""
    import redis

    from service import queue

    try:
        queue.note_revocation(queue.connect(settings.redis_url), queue.Keys(settings.redis_prefix))
    except redis.RedisError as error:
        print(f"adapruner: Redis unreachable ({error}): a running API may accept the key for 5 s more", file=sys.stderr)


def cmd_db(args: argparse.Namespace) -> int:
    from service.migrate import downgrade, upgrade

    settings = _settings()
    if args.action == "upgrade":
        upgrade(settings.db_url, args.revision or "head")
    else:
        downgrade(settings.db_url, args.revision or "base")
    print(f"database {args.action}d: {settings.db_url}")
    return 0


def parse_gpus(text: str) -> tuple[str, ...]:
    """``--gpus`` as GPU indices (``"0"``, ``"2,3"``); a one-line error names the option otherwise."""
    gpus = tuple(part.strip() for part in text.split(","))
    if not gpus or not all(g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise UserError(f"--gpus: {text!r} is not a list of distinct GPU indices such as 0 or 2,3")
    return gpus


def visible_gpus() -> tuple[str, ...]:
    """The GPUs this process may hand out, without importing torch: ``CUDA_VISIBLE_DEVICES`` when set,
    else the indices ``nvidia-smi`` lists, else none."""
    if (visible := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        return tuple(g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1")
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in listing.stdout.splitlines() if line.strip().isdigit())


def worker_gpus(n_workers: int, gpus: tuple[str, ...]) -> list[dict[str, str]]:
    """The extra environment of each of ``n_workers`` local workers: with GPUs, each worker owns its own
    (``CUDA_VISIBLE_DEVICES``; with more GPUs than workers, an even share each; with fewer, they are
    shared round-robin); without GPUs, nothing."""
    if not gpus:
        return [{} for _ in range(n_workers)]
    if n_workers >= len(gpus):
        return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} for i in range(n_workers)]
    share = len(gpus) // n_workers
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * share : (i + 1) * share])} for i in range(n_workers)]


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.main import main as worker_main

    if args.gpus is not None:  # before anything initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(parse_gpus(args.gpus))
    worker_main(_settings(), max_jobs=args.max_jobs)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.main import create_app
    from service.migrate import upgrade
    from service.settings import settings_env

    if args.open:  # the environment carries it to API processes and workers alike
        os.environ["ADAPRUNER_CONFINE"] = "false"
    settings = _settings()
    if not settings.confine:
        print(
            "adapruner: open mode (ADAPRUNER_CONFINE=false): jobs may read any file, hub id or URL this machine "
            "can reach; for a single user only (docs/security.md)",
            file=sys.stderr,
        )
    upgrade(settings.db_url)
    workers = []
    _exit_on_signals()
    try:
        _first_key(settings, create=bool(args.with_worker))
        if args.with_worker:
            env = os.environ | settings_env(settings)
            command = [sys.executable, "-m", "worker", "--parent", str(os.getpid())]
            gpus = visible_gpus()
            if 0 < len(gpus) < args.with_worker:
                print(f"adapruner: {args.with_worker} workers share {len(gpus)} GPU(s)", file=sys.stderr)
            workers = [subprocess.Popen(command, env=env | own) for own in worker_gpus(args.with_worker, gpus)]
        app = "service.main:create_app" if args.workers > 1 else create_app(settings)
        uvicorn.run(
            app, factory=args.workers > 1, workers=args.workers, host=args.host, port=args.port, access_log=False
        )
    finally:
        _stop_workers(workers, timeout=settings.grace_s + settings.heartbeat_s + 5)
    return 0


def _exit_on_signals() -> None:
    """SIGTERM and SIGINT end ``serve`` through its cleanup. uvicorn re-raises the signal it caught once the
    API has shut down; with the default SIGTERM action that would kill this process before its workers
    were stopped (they would go on taking jobs, orphaned)."""

    def stop(_signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup itself is not interrupted
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _stop_workers(workers: list[subprocess.Popen], *, timeout: float) -> None:
    """SIGTERM each worker (it hands its job back), then wait; kill one that outlives ``timeout``."""
    for proc in workers:
        proc.terminate()
    for proc in workers:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _first_key(settings, *, create: bool) -> None:
    """A server without any key yet: with ``create`` (embedded mode) a first admin key, printed once so that
    a new user can sign in right away; else a line saying how to create one."""
    from sqlalchemy import func, select

    from service import crud
    from service.db import make_engine, make_sessionmaker, transaction
    from service.models import ApiKey

    with transaction(make_sessionmaker(make_engine(settings.db_url))) as session:
        if session.scalar(select(func.count()).select_from(ApiKey)):
            return
        if create:
            _, plain = crud.create_api_key(session, name="embedded-admin", admin=True)
    if create:
        print(f"adapruner: first API key (admin), store it now: {plain}", file=sys.stderr)
    else:
        print(
            "adapruner: no API key yet; create one with `adapruner keys create --name NAME [--admin]` "
            "(same ADAPRUNER_* settings), or run `adapruner serve --with-worker` for the embedded mode",
            file=sys.stderr,
        )


COMMANDS = {
    "serve": cmd_serve,
    "worker": cmd_worker,
    "keys": cmd_keys,
    "db": cmd_db,
    "submit": cmd_submit,
    "status": cmd_status,
    "cancel": cmd_cancel,
    "wait": cmd_wait,
    "download": cmd_download,
}


def build_parser() -> cli.Parser:
    """The library's parser with the service's commands added."""
    parser = cli.build_parser()
    add_commands(cli.subcommands(parser), parser_class=cli.Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, parser=build_parser(), commands=cli.COMMANDS | COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
