"""Strict input at the edge of the API: JSON without NaN or Infinity, and no text (body strings and keys,
headers, path, query) with a NUL character or a lone UTF-16 surrogate. PostgreSQL stores neither and JSON
has no non-finite numbers, so such input is refused with a 422 naming where it was, before any route runs.

The library's configs refuse the same values (``adapruner.config.StrictModel``); this layer is what makes
the refusal a 422 rather than a 500 (FastAPI's own 422 echoes the input, which cannot be encoded).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapruner.config import text_problem, value_problem

Loc = list[str | int]


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would read the body as JSON: a JSON content type, or none at all."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind = value.split(b";")[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return True


def _texts(scope: Scope) -> Iterator[tuple[Loc, str]]:
    """Every piece of text of a request except its body: path, query parameters, headers."""
    yield ["path"], scope.get("path", "")
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        yield ["query", name], name + value
    for name, value in scope["headers"]:
        yield ["header", name.decode("latin-1")], value.decode("latin-1")


class StrictInput:
    """ASGI middleware: refuse (422) a request whose path, query, headers or JSON body holds NUL, a lone
    surrogate, NaN or Infinity. The body is read whole (``BodyLimit`` outside bounds it), then replayed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for loc, text in _texts(scope):
            problem = text_problem(text)
            if problem:
                return await _refuse(send, loc, problem)
        if not _is_json(scope):
            return await self.app(scope, receive, send)
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        found = None
        if body:
            try:
                found = value_problem(json.loads(body), ["body"])  # NaN and Infinity parse as floats
            except UnicodeDecodeError:
                found = ["body"], "Input should be JSON encoded as UTF-8"
            except RecursionError:
                found = ["body"], "Input is nested too deeply"
            except ValueError:
                pass  # not JSON at all: the route's own parser answers with its 422
        if found:
            return await _refuse(send, *found)

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, loc: Loc, msg: str) -> None:
    detail = [{"type": "value_error", "loc": loc, "msg": msg}]
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 422, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def storable(value: Any) -> Any:
    """``value`` (text, or JSON data) made storable and encodable: NUL characters and lone surrogates in
    text become visible escapes (``\\x00``, ``\\ud800``), non-finite floats become None. The worker writes
    every error, log text and result through this, so a job always ends with its real cause recorded."""
    if isinstance(value, str):
        if text_problem(value) is None:
            return value
        return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value
