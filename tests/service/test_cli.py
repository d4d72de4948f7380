"""Workers and GPUs: each local worker owns its GPU(s) through ``CUDA_VISIBLE_DEVICES`` (no GPU needed)."""

from __future__ import annotations

import argparse
import os

import pytest

from adapruner.errors import UserError
from service import cli as service_cli
from service.cli import build_parser


def test_each_worker_gets_distinct_gpus():
    four = ("0", "1", "2", "3")
    assert service_cli.worker_gpus(4, four) == [{"CUDA_VISIBLE_DEVICES": g} for g in four]
    assert service_cli.worker_gpus(2, four) == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert service_cli.worker_gpus(3, ("4", "7")) == [{"CUDA_VISIBLE_DEVICES": g} for g in ("4", "7", "4")]
    assert service_cli.worker_gpus(2, ()) == [{}, {}]  # no GPU: the environment is left as it is


def test_visible_gpus_follow_cuda_visible_devices_or_nvidia_smi(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert service_cli.visible_gpus() == ("2", "5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert service_cli.visible_gpus() == ()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(service_cli.shutil, "which", lambda name: None)
    assert service_cli.visible_gpus() == ()
    monkeypatch.setattr(service_cli.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    listed = argparse.Namespace(stdout="0\n1\n")
    monkeypatch.setattr(service_cli.subprocess, "run", lambda *a, **k: listed)
    assert service_cli.visible_gpus() == ("0", "1")


def test_worker_gpus_option_sets_the_visible_devices(monkeypatch):
    import worker.main

    seen = {}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(service_cli, "_settings", lambda: None)
    monkeypatch.setattr(worker.main, "main", lambda settings, **kw: seen.update(env=os.environ["CUDA_VISIBLE_DEVICES"]))
    args = build_parser().parse_args(["worker", "--gpus", "1,3"])
    assert service_cli.cmd_worker(args) == 0
    assert seen == {"env": "1,3"}


@pytest.mark.parametrize("text", ["a", "1,,2", "0,0", "-1"])
def test_a_bad_gpu_list_names_the_option(text):
    with pytest.raises(UserError, match="--gpus"):
        service_cli.parse_gpus(text)
