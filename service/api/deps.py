"""Dependencies of the routes: settings, a database session, Redis, and the caller's API key."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

import redis
from fastapi import Depends, Header, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from service import crud
from service.models import ApiKey
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


class KeyCache:
    """Verified keys for ``ttl_s`` seconds: a status poll costs one query, not two. A revoked key stops
    working within ``ttl_s``."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self._keys: dict[str, tuple[float, ApiKey]] = {}

    def get(self, plain: str) -> ApiKey | None:
        hit = self._keys.get(plain)
        return hit[1] if hit and time.monotonic() - hit[0] < self.ttl_s else None

    def put(self, plain: str, key: ApiKey) -> None:
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[plain] = (time.monotonic(), key)


#: Set by the dashboard's sign-in (service/web); read-only requests only, so a cross-site form cannot act with it.
KEY_COOKIE = "adapruner_key"


def _lookup(sessions, plain: str) -> ApiKey | None:
    with sessions() as session:
        key = crud.find_api_key(session, plain=plain)
        if key is not None:
            session.expunge(key)
        return key


async def get_key(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> ApiKey:
    plain = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        plain = authorization[7:].strip()
    if not plain and request.method == "GET":  # the dashboard's cookie: EventSource and downloads send no header
        plain = request.cookies.get(KEY_COOKIE)
    cache: KeyCache = request.app.state.key_cache
    key = cache.get(plain) if plain else None
    if key is None and plain:
        key = await run_in_threadpool(_lookup, request.app.state.reads, plain)
        if key is not None:
            cache.put(plain, key)
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid API key is required: send 'Authorization: Bearer KEY' (create one with `adapruner keys create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
KeyDep = Annotated[ApiKey, Depends(get_key)]
