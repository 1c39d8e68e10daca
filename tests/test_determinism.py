"""SYNTHAUG_DETERMINISTIC=1 reaches every worker the way a sweep starts them (cli.worker_environment) and is
applied there when the process picks its device: deterministic algorithms (warn only), cuDNN deterministic
without benchmark, cuBLAS's fixed workspace; a server records it beside the shards it makes."""

import dataclasses
import os
import sys

import pytest
import ray
import torch
from ray import cloudpickle

from synthaug.config import IMAGENET_DIT
from synthaug.core.devices import (CUBLAS_WORKSPACE_ENV, DETERMINISTIC_ENV, DeviceError, apply_determinism,
                                   default_device, device_task, made_on)
from synthaug.core.provenance import COMMIT_ENV
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.generation.prepare import prepare_generator
from synthaug.generation.server import NAMESPACE, make_server_actor
from synthaug.pools.store import PoolStore
from synthaug.sweep.cli import worker_environment


def determinism_seen() -> dict:
    """In a process: torch's determinism settings before default_device() and after it."""
    def settings() -> tuple:
        return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                os.environ.get(CUBLAS_WORKSPACE_ENV))
    before = settings()
    device = default_device()
    return {"before": before, "after": settings(), "device": device, "made_on": made_on(device)}


@pytest.fixture
def deterministic_node():
    """A Ray of its own whose workers get SYNTHAUG_DETERMINISTIC=1 from the driver's environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DETERMINISTIC_ENV, "1")
        patch.delenv(CUBLAS_WORKSPACE_ENV, raising=False)
        patch.delenv(COMMIT_ENV, raising=False)         # worker_environment exports it; restored afterwards
        cloudpickle.register_pickle_by_value(sys.modules[__name__])     # workers cannot import this file
        ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE,
                 runtime_env=worker_environment())
        yield
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_the_deterministic_setting_is_applied_in_every_worker_that_picks_its_device(deterministic_node, tiny_dit,
                                                                                    tmp_path):
    """A preparation-like task and a DDPM server (its own process for its life): each starts with torch's
    defaults and has deterministic algorithms once it has picked its device; the server's shards record it."""
    seen = ray.get(device_task(determinism_seen, num_gpus=0).remote())
    assert seen["before"] == (False, False, False, False, None)
    assert seen["after"] == (True, True, True, False, ":4096:8") and seen["device"] == "cpu"
    assert seen["made_on"].endswith(", deterministic")

    spec = dataclasses.replace(IMAGENET_DIT, pretrained=tiny_dit, sampler=SamplerConfig(name="ddim", steps=2))
    prepared = prepare_generator(spec, "shapes", tmp_path / "cache", device="cpu", progress=False)
    server = make_server_actor(prepared, spec, str(tmp_path / "pools"), ("cat", "ship", "truck"))
    state = server.__ray_call__.remote(lambda self: (torch.are_deterministic_algorithms_enabled(), self.made_on))
    assert ray.get(state) == (True, seen["made_on"])
    pool = ray.get(server.take.remote(2, 2, 0))
    ray.kill(server, no_restart=True)
    assert set(PoolStore(tmp_path / "pools").manifest(pool.pool_id)["made_on"].values()) == {seen["made_on"]}
    assert not torch.are_deterministic_algorithms_enabled()      # the driver, which picked no device, is untouched


def test_the_deterministic_setting_is_off_unless_set_and_a_bad_value_is_one_line(monkeypatch):
    monkeypatch.delenv(DETERMINISTIC_ENV, raising=False)
    assert apply_determinism() is False and not torch.are_deterministic_algorithms_enabled()
    monkeypatch.setenv(DETERMINISTIC_ENV, "0")
    assert apply_determinism() is False and not torch.are_deterministic_algorithms_enabled()
    monkeypatch.setenv(DETERMINISTIC_ENV, "yes")
    with pytest.raises(DeviceError, match=r"^SYNTHAUG_DETERMINISTIC: 1 \(deterministic algorithms\) or 0, got 'yes'$"):
        default_device()
    assert not made_on("cpu").endswith("deterministic")
