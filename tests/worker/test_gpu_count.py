"""A job that needs more GPUs than its worker owns fails with the one-line reason, confined or not (unlike a
model that cannot be loaded, whose loader text is hidden under confinement)."""

from __future__ import annotations

import pytest

from adapruner.models import GpuCountError, check_gpus
from service.settings import Settings
from worker.runner import user_error


@pytest.mark.parametrize("confine", [True, False])
def test_the_reason_reaches_the_job(tmp_path, confine):
    with pytest.raises(GpuCountError) as error:
        check_gpus(2, 1)
    line = user_error(error.value, Settings(home=tmp_path, confine=confine))
    assert line.startswith("GpuCountError: model.gpus: the job needs 2 GPUs, this worker has 1")
    assert "--gpus" in line
