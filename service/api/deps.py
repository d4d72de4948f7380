"""Dependencies of the routes: settings, a database session, Redis, and the caller's API key."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

import redis
from fastapi import Depends, Header, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from service import crud, queue
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
    """Verified keys for ``ttl_s`` seconds: a status poll costs one SQL query, not two. Each entry holds the
    revocation counter (in Redis, see :func:`service.queue.note_revocation`) it was made under; once a key
    is revoked anywhere, the counter has moved and every older entry is checked in SQL again, so a revoked
    key is refused at once."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self._keys: dict[str, tuple[float, int, ApiKey]] = {}

    def get(self, plain: str, revocations: int) -> ApiKey | None:
        hit = self._keys.get(plain)
        fresh = hit and time.monotonic() - hit[0] < self.ttl_s and hit[1] == revocations
        return hit[2] if fresh else None

    def put(self, plain: str, key: ApiKey, revocations: int) -> None:
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[plain] = (time.monotonic(), revocations, key)


#: Set by the dashboard's sign-in (service/web); read-only requests only, so a cross-site form cannot act with it.
KEY_COOKIE = "adapruner_key"


def _lookup(sessions, plain: str) -> ApiKey | None:
    with sessions() as session:
        key = crud.find_api_key(session, plain=plain)
        if key is not None:
            session.expunge(key)
        return key


def _verify(request: Request, plain: str) -> ApiKey | None:
    """The key, from the cache unless a key was revoked since it was cached (or Redis cannot tell)."""
    cache: KeyCache = request.app.state.key_cache
    try:
        revocations = queue.revocations(request.app.state.redis, queue.Keys(request.app.state.settings.redis_prefix))
    except redis.RedisError:
        return _lookup(request.app.state.reads, plain)
    key = cache.get(plain, revocations)
    if key is None:
        key = _lookup(request.app.state.reads, plain)
        if key is not None:
            cache.put(plain, key, revocations)
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
    key = await run_in_threadpool(_verify, request, plain) if plain else None
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
