"""A typed Python client of the adapruner REST API, for pipelines (``pip install adapruner[client]``).

from service.jobs import SearchRequest  # the service's job envelopes

client = Client("http://server:8000", api_key="apk_...")
job = client.submit(SearchRequest(spec=SearchJob(ratio=0.2)))
job = client.wait(job["id"])
client.download(job["id"], "runs/pruned")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from adapruner.errors import UserError

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


class ApiError(UserError):
    """The server refused a request; the message carries its status and reason (field errors for 422)."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status, self.detail = status, detail
        if isinstance(detail, list):  # FastAPI validation errors
            text = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in detail)
        else:
            text = str(detail)
        super().__init__(f"HTTP {status}: {text}")


class Client:
    def __init__(self, url: str, *, api_key: str, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise UserError(f"cannot reach {self.http.base_url}: {error}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json()

    def submit(
        self, request: BaseModel | dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Submit a job: a typed request (:mod:`service.jobs`), or the same as a dict (``{"kind": ...,
        "spec": {...}}``, as the REST API takes it; the server validates it and answers a bad field with
        :class:`ApiError` 422)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = request if isinstance(request, dict) else request.model_dump(mode="json")
        return self._call("POST", "/v1/jobs", json=body, headers=headers)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def jobs(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset} | ({"status": status} if status else {})
        return self._call("GET", "/v1/jobs", params=params)

    def trials(self, job_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/jobs/{job_id}/trials")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/retry")

    def wait(self, job_id: str, *, timeout: float | None = None, poll_s: float = 2.0) -> dict[str, Any]:
        """Poll until the job has ended (or ``timeout`` seconds passed: :class:`TimeoutError`)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout:g} s")
            time.sleep(poll_s)

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/jobs/{job_id}/artifacts")

    def download(self, job_id: str, folder: str | Path) -> list[Path]:
        """Stream every artifact of the job into ``folder``; returns the files written. Only a succeeded
        job has artifacts: for any other the :class:`UserError` says why."""
        job = self.job(job_id)
        if job["status"] != "succeeded":
            why = f" ({job['error'].splitlines()[0]})" if job.get("error") else ""
            raise UserError(f"job {job_id} is {job['status']}{why}: only a succeeded job has artifacts to download")
        folder = Path(folder)
        written = []
        for artifact in self.artifacts(job_id):
            target = folder / artifact["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.http.stream("GET", artifact["url"]) as response:
                if response.status_code >= 400:
                    raise ApiError(response.status_code, response.read().decode(errors="replace"))
                with open(target, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
            written.append(target)
        return written
