"""Fixtures of the worker tests: a fresh database, Redis namespace and worker subprocesses per test."""

from __future__ import annotations

import pytest

from tests.backends import drop_redis_keys, make_settings, require_redis
from tests.worker.cluster import Cluster


@pytest.fixture
def cluster(databases, tmp_path):
    client = require_redis()
    logs = tmp_path / "logs"
    logs.mkdir()
    c = Cluster(make_settings(databases.postgres(), tmp_path / "home"), logs)
    yield c
    c.stop()
    drop_redis_keys(client, c.settings.redis_prefix)
