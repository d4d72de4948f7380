"""Dependencies of the routes: settings, a database session, Redis, and the caller's API key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import redis
from fastapi import Depends, Header, HTTPException, Request, status
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


def get_key(
    session: Annotated[Session, Depends(get_session)],
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> ApiKey:
    plain = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        plain = authorization[7:].strip()
    key = crud.find_api_key(session, plain=plain) if plain else None
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid API key is required: send 'Authorization: Bearer KEY' (create one with `adapruner keys create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    session.commit()  # end the read transaction: SQLite's immediate transactions hold the write lock
    return key


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
KeyDep = Annotated[ApiKey, Depends(get_key)]
