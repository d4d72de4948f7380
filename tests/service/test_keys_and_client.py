"""``adapruner keys list|revoke`` (a revoked key is refused at once, the API's key cache included), the
client taking a plain dict, and ``download`` of a job without artifacts saying why."""

from __future__ import annotations

import pytest

from adapruner.cli import main as cli
from adapruner.client import ApiError, Client
from service.settings import settings_env


@pytest.fixture
def env(settings, monkeypatch):
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)


def create_key(capsys, name: str) -> str:
    assert cli(["keys", "create", "--name", name]) == 0
    return capsys.readouterr().out.strip()


def test_keys_list_and_revoke_refuses_the_key_at_once(live, env, capsys):
    alice, bob = create_key(capsys, "alice"), create_key(capsys, "bob")
    assert cli(["keys", "list"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[1] for r in rows] == ["alice", "bob"] and all(len(r) == 4 for r in rows)
    client = Client(live.url, api_key=alice)
    assert client.jobs()["total"] == 0  # verified once: now in the API's key cache
    assert cli(["keys", "revoke", rows[0][0]]) == 0
    with pytest.raises(ApiError, match="401"):
        client.jobs()
    assert Client(live.url, api_key=bob).jobs()["total"] == 0
    assert cli(["keys", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("\trevoked")
    assert cli(["keys", "revoke", "4242"]) == 2
    assert "no keys match" in capsys.readouterr().err


def test_the_client_submits_a_dict_request(live, env, capsys):
    client = Client(live.url, api_key=create_key(capsys, "dict"))
    job = client.submit({"kind": "prune", "spec": {"prune": {"ratio": 0.3}}})
    assert job["status"] == "queued" and job["spec"]["prune"]["ratio"] == 0.3
    with pytest.raises(ApiError, match="spec.prune.ratio"):
        client.submit({"kind": "prune", "spec": {"prune": {"ratio": 3}}})


def test_download_of_a_cancelled_job_exits_non_zero_saying_why(live, env, capsys, tmp_path):
    key = create_key(capsys, "dl")
    client = Client(live.url, api_key=key)
    job = client.submit({"kind": "prune"})
    client.cancel(job["id"])
    assert cli(["download", job["id"], str(tmp_path / "got"), "--server", live.url, "--key", key]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cancelled" in err, err
    assert not (tmp_path / "got").exists()
