"""The worker runs a job through the job-kind registry: one entry per kind the service accepts, each with
the service's config class; an unknown kind fails the job naming the valid ones."""

from __future__ import annotations

import pytest

from adapruner.errors import UserError
from service.jobs import JOB_SPECS
from worker.runner import JOB_KINDS, job_kind, run_prune_job, run_search_job


def test_every_kind_the_service_accepts_has_a_runner_with_its_config():
    from worker.trials import TRIAL_KIND

    # and one kind more, a search's trials, that only a search's driver submits (the API does not accept it)
    assert {kind: entry.config for kind, entry in JOB_KINDS.items() if kind != TRIAL_KIND} == JOB_SPECS
    assert TRIAL_KIND in JOB_KINDS and TRIAL_KIND not in JOB_SPECS
    assert job_kind("prune").run is run_prune_job
    assert job_kind("search").run is run_search_job


def test_an_unknown_kind_names_the_valid_ones():
    with pytest.raises(UserError, match=r"kind: unknown job kind 'quantize'; valid: prune, search"):
        job_kind("quantize")
