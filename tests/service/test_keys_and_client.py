"""``adapruner keys list|revoke`` (a revoked key is refused at once, the API's key cache included), the
client taking a plain dict, and ``download`` of a job without artifacts saying why."""

from __future__ import annotations

import pytest

from adapruner.client import ApiError, Client
from service.cli import main as cli
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
    assert [r[1] for r in rows] == ["alice", "bob"] and all(len(r) == 5 for r in rows)
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


def test_a_key_with_its_own_cost_limit_is_refused_where_the_server_limit_admits(live, env, capsys):
    assert cli(["keys", "create", "--name", "small", "--max-job-cost", "150000"]) == 0
    small = capsys.readouterr().out.strip()
    other = create_key(capsys, "other")
    assert cli(["keys", "list"]) == 0
    rows = {r[1]: r for r in (line.split("\t") for line in capsys.readouterr().out.splitlines())}
    assert rows["small"][4] == "max-job-cost=150000" and rows["other"][4] == "max-job-cost=server"
    spec = {"calibration": {"samples": 64, "seq_len": 1024}}  # 3 x 64 x 1,024 = 196,608 for calibration alone
    with pytest.raises(ApiError, match="this API key's limit of 150,000") as refused:
        Client(live.url, api_key=small).submit({"kind": "prune", "spec": spec})
    assert "422" in str(refused.value)
    assert Client(live.url, api_key=other).submit({"kind": "prune", "spec": spec})["status"] == "queued"
    assert cli(["keys", "create", "--name", "bad", "--max-job-cost", "0"]) == 2
    assert "--max-job-cost" in capsys.readouterr().err
