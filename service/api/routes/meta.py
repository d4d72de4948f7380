"""``/v1/catalog``, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request, Response, status
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from adapruner import catalog
from adapruner.registry import Registry
from service.api.deps import RedisDep, SessionDep, SettingsDep
from service.jobs import JOB_SPECS
from service.limits import server_limits
from service.schemas import Catalog, CatalogEntry, Health

router = APIRouter(tags=["meta"])


def registries() -> dict[str, Registry]:
    return {name.lower(): value for name, value in vars(catalog).items() if isinstance(value, Registry)}


@router.get("/v1/catalog", response_model=Catalog)
def get_catalog(settings: SettingsDep) -> Catalog:
    """Every registered plug-in (adapters, metrics, corpora, ...), the JSON schema of each job kind and this
    server's limits on its fields."""
    return Catalog(
        plugins={
            kind: [CatalogEntry(name=e.name, summary=e.summary) for e in registry.entries()]
            for kind, registry in registries().items()
        },
        job_kinds=list(JOB_SPECS),
        schemas={kind: spec.model_json_schema() for kind, spec in JOB_SPECS.items()},
        limits=server_limits(settings),
    )


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: jobs by state, queue depth, trials, heartbeat age."""
    return PlainTextResponse(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
def readyz(session: SessionDep, client: RedisDep, response: Response) -> Health:
    """The database and Redis are reachable."""
    checks = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:  # noqa: BLE001 (any failure means not ready)
        checks["database"] = f"error: {type(error).__name__}"
    try:
        client.ping()
        checks["redis"] = "ok"
    except redis.RedisError as error:
        checks["redis"] = f"error: {type(error).__name__}"
    ok = all(v == "ok" for v in checks.values())
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if ok else "unavailable", checks=checks)
