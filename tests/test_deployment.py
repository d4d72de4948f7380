"""docker-compose.yml and the images: validated where Docker Compose exists; everywhere, the compose file's
processes (migration, API, two workers) are started with its environment against this machine's
PostgreSQL and Redis, and a job runs through them."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from adapruner.client import Client
from tests.backends import REDIS_URL, drop_redis_keys, require_redis

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def has_compose() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0


def test_compose_file_declares_the_deployment():
    services = COMPOSE["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
    assert services["api"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    workers = {name: s for name, s in services.items() if name.startswith("worker")}
    devices = [w["deploy"]["resources"]["reservations"]["devices"][0] for w in workers.values()]
    assert len(workers) >= 2 and all(d["capabilities"] == ["gpu"] for d in devices)
    ids = [i for d in devices for i in d["device_ids"]]
    assert len(ids) == len(set(ids)) == len(workers)  # one GPU each, never the same one
    for worker in workers.values():  # the hub cache is on the cache volume
        assert any(v.endswith(":/data/cache") for v in worker["volumes"])
        assert worker["environment"]["HF_HOME"].startswith("/data/cache/")
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name]
    for dockerfile in ("api", "worker"):
        text = (ROOT / "docker" / f"{dockerfile}.Dockerfile").read_text()
        assert "USER adapruner" in text and "HEALTHCHECK" in text
    assert "torch" not in (ROOT / "docker" / "api.Dockerfile").read_text()
    # Every ADAPRUNER_* variable the compose file sets is a documented setting.
    from service.settings import ENV_PREFIX, Settings

    names = {ENV_PREFIX + n.upper() for n in Settings.model_fields}
    env = services["worker"]["environment"]
    assert {k for k in env if k.startswith(ENV_PREFIX)} <= names, set(env) - names


@pytest.mark.skipif(not has_compose(), reason="no Docker Compose here; test_compose_processes_run_a_job covers it")
def test_docker_compose_config_validates():
    subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], check=True)


def local_env(service: str, *, database_url: str, home: Path, prefix: str) -> dict[str, str]:
    """The service's compose environment, with the compose hosts mapped onto this machine's servers."""
    env = {
        k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))  # ${VAR:-default} as compose reads it with VAR unset
        for k, v in COMPOSE["services"][service]["environment"].items()
        if k.startswith("ADAPRUNER_")
    }
    assert env["ADAPRUNER_DATABASE_URL"].startswith("postgresql://")
    env["ADAPRUNER_DATABASE_URL"] = database_url
    env["ADAPRUNER_REDIS_URL"] = re.sub(r"redis://redis:6379", REDIS_URL.rsplit("/", 1)[0], env["ADAPRUNER_REDIS_URL"])
    env["ADAPRUNER_HOME"] = str(home)
    env["ADAPRUNER_ARTIFACTS_DIR"] = str(home / "artifacts")
    env["ADAPRUNER_REDIS_PREFIX"] = prefix
    env["ADAPRUNER_MODEL_ROOTS"] = env["ADAPRUNER_DATA_ROOTS"] = tempfile.gettempdir()  # the tiny model and texts
    env.pop("ADAPRUNER_METRICS_PORT", None)  # two workers on one host would share the port
    return os.environ | env | {"OMP_NUM_THREADS": "1"}


def command(service: str) -> list[str]:
    cmd = list(COMPOSE["services"][service]["command"])
    assert cmd[0] == "adapruner"
    return [sys.executable, "-m", "service.cli", *cmd[1:]]


@pytest.mark.slow
def test_compose_processes_run_a_job(databases, tmp_path, tiny_model_dir, job_texts):
    from service.migrate import downgrade
    from tests.worker.cluster import prune_request

    redis_client = require_redis()
    database_url = databases.postgres()
    downgrade(database_url)  # start from an empty database: the migrate service must create the schema
    prefix = f"adapruner-compose-{os.getpid()}"
    env = {
        s: local_env(s, database_url=database_url, home=tmp_path, prefix=prefix) for s in ("migrate", "api", "worker")
    }
    subprocess.run(command("migrate"), env=env["migrate"], check=True, cwd=tmp_path)
    key = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--name", "ci"],
        env=env["api"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api_cmd = command("api")
    api_cmd[api_cmd.index("--port") + 1] = str(port)
    api_cmd[api_cmd.index("--host") + 1] = "127.0.0.1"
    procs = [subprocess.Popen(api_cmd, env=env["api"], cwd=tmp_path)]
    procs += [subprocess.Popen(command("worker"), env=env["worker"], cwd=tmp_path) for _ in range(2)]
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        client = Client(url, api_key=key)
        ids = [client.submit(prune_request(tiny_model_dir, job_texts))["id"] for _ in range(4)]
        for job_id in ids:
            assert client.wait(job_id, timeout=180, poll_s=0.5)["status"] == "succeeded"
        workers = {client.job(i)["worker_id"] for i in ids}
        assert 1 <= len(workers) <= 2
        assert any(a["path"] == "report.json" for a in client.artifacts(ids[0]))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        drop_redis_keys(redis_client, prefix)


def test_the_configuration_reference_is_current():
    from service.settings import configuration_doc

    assert (ROOT / "docs" / "configuration.md").read_text() == configuration_doc(), (
        "regenerate: python -m service.settings > docs/configuration.md"
    )
