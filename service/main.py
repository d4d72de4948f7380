"""The FastAPI application. It validates, records and enqueues; it never imports torch."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from service import queue
from service.api.deps import KeyCache
from service.api.routes import jobs, meta
from service.db import make_engine, make_sessionmaker
from service.metrics import ServiceCollector
from service.settings import Settings
from service.storage import artifact_store
from service.strict import StrictInput
from service.web import router as web


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not a Content-Length is sent."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > self.limit:
            return await self._refuse(send)
        seen, refused = 0, False

        async def counted() -> dict:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit and not refused:
                refused = True
                await self._refuse(send)
                return {"type": "http.disconnect"}  # the app stops reading; its response is dropped
            return message

        async def guarded(message: dict) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, guarded)

    @staticmethod
    async def _refuse(send: Send) -> None:
        body = b'{"detail":"request body too large"}'
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    app = FastAPI(
        title="adapruner",
        version="1",
        description="Automatic structured pruning of LLMs: jobs, trials, live events, artifacts.",
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.db_url)
    app.state.sessions = make_sessionmaker(app.state.engine)
    # Single-statement reads (status polls, key checks, event streams) need no transaction: one round trip.
    app.state.reads = make_sessionmaker(app.state.engine.execution_options(isolation_level="AUTOCOMMIT"))
    app.state.redis = queue.connect(settings.redis_url)
    app.state.key_cache = KeyCache()
    app.state.artifacts = artifact_store(settings)
    app.state.metrics = CollectorRegistry()
    app.state.metrics.register(ServiceCollector(app.state.sessions, app.state.redis, queue.Keys(settings.redis_prefix)))
    app.include_router(jobs.router, prefix="/v1")
    app.include_router(meta.router)
    app.include_router(web.router)  # the dashboard: GET / and /static/*
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(StrictInput)  # inside BodyLimit: the body it reads whole is bounded
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    return app
