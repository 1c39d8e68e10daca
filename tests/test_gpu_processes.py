"""Every Ray process uses the GPU Ray gave it, and a zero GPU share is the CPU (issue 18, items 2 and 3).

One Ray node declares 4 GPUs this machine does not have, and its raylet starts, as on a real 4-GPU
node, with CUDA_VISIBLE_DEVICES listing all four; the workers get SYNTHAUG_DEVICE=cpu the way a
sweep gives it (cli.worker_environment). Nothing here initialises CUDA (there is none): CUDA reads
CUDA_VISIBLE_DEVICES once a process, at its first initialisation, so the value a process had at
its first task stands for the GPU its CUDA would use.
"""

import dataclasses
import os
import sys

import pytest
import ray
from ray import cloudpickle, tune

from synthaug.config import IMAGENET_DIT
from synthaug.core.devices import DEVICE_ENV, VISIBLE_GPUS_ENV, DeviceError, default_device, device_task
from synthaug.core.provenance import COMMIT_ENV
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.generation.prepare import prepare_generator
from synthaug.generation.server import NAMESPACE, make_server_actor
from synthaug.sweep.cli import worker_environment

NODE_GPUS = "0,1,2,3"
FIRST_VISIBLE = "TEST_FIRST_CUDA_VISIBLE_DEVICES"      # a process-wide note of its first task's GPUs


@pytest.fixture(scope="module")
def four_gpu_node():
    """One Ray session for the module (a Ray of its own, whatever else runs here): a node declaring 4 GPUs,
    all of them in the raylet's CUDA_VISIBLE_DEVICES."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(VISIBLE_GPUS_ENV, NODE_GPUS)
        patch.setenv(DEVICE_ENV, "cpu")
        patch.delenv(COMMIT_ENV, raising=False)         # worker_environment exports it; restored afterwards
        cloudpickle.register_pickle_by_value(sys.modules[__name__])     # workers cannot import this file
        ray.init(address="local", num_cpus=4, num_gpus=4, include_dashboard=False, namespace=NAMESPACE,
                 runtime_env=worker_environment())
        yield
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def gpus_seen() -> dict:
    """In a Ray task: its process, the GPUs Ray assigned it, those visible now and at its process's first task."""
    visible = os.environ.get(VISIBLE_GPUS_ENV)
    return {"pid": os.getpid(), "assigned": ",".join(map(str, ray.get_gpu_ids())), "visible": visible,
            "initialised": os.environ.setdefault(FIRST_VISIBLE, visible)}


def device_seen() -> tuple[str, str | None]:
    """In a Ray process: the device default_device() picks, then the GPUs visible to the process."""
    return default_device(), os.environ.get(VISIBLE_GPUS_ENV)


def test_each_gpu_preparation_initialises_the_gpu_ray_gave_it(four_gpu_node):
    """12 preparations on 4 GPUs, made as serving and the generator job make them (device_task). Before,
    as ray.remote(fn).options(num_gpus=1), Ray ran the 12 in 4 reused processes, and in one run 8 of them
    under GPU 3 in a process that had first seen GPU 1."""
    prepare = device_task(gpus_seen, num_gpus=1, num_cpus=1)
    seen = ray.get([prepare.remote() for _ in range(12)])
    mismatched = [s for s in seen if not s["assigned"] == s["visible"] == s["initialised"]]
    assert not mismatched, f"{len(mismatched)} of 12 ran on a GPU their process did not initialise: {mismatched}"
    assert len({s["pid"] for s in seen}) == 12                  # a process each
    assert {s["assigned"] for s in seen} == set(NODE_GPUS.split(","))


def test_a_zero_gpu_share_is_the_cpu_in_every_trial_server_and_preparation(four_gpu_node, tiny_dit, tmp_path):
    """--gpus 0 on the 4-GPU node: Ray leaves every process the node's CUDA_VISIBLE_DEVICES (before, each
    saw 0,1,2,3 and CUDA would have put it on GPU 0); now each sees no GPU and runs on the CPU. The
    driver, not a Ray worker, keeps what it had. The three start side by side."""
    preparation = device_task(device_seen, num_gpus=0, num_cpus=1).remote()
    spec = dataclasses.replace(IMAGENET_DIT, pretrained=tiny_dit, sampler=SamplerConfig(name="ddim", steps=2))
    prepared = prepare_generator(spec, "shapes", tmp_path / "cache", device="cpu", progress=False)
    server = make_server_actor(prepared, spec, str(tmp_path / "pools"), ("cat", "ship", "truck"), num_gpus=0)
    served_by = server.__ray_call__.remote(lambda self: (self.device, os.environ.get(VISIBLE_GPUS_ENV)))

    def trial(config):
        device, visible = device_seen()
        tune.report({"device": device, "visible": visible})

    tuner = tune.Tuner(tune.with_resources(trial, {"cpu": 1, "gpu": 0}),
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0))
    (result,) = tuner.fit()

    seen = {"preparation": ray.get(preparation), "server": ray.get(served_by),
            "trial": (result.metrics["device"], result.metrics["visible"])}
    ray.kill(server, no_restart=True)
    assert seen == dict.fromkeys(seen, ("cpu", ""))
    assert default_device() == "cpu" and os.environ[VISIBLE_GPUS_ENV] == NODE_GPUS


def test_a_zero_gpu_share_refuses_a_forced_cuda(four_gpu_node):
    """SYNTHAUG_DEVICE=cuda cannot put a process Ray gave no GPU on one: it stops in one line."""
    def forced_cuda() -> str:
        os.environ[DEVICE_ENV] = "cuda"         # in a process of its own (device_task): gone with it
        return default_device()

    with pytest.raises(DeviceError, match="SYNTHAUG_DEVICE=cuda, but Ray gave this process no GPU"):
        ray.get(device_task(forced_cuda, num_gpus=0).remote())


def test_a_gpu_cuda_cannot_use_stops_the_process_in_one_line(four_gpu_node):
    """A process Ray gave a GPU that CUDA cannot use (no driver here) stops in one line unless told
    SYNTHAUG_DEVICE=cpu; a sweep refuses such a node before (synthaug.sweep.gpu_nodes), this is the last guard."""
    def unforced() -> str:
        os.environ.pop(DEVICE_ENV, None)        # in a process of its own (device_task): gone with it
        return default_device()

    with pytest.raises(DeviceError, match="but CUDA is unusable here"):
        ray.get(device_task(unforced, num_gpus=1).remote())
