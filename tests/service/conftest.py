from __future__ import annotations

import pytest

from tests.backends import Databases, drop_redis_keys, make_settings, require_redis


@pytest.fixture(scope="session")
def databases(tmp_path_factory):
    dbs = Databases(tmp_path_factory.mktemp("databases"))
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, databases, tmp_path):
    redis_client = require_redis()
    url = databases.sqlite() if request.param == "sqlite" else databases.postgres()
    s = make_settings(url, tmp_path / "home")
    yield s
    drop_redis_keys(redis_client, s.redis_prefix)
