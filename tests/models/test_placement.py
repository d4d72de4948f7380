"""Where a model's weights go: sequential mode keeps them on the CPU, a multi-GPU job spreads them with
accelerate's device_map/max_memory over the GPUs it needs, and a job that needs more GPUs than visible is
refused before anything is read."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from adapruner.config import ModelSpec
from adapruner.models import GpuCountError, check_gpus, load_model, placement, spread_kwargs
from adapruner.models import loading


def test_spread_kwargs_caps_each_of_the_first_n_gpus_below_its_free_memory():
    free = [80 * 2**30, 60 * 2**30, 80 * 2**30]
    kwargs = spread_kwargs(2, free, headroom=0.9)
    assert kwargs == {"device_map": "auto", "max_memory": {0: int(0.9 * 80 * 2**30), 1: int(0.9 * 60 * 2**30)}}
    assert "cpu" not in kwargs["max_memory"] and "disk" not in kwargs["max_memory"]  # never offloaded
    with pytest.raises(ValueError, match="3 GPUs asked, 2 given"):
        spread_kwargs(3, free[:2])


def test_a_job_needing_more_gpus_than_visible_names_the_field_and_the_fix(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(GpuCountError) as error:
        check_gpus(2, 1)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("model.gpus: the job needs 2 GPUs, this worker has 1 (CUDA_VISIBLE_DEVICES=3)")
    assert "--gpus" in message and "set model.gpus to 1" in message
    check_gpus(2, 2)
    check_gpus(1, 0)  # the default asks for nothing a CPU worker lacks


def test_load_model_refuses_before_reading_anything(monkeypatch, tiny_model_dir):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(loading, "resolve_source", lambda spec: pytest.fail("resolved"))
    with pytest.raises(GpuCountError, match="needs 4 GPUs, this worker has 1"):
        load_model(str(tiny_model_dir), gpus=4)


def test_spec_checks_the_combinations():
    with pytest.raises(ValidationError, match="sequential runs on one GPU"):
        ModelSpec(gpus=2, sequential=True)
    with pytest.raises(ValidationError, match="needs device 'auto' or 'cuda'"):
        ModelSpec(gpus=2, device="cpu")
    with pytest.raises(ValidationError):
        ModelSpec(gpus=0)


def test_placement_of_each_mode(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert placement(ModelSpec(device="cpu")) == (cpu, cpu)
    assert placement(ModelSpec(device="cuda", sequential=True)) == (torch.device("cuda"), cpu)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert placement(ModelSpec(gpus=2)) == (cuda, cuda)


def test_sequential_load_keeps_the_weights_on_the_cpu(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device="cpu", sequential=True)
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}  # dtype auto follows the compute device


def test_device_map_spreads_whole_layers_over_the_gpus_and_refuses_what_does_not_fit():
    from adapruner.models.loading import device_map_for
    from tests.conftest import tiny_llama

    model = tiny_llama(layers=4)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    device_map = device_map_for(model, {0: size, 1: size})  # room for all on one: balanced over both anyway
    assert set(device_map.values()) == {0, 1}
    assert not any(".layers." in name and name.count(".") > 2 for name in device_map)  # layers kept whole
    with pytest.raises(GpuCountError, match="does not fit on 2 GPUs"):
        device_map_for(model, {0: size // 4, 1: size // 4})


def test_weights_larger_than_the_gpus_offer_are_refused_before_loading():
    from adapruner.models.loading import check_spread_fits

    check_spread_fits(10, {0: 5, 1: 5})
    with pytest.raises(GpuCountError, match="model.gpus: the weights need .* 2 GPUs offer"):
        check_spread_fits(11, {0: 5, 1: 5})
