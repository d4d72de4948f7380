"""Where a job's model and data may come from: the one copy of the check, called by the API at submit and
again by the worker before it reads anything (a row written to SQL by other means is checked too).

Confined (the default), a job may name: a built-in alias or corpus; ``job:<id>`` of a job of the same key;
a hub model id and ``hf:`` datasets where the settings allow them; remote data URLs where the settings allow
them; and local files or folders only under the allowed roots. Paths are resolved (symlinks followed) before
they are compared with the roots, and the server's home and artifacts folders are never readable as a plain
path. The refusal of a path never depends on whether it exists, and never echoes the path back.
Open (``ADAPRUNER_CONFINE=false``, the single-user embedded mode) allows any path, hub id and URL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from adapruner.catalog import MODEL_ALIASES, OFFLINE_ZERO_SHOT
from adapruner.config import DataSource, ModelSpec
from adapruner.errors import UserError
from service.settings import Settings

JOB_PREFIX = "job:"
#: A hub repository id: ``name`` or ``org/name`` (no path syntax: no leading dot, no ``..``, no ``~``).
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
JOB_ID = re.compile(r"[0-9a-f]{32}")
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
GLOB = re.compile(r"[*?\[\]{}]")
#: The generic loaders of ``datasets`` that read only the files named in ``data_files``.
FILE_LOADERS = ("json", "csv", "text", "parquet", "arrow")

Loc = tuple[str | int, ...]


class SourceRefused(UserError):
    """A job names a model or data it may not read. ``loc`` is the field inside the spec."""

    def __init__(self, loc: Loc, msg: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}")
        self.loc, self.msg = loc, msg


@dataclass(frozen=True)
class SourcePolicy:
    """What the server lets jobs read (built from :class:`Settings` by :meth:`from_settings`)."""

    confine: bool = True
    model_roots: tuple[Path, ...] = ()
    data_roots: tuple[Path, ...] = ()
    forbidden: tuple[Path, ...] = ()
    hub_models: bool = True
    hf_datasets: bool = True
    remote_data: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SourcePolicy:
        return cls(
            confine=settings.confine,
            model_roots=_roots(settings.model_roots),
            data_roots=_roots(settings.data_roots),
            forbidden=(_resolve(settings.home), _resolve(settings.artifacts)),
            hub_models=settings.allow_hub_models,
            hf_datasets=settings.allow_hf_datasets,
            remote_data=settings.allow_remote_data,
        )


def _resolve(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _roots(folders: tuple[str, ...]) -> tuple[Path, ...]:
    """Each allowed folder as written (normalised) and with its links resolved: a path may be given under
    either, and is compared with them after its own links are resolved."""
    both = [form for folder in folders for form in (Path(os.path.abspath(folder)), _resolve(Path(folder)))]
    return tuple(dict.fromkeys(both))


def job_reference(source: str) -> str | None:
    """The job id of a ``job:<id>`` model source, else None."""
    return source[len(JOB_PREFIX) :] if source.startswith(JOB_PREFIX) else None


def inside_roots(name: str, roots: tuple[Path, ...], forbidden: tuple[Path, ...]) -> bool:
    """Whether the absolute path ``name``, with every symlink resolved, lies under one of ``roots`` and under
    none of ``forbidden``. Decided from the path text and the links inside the roots: a path outside the
    roots is refused whether or not it exists."""
    if not os.path.isabs(name) or ".." in Path(name).parts or "\x00" in name:
        return False
    lexical = Path(os.path.normpath(name))
    if not any(lexical.is_relative_to(root) for root in roots):
        return False
    try:
        real = _resolve(lexical)
    except (OSError, ValueError):
        return False
    return any(real.is_relative_to(r) for r in roots) and not any(real.is_relative_to(f) for f in forbidden)


def _roots_hint(roots: tuple[Path, ...], setting: str) -> str:
    """Where allowed paths are, without naming host folders (the operator tells users the roots)."""
    if not roots:
        return f"allowed folders ({setting} is empty: none on this server)"
    return f"allowed folders ({setting}; your operator knows them)"


def check_model(spec: ModelSpec, policy: SourcePolicy, loc: Loc, *, owns_job: Callable[[str], bool]) -> None:
    """Refuse a model source the policy does not allow; ``owns_job(id)`` says whether ``job:<id>`` may be used."""
    source = spec.source
    job_id = job_reference(source)
    if job_id is not None:
        if not (JOB_ID.fullmatch(job_id) and owns_job(job_id)):
            raise SourceRefused(
                (*loc, "source"), "no finished job of this key with that id; use job:<id> of your own job"
            )
        return
    if not policy.confine or source in MODEL_ALIASES:
        return
    if spec.gguf_file is not None and (
        not spec.gguf_file.endswith(".gguf") or "/" in spec.gguf_file or "\\" in spec.gguf_file
    ):
        raise SourceRefused((*loc, "gguf_file"), "give the file name of a .gguf file inside the model (no folders)")
    if os.path.isabs(source):
        if not inside_roots(source, policy.model_roots, policy.forbidden):
            raise SourceRefused(
                (*loc, "source"),
                "this server does not read models from that path; use a path under the "
                + _roots_hint(policy.model_roots, "ADAPRUNER_MODEL_ROOTS")
                + ", a hub id, an alias or job:<id>",
            )
        return
    if not HUB_ID.fullmatch(source) or source.endswith(".gguf"):
        raise SourceRefused(
            (*loc, "source"),
            f"give an absolute path, a hub id (org/name), an alias ({', '.join(MODEL_ALIASES)}) or job:<id>",
        )
    if not policy.hub_models:
        raise SourceRefused((*loc, "source"), "this server does not download hub models (ADAPRUNER_ALLOW_HUB_MODELS)")


def check_data(source: DataSource, policy: SourcePolicy, loc: Loc) -> None:
    """Refuse a data source the policy does not allow."""
    if not policy.confine or source.kind == "builtin":
        return
    if source.kind == "file":
        _check_data_path(source.name, policy, (*loc, "name"))
        return
    files_only = source.name in FILE_LOADERS and source.data_files is not None  # reads data_files, not the hub
    if not (policy.hf_datasets or files_only):
        raise SourceRefused((*loc, "kind"), "this server does not load hf: datasets (ADAPRUNER_ALLOW_HF_DATASETS)")
    if not HUB_ID.fullmatch(source.name):
        raise SourceRefused((*loc, "name"), "give a hub dataset id (org/name) or a loader name such as json")
    if source.data_files is None:
        return
    target = source.data_files
    if target.startswith("hf://"):
        if not policy.hf_datasets:
            raise SourceRefused(
                (*loc, "data_files"), "this server does not load hub datasets (ADAPRUNER_ALLOW_HF_DATASETS)"
            )
        return
    if URL.match(target):
        if not policy.remote_data:
            raise SourceRefused(
                (*loc, "data_files"), "this server does not fetch remote URLs (ADAPRUNER_ALLOW_REMOTE_DATA)"
            )
        return
    _check_data_path(target, policy, (*loc, "data_files"))


def _check_data_path(name: str, policy: SourcePolicy, loc: Loc) -> None:
    if GLOB.search(name) or not inside_roots(name, policy.data_roots, policy.forbidden):
        raise SourceRefused(
            loc,
            "this server does not read data from that path; use an absolute path (no wildcards) under the "
            + _roots_hint(policy.data_roots, "ADAPRUNER_DATA_ROOTS")
            + ", or a built-in corpus",
        )


def _walk(value: object, loc: Loc) -> Iterator[tuple[Loc, object]]:
    """Every ModelSpec, DataSource, zero-shot task list and warm-start folder list in a spec, with its location."""
    if isinstance(value, ModelSpec | DataSource):
        yield loc, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            if name in ("zero_shot", "warm_start"):
                yield (*loc, name), getattr(value, name)
            else:
                yield from _walk(getattr(value, name), (*loc, name))
    elif isinstance(value, tuple):
        for index, item in enumerate(value):
            yield from _walk(item, (*loc, index))


def check_spec(spec: BaseModel, policy: SourcePolicy, *, owns_job: Callable[[str], bool]) -> None:
    """Check every model and data source of a job spec; raises :class:`SourceRefused` at the first refusal
    (``loc`` starts inside the spec, e.g. ``("model", "source")``)."""
    for loc, item in _walk(spec, ()):
        if isinstance(item, ModelSpec):
            check_model(item, policy, loc, owns_job=owns_job)
        elif isinstance(item, DataSource):
            check_data(item, policy, loc)
        elif loc[-1] == "warm_start":  # earlier search folders: read as data, so under the data roots
            for index, folder in enumerate(item if policy.confine else ()):
                _check_data_path(folder, policy, (*loc, index))
        elif policy.confine and not policy.hf_datasets:
            for index, task in enumerate(item):  # online lm-eval tasks download their datasets from the hub
                if task.partition(":")[0] not in OFFLINE_ZERO_SHOT:
                    raise SourceRefused(
                        (*loc, index), "this server does not load hub datasets; use an offline task (cloze:CORPUS)"
                    )
