"""Settings of the service and the workers, read from ``ADAPRUNER_*`` environment variables.

One place documents every setting (``docs/configuration.md`` is generated from this class). The
embedded defaults need nothing installed: SQLite and a local artifacts folder under ``ADAPRUNER_HOME``.
Timings are settings so that tests run the whole protocol in seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapruner.errors import UserError

ENV_PREFIX = "ADAPRUNER_"


def default_home() -> Path:
    return Path(os.environ.get("ADAPRUNER_HOME", Path.home() / ".adapruner"))


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default_factory=default_home, description="folder of the embedded database and artifacts")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite file in home")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis holding the job stream")
    redis_prefix: str = Field(default="adapruner", min_length=1, description="namespace of every Redis key")
    artifacts_dir: Path | None = Field(default=None, description="where jobs write artifacts; None = home/artifacts")
    artifact_store: Literal["local", "s3"] = Field(default="local", description="local folder or S3-compatible")
    s3_bucket: str = Field(default="", description="s3 store: bucket (credentials: the usual AWS_* variables)")
    s3_prefix: str = Field(default="adapruner/", description="s3 store: key prefix")
    s3_endpoint_url: str = Field(default="", description="s3 store: endpoint of an S3-compatible server (MinIO)")
    # Worker protocol timings (seconds).
    heartbeat_s: float = Field(default=5.0, gt=0, description="a running job's heartbeat interval")
    claim_idle_s: float = Field(
        default=60.0, gt=0, description="a job without a heartbeat this long is reclaimed by another worker"
    )
    sweep_s: float = Field(default=10.0, gt=0, description="how often an idle worker looks for jobs to reclaim")
    reconcile_s: float = Field(default=30.0, gt=0, description="how often SQL and the stream are reconciled")
    block_s: float = Field(default=1.0, gt=0, description="longest wait for a new job in one read")
    grace_s: float = Field(default=20.0, gt=0, description="SIGTERM: time given to the running job to stop")
    max_attempts: int = Field(default=3, ge=1, description="deliveries before a job is dead-lettered")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="worker: Prometheus metrics port (0: off)")
    preload: bool = Field(default=True, description="import torch and the library once in the worker parent")
    # API limits.
    max_request_bytes: int = Field(default=1_000_000, ge=1024)
    max_trials: int = Field(default=500, ge=1, description="largest search trial budget one job may ask")
    max_deadline_s: float = Field(default=7 * 86400.0, gt=0, description="largest deadline one job may ask")
    default_deadline_s: float = Field(default=86400.0, gt=0)
    # Job size limits (enforced at submit, shown in GET /v1/catalog as limits; docs/security.md).
    max_calibration_samples: int = Field(
        default=4096, ge=1, description="most calibration samples (prune calibration.samples, search space.samples)"
    )
    max_seq_len: int = Field(default=16384, ge=8, description="longest token window of any stage of a job")
    max_pool_size: int = Field(default=4096, ge=1, description="most candidate calibration samples per source")
    max_validation_tokens: int = Field(default=1_000_000, ge=64, description="most search.validation_tokens")
    max_eval_tokens: int = Field(
        default=1_000_000, ge=16, description="most evaluation tokens per text (evaluate.max_tokens, heldout_tokens)"
    )
    max_recover_steps: int = Field(default=100_000, ge=1, description="most recovery training steps")
    max_batch_size: int = Field(default=256, ge=1, description="largest batch of any stage of a job")
    max_lora_rank: int = Field(default=1024, ge=1, description="largest recover.rank")
    max_subset_seeds: int = Field(default=1024, ge=1, description="most space.subset_seeds")
    max_raw_samples: int = Field(default=4096, ge=4, description="most search.raw_samples (acquisition start points)")
    max_acq_restarts: int = Field(default=64, ge=1, description="most search.acq_restarts")
    max_job_cost: int = Field(
        default=1_000_000_000, ge=1, description="largest estimated cost of one job of a key, in token-passes"
    )
    # Where jobs may read models and data from (docs/security.md).
    confine: bool = Field(
        default=True,
        description="confine jobs to the sources below; false = any path, hub id or URL (single-user embedded mode)",
    )
    model_roots: tuple[str, ...] = Field(default=(), description="confined: local folders models may be read from")
    data_roots: tuple[str, ...] = Field(default=(), description="confined: local folders data files may be read from")
    allow_hub_models: bool = Field(default=True, description="confined: hub model ids (org/name) may be downloaded")
    allow_hf_datasets: bool = Field(default=True, description="confined: hf: datasets and online zero-shot tasks")
    allow_remote_data: bool = Field(default=False, description="confined: data_files may be http(s)/s3/... URLs")
    cors_origins: tuple[str, ...] = ()
    sse_poll_s: float = Field(default=0.25, gt=0, description="how often the event stream reads new events")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'adapruner.db'}"

    @property
    def artifacts(self) -> Path:
        return self.artifacts_dir or self.home / "artifacts"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``ADAPRUNER_<FIELD>`` variables (lists as JSON or comma separated), then overrides."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            if field.annotation == tuple[str, ...]:
                values[name] = json.loads(raw) if raw.startswith("[") else [s for s in raw.split(",") if s]
            else:
                values[name] = raw
        try:
            return cls(**(values | overrides))
        except ValidationError as error:
            first = error.errors()[0]
            field = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else "settings"
            raise UserError(f"{field}: {first['msg']}") from None


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce ``settings`` in another process."""
    out = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        out[ENV_PREFIX + name.upper()] = json.dumps(value) if isinstance(value, list) else str(value)
    return out


def settings_reference() -> str:
    """A Markdown table of every setting: the environment variable, default and meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default_factory else field.default
        if name == "home":
            default = "~/.adapruner"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | `{default}` | {field.description or ''} |")
    return "\n".join(rows)


def configuration_doc() -> str:
    """``docs/configuration.md``: regenerate with ``python -m service.settings > docs/configuration.md``."""
    return (
        "# Configuration\n\nEvery setting of the API and the workers is an environment variable (read by "
        "`service.settings.Settings.from_env`). Lists are JSON or comma separated. This table is generated from "
        "the code: `python -m service.settings > docs/configuration.md`.\n\n" + settings_reference() + "\n"
    )


if __name__ == "__main__":
    print(configuration_doc(), end="")
