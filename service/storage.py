"""Where finished jobs' artifacts live: a local folder (the default, also a shared filesystem mount) or
S3-compatible object storage (AWS S3, MinIO) for workers on several hosts.

A worker writes a job's files into ``artifacts/<job id>/`` and then :meth:`ArtifactStore.publish`
makes them available to the API; the API streams them back with :meth:`ArtifactStore.response`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from fastapi import HTTPException, status
from fastapi.responses import FileResponse, StreamingResponse

from adapruner.errors import UserError
from service.settings import Settings

CHUNK = 1 << 20


def local_files(folder: Path) -> list[tuple[str, int]]:
    """``(relative path, size)`` of every finished file under ``folder``."""
    return [
        (str(path.relative_to(folder)), path.stat().st_size)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(".tmp")
    ]


class ArtifactStore:
    """Base class: ``publish`` after a job succeeded, ``response`` to download one recorded file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def folder(self, job_id: str) -> Path:
        return self.settings.artifacts / job_id

    def publish(self, job_id: str) -> list[tuple[str, int]]:
        raise NotImplementedError

    def response(self, job_id: str, path: str):
        raise NotImplementedError

    def local_copy(self, job_id: str) -> Path:
        """A local folder with the published files of ``job_id`` (a job that starts from ``job:<id>`` reads it)."""
        raise NotImplementedError


class LocalStore(ArtifactStore):
    def publish(self, job_id: str) -> list[tuple[str, int]]:
        return local_files(self.folder(job_id))

    def response(self, job_id: str, path: str) -> FileResponse:
        folder = self.folder(job_id).resolve()
        target = (folder / path).resolve()
        if not target.is_relative_to(folder) or not target.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no artifact {path!r}")
        return FileResponse(target, filename=Path(path).name)

    def local_copy(self, job_id: str) -> Path:
        return self.folder(job_id)


class S3Store(ArtifactStore):
    """Objects ``s3://<bucket>/<prefix><job id>/<path>``; credentials from the usual AWS variables."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        import boto3

        if not settings.s3_bucket:
            raise UserError("ADAPRUNER_S3_BUCKET: set the bucket of the s3 artifact store")
        self.client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url or None)

    def key(self, job_id: str, path: str) -> str:
        return f"{self.settings.s3_prefix}{job_id}/{path}"

    def publish(self, job_id: str) -> list[tuple[str, int]]:
        files = local_files(self.folder(job_id))
        for path, _ in files:
            self.client.upload_file(str(self.folder(job_id) / path), self.settings.s3_bucket, self.key(job_id, path))
        return files

    def response(self, job_id: str, path: str) -> StreamingResponse:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.settings.s3_bucket, Key=self.key(job_id, path))
        except ClientError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no artifact {path!r}") from None

        def body() -> Iterator[bytes]:
            yield from obj["Body"].iter_chunks(CHUNK)

        headers = {"Content-Disposition": f'attachment; filename="{Path(path).name}"'}
        return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)

    def local_copy(self, job_id: str) -> Path:
        """The objects of ``job_id``, downloaded once into ``home/cache/jobs/<id>`` (or this host's own copy)."""
        if self.folder(job_id).is_dir():
            return self.folder(job_id)
        target = self.settings.home / "cache" / "jobs" / job_id
        if target.is_dir():
            return target
        partial = target.with_name(f"{job_id}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        prefix = self.key(job_id, "")
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.settings.s3_bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                local = partial / obj["Key"][len(prefix) :]
                local.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.settings.s3_bucket, obj["Key"], str(local))
        partial.mkdir(parents=True, exist_ok=True)
        partial.rename(target)
        return target


STORES: dict[str, type[ArtifactStore]] = {"local": LocalStore, "s3": S3Store}


def artifact_store(settings: Settings) -> ArtifactStore:
    return STORES[settings.artifact_store](settings)
