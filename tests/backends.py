"""The real PostgreSQL and Redis of the machine, for service and worker tests.

A test that needs one that is not running fails and says how to start it; it never passes silently.
Each test gets a fresh database (a copy of one migrated template) and its own Redis key prefix.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

PG_URL = os.environ.get("ADAPRUNER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ADAPRUNER_TEST_REDIS", "redis://127.0.0.1:6379/0")
START_PG = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
START_REDIS = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'


def _admin_connection():
    import psycopg

    from service.db import normalize_url

    url = normalize_url(PG_URL).replace("postgresql+psycopg://", "postgresql://")
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_URL} ({error}); start it with `{START_PG}` "
            "or point ADAPRUNER_TEST_PG at one",
            pytrace=False,
        )


def pg_url_for(database: str) -> str:
    base, _, _ = PG_URL.rpartition("/")
    return f"{base}/{database}"


def require_redis(url: str = REDIS_URL):
    import redis

    client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.ConnectionError as error:
        pytest.fail(
            f"Redis is not reachable at {url} ({error}); start it with `{START_REDIS}` "
            "or point ADAPRUNER_TEST_REDIS at one",
            pytrace=False,
        )
    return client


class Databases:
    """Migrated template databases, copied per test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pg_template: str | None = None
        self.sqlite_template: Path | None = None
        self.created: list[str] = []

    def sqlite(self) -> str:
        from service.migrate import upgrade

        if self.sqlite_template is None:
            self.sqlite_template = self.folder / "template.db"
            upgrade(f"sqlite:///{self.sqlite_template}")
        copy = self.folder / f"{uuid.uuid4().hex}.db"
        shutil.copy(self.sqlite_template, copy)
        return f"sqlite:///{copy}"

    def postgres(self) -> str:
        from service.migrate import upgrade

        with _admin_connection() as conn:
            if self.pg_template is None:
                self.pg_template = f"adapruner_tmpl_{uuid.uuid4().hex[:10]}"
                conn.execute(f'CREATE DATABASE "{self.pg_template}"')
                self.created.append(self.pg_template)
                upgrade(pg_url_for(self.pg_template))
            name = f"adapruner_test_{uuid.uuid4().hex[:10]}"
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.pg_template}"')
            self.created.append(name)
        return pg_url_for(name)

    def drop_all(self) -> None:
        if not self.created:
            return
        with _admin_connection() as conn:
            for name in reversed(self.created):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(database_url: str, home: Path, **overrides):
    """Settings of one test: its own database, Redis key prefix and artifacts folder, fast timings. Jobs are
    confined (the default) to models and data under the temporary folder, where the tests' tiny models and
    texts live."""
    import tempfile

    from service.settings import Settings

    values = dict(
        model_roots=(tempfile.gettempdir(),),
        data_roots=(tempfile.gettempdir(),),
        home=home,
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_prefix=f"adapruner-test-{uuid.uuid4().hex[:8]}",
        heartbeat_s=0.3,
        claim_idle_s=3.0,
        sweep_s=0.5,
        reconcile_s=1.0,
        block_s=0.2,
        grace_s=5.0,
        sse_poll_s=0.05,
    )
    return Settings(**(values | overrides))


def drop_redis_keys(client, prefix: str) -> None:
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
