"""Property-based requests generated from the OpenAPI schema (schemathesis): no input makes a 5xx, on SQLite
and on PostgreSQL, including hostile values (NaN, Infinity, NUL, lone surrogates, odd Unicode) put in any
body field, header, query or path parameter."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service import crud
from service.db import transaction
from service.main import create_app


def fuzzed(settings, **generation):
    """The app, a key of it, and every operation of its OpenAPI schema (generated with ``generation``)."""
    app = create_app(settings)
    with transaction(app.state.sessions) as session:
        _, key = crud.create_api_key(session, name="fuzz")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    if generation:
        schema.config.generation.update(**generation)
    return app, key, [result.ok() for result in schema.get_all_operations()]


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error(settings):
    _app, key, operations = fuzzed(settings)
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


#: Values JSON cannot carry or SQL cannot store (NaN, infinities, NUL, lone surrogates) and awkward but valid
#: text; text only where a URL or header can carry it.
NON_FINITE = [float("nan"), float("inf"), float("-inf")]
TEXT = ["\x00", "a\x00b", "日本語😀", "\u202e\u0301", "", " ", "%00", "../../etc/passwd"]
SURROGATES = ["\ud800", "x\udfffy"]


def _paths(value: Any, at: tuple = ()) -> list[tuple]:
    """Every place inside a JSON document (dict keys and list indices), the document itself included."""
    found = [at]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*at, index))
    return found


def _replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


@pytest.mark.slow
def test_hostile_values_in_any_field_header_or_path_never_get_a_server_error(settings):
    app, key, operations = fuzzed(settings, allow_x00=True, codec="utf-8")  # NUL and any Unicode in generated text
    with TestClient(app, raise_server_exceptions=False) as client:
        for operation in operations:
            poison(operation, client, key)


def poison(operation, client: TestClient, key: str) -> None:
    @given(case=operation.as_strategy(), data=st.data())
    @hypothesis_settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def no_server_error(case, data):
        body = case.body if isinstance(case.body, dict | list) else None
        places = ["query", "header"] + ["path"] * bool(case.path_parameters) + ["body"] * (body is not None)
        place = data.draw(st.sampled_from(places))
        params, headers = dict(case.query or {}), {"Authorization": f"Bearer {key}"}
        path_values = {k: str(v) for k, v in (case.path_parameters or {}).items()}
        if place == "body":
            at = data.draw(st.sampled_from(_paths(body)))
            body = _replaced(body, at, data.draw(st.sampled_from(NON_FINITE + TEXT + SURROGATES)))
        elif place == "path":
            path_values[data.draw(st.sampled_from(sorted(path_values)))] = data.draw(st.sampled_from(TEXT))
        elif place == "query":
            params[data.draw(st.sampled_from([*params, "status", "limit"]))] = data.draw(st.sampled_from(TEXT))
        else:
            name = data.draw(st.sampled_from(["Idempotency-Key", "Authorization", "Last-Event-ID", "X-Api-Key"]))
            headers[name] = data.draw(st.sampled_from(["\x00", f"Bearer {key}\x00", "日本語"])).encode()  # raw bytes
        path = case.path.format(**{k: quote(v, safe="") for k, v in path_values.items()})
        content = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass") if body is not None else None
        kwargs = {"content": content, "headers": headers | {"content-type": "application/json"}} if content else {}
        response = client.request(case.method, path, params=params, **({"headers": headers} | kwargs))
        assert response.status_code < 500, (operation.label, place, path, params, headers, content, response.text)

    no_server_error()
