"""Serves the dashboard: ``GET /`` (the single page), ``/static/*`` (its files) and the sign-in cookie.

Every asset is a file of ``service/web/static``: the dashboard works on machines without internet, and the
Content-Security-Policy of the page forbids loading anything from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse

from service.api.deps import KEY_COOKIE, KeyDep

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Only the files shipped with the package can be read: a name is looked up, never joined to a path.
FILES = {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dashboard file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)


@router.get("/")
def index() -> FileResponse:
    """The dashboard (one page; the part after ``#`` picks the view)."""
    return _file("index.html")


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    return _file(name)


@router.post("/web/session")
def sign_in(key: KeyDep, request: Request, response: Response) -> dict[str, str]:
    """Check the key sent as ``Authorization: Bearer KEY`` and set it as an HttpOnly cookie, which the API
    accepts on GET requests only: the browser's EventSource and download links cannot send a header."""
    plain = request.headers.get("authorization", "")[7:].strip() or request.headers.get("x-api-key", "")
    response.set_cookie(
        KEY_COOKIE,
        plain,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return {"name": key.name}


@router.delete("/web/session", status_code=status.HTTP_204_NO_CONTENT)
def sign_out(response: Response) -> None:
    response.delete_cookie(KEY_COOKIE, path="/")
