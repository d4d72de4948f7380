"""Prometheus metrics of the service, read from the record of truth at scrape time (any API replica
reports the same numbers): jobs by state, queue depth, trial count and duration, heartbeat age."""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service import queue
from service.models import Job, JobStatus, Trial, utcnow


class ServiceCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], client: redis.Redis, keys: queue.Keys) -> None:
        self.sessions, self.client, self.keys = sessions, client, keys

    def collect(self) -> Iterator:
        jobs = GaugeMetricFamily("adapruner_jobs", "jobs by state", labels=["status"])
        with self.sessions() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            trials, seconds = session.execute(select(func.count(Trial.id), func.sum(Trial.seconds))).one()
            oldest = session.scalar(select(func.min(Job.heartbeat_at)).where(Job.status == JobStatus.running))
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status, 0))
        yield jobs
        yield SummaryMetricFamily(
            "adapruner_trial_seconds",
            "duration of finished search trials",
            count_value=trials,
            sum_value=seconds or 0.0,
        )
        age = GaugeMetricFamily("adapruner_heartbeat_age_seconds", "oldest heartbeat of a running job")
        age.add_metric([], (utcnow() - oldest).total_seconds() if oldest else 0.0)
        yield age
        try:
            depth = queue.depth(self.client, self.keys)
        except redis.RedisError:
            return
        q = GaugeMetricFamily("adapruner_queue_entries", "stream entries by state", labels=["state"])
        for state, value in depth.items():
            q.add_metric([state], value)
        yield q
