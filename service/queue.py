"""The job stream in Redis: entries carry only a job id; SQL holds everything else.

Keys (under ``settings.redis_prefix``): ``:jobs`` the stream read by the consumer group ``workers``,
``:enqueued`` a hash job id -> stream entry id of the entry that currently carries the job (the
reconciler republishes a job that should be queued and has none, for example after Redis restarted
empty), ``:dead`` the dead-letter stream, ``:lock:reconcile`` the reconciler's lock, ``:keys:revocations``
a counter of API key revocations (see ``service.api.deps.KeyCache``).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

GROUP = "workers"


@dataclass(frozen=True)
class Keys:
    prefix: str

    @property
    def stream(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def enqueued(self) -> str:
        return f"{self.prefix}:enqueued"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def reconcile_lock(self) -> str:
        return f"{self.prefix}:lock:reconcile"

    @property
    def revocations(self) -> str:
        """A counter raised by every key revocation: API key caches drop entries made before it moved."""
        return f"{self.prefix}:keys:revocations"


def revocations(client: redis.Redis, keys: Keys) -> int:
    return int(client.get(keys.revocations) or 0)


def note_revocation(client: redis.Redis, keys: Keys) -> None:
    client.incr(keys.revocations)


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5)


def ensure_group(client: redis.Redis, keys: Keys) -> None:
    """Create the stream and its consumer group if missing (idempotent: Redis may have restarted empty)."""
    try:
        client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def enqueue(client: redis.Redis, keys: Keys, job_id: str, *, replaces: str | None = None) -> str:
    """Add an entry for ``job_id``; with ``replaces`` (an entry this worker holds), ack that one in the
    same transaction so the job is never carried by zero or two live entries."""
    ensure_group(client, keys)
    pipe = client.pipeline(transaction=True)
    pipe.xadd(keys.stream, {"job_id": job_id})
    if replaces:
        pipe.xack(keys.stream, GROUP, replaces)
        pipe.xdel(keys.stream, replaces)
    entry_id = pipe.execute()[0]
    client.hset(keys.enqueued, job_id, entry_id)
    return entry_id


_DONE = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[3]) end
"""


def done(client: redis.Redis, keys: Keys, job_id: str, entry_id: str) -> None:
    """This entry needs handling no more: ack and delete it, and forget it as the job's carrier (unless a
    newer entry carries the job)."""
    client.eval(_DONE, 2, keys.stream, keys.enqueued, GROUP, entry_id, job_id)


def dead_letter(client: redis.Redis, keys: Keys, job_id: str, entry_id: str, reason: str) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.xadd(keys.dead, {"job_id": job_id, "reason": reason[:1000]}, maxlen=10_000, approximate=True)
    pipe.xack(keys.stream, GROUP, entry_id)
    pipe.xdel(keys.stream, entry_id)
    pipe.hdel(keys.enqueued, job_id)
    pipe.execute()


def depth(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """Entries not yet delivered (``waiting``) and delivered but not acked (``pending``)."""
    ensure_group(client, keys)
    groups = {g["name"]: g for g in client.xinfo_groups(keys.stream)}
    group = groups.get(GROUP, {})
    return {"waiting": int(group.get("lag") or 0), "pending": int(group.get("pending") or 0)}
