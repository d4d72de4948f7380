"""Property-based requests generated from the OpenAPI schema (schemathesis): no input makes a 5xx,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from service import crud
from service.db import transaction
from service.main import create_app


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error(settings):
    app = create_app(settings)
    with transaction(app.state.sessions) as session:
        _, key = crud.create_api_key(session, name="fuzz")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        check(operation, key)


def check(operation, key: str) -> None:
    @given(case=operation.as_strategy())
    @hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def no_server_error(case):
        response = case.call(headers={"Authorization": f"Bearer {key}"})
        assert response.status_code < 500, (operation.label, case.formatted_path, response.text[:500])

    no_server_error()
