from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect

from service.db import normalize_url
from service.migrate import downgrade, upgrade
from service.models import Base

TABLES = {"api_keys", "jobs", "trials", "events", "artifacts"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_downgrade_upgrade_round_trip(backend, databases, tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}" if backend == "sqlite" else databases.postgres()
    if backend == "postgresql":
        downgrade(url)  # the copy starts migrated; go back to empty first
    engine = create_engine(normalize_url(url))

    def tables() -> set[str]:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}

    assert tables() == set()
    upgrade(url)
    assert tables() == TABLES
    # The migration creates exactly what the models describe (column names per table).
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys()), table.name
    downgrade(url)
    assert tables() == set()
    upgrade(url)
    assert tables() == TABLES
    engine.dispose()
