"""What differs on a GPU, in one place, parameterised by the device so the CPU can run it too.

The device a process uses is the one it sees (torch.cuda.is_available(), which follows
CUDA_VISIBLE_DEVICES as Ray sets it), never what Ray reserved for it. A process Ray gave a GPU
that finds CUDA unusable (no driver, a broken install, a GPU only declared) stops with
DeviceError instead of quietly training on the CPU. SYNTHAUG_DEVICE=cpu (or cuda) forces the
choice in every process (the sweep passes it to its workers on every node): how the tests run
on Ray nodes that declare GPUs this machine does not have.

Two rules make the GPU a Ray process uses the one Ray gave it, whatever Ray does with processes:
- A zero GPU share is the CPU. Ray leaves CUDA_VISIBLE_DEVICES as the node had it (every GPU) in
  a task or actor that asked for no GPU; default_device() empties it there before anything can
  initialise CUDA, and never answers cuda (SYNTHAUG_DEVICE=cuda there is a DeviceError).
- A GPU task has a process of its own (device_task). Ray reuses a task's worker process for later
  tasks, Ray sets CUDA_VISIBLE_DEVICES anew for each, and CUDA keeps the devices the process saw
  when it first initialised: a reused process would run its next task on its first task's GPU.
  An actor (a DDPM server, a Tune trial, a Ray Train worker) holds one process and one GPU share
  for its whole life, so it needs no such rule.

bf16 autocast is on for CUDA and off for the CPU unless a caller forces it (`autocast=True`):
the tests do, so a dtype bug in the GPU's path shows on this machine and not on the first GPU.

What is bitwise where. Every random draw (batches, crops, flips, timesteps, a pool image's noise)
comes from a seeded torch.Generator, so the draws are the same on any device. The arithmetic is not:
- On the CPU (one machine, one torch build) a run is bitwise repeatable: a resumed classifier or DDPM
  training ends with the weights of an uninterrupted one, and a pool shard generated again has the
  same bytes (tests/test_classifier.py, test_generator_training.py, test_storage_faults.py). An image sampled
  in a batch of another size may differ by one intensity level (tests/test_diffusion.py).
- On CUDA the same computation is statistically equivalent, not bitwise: cuDNN and cuBLAS choose
  kernels per shape and GPU model, bf16 autocast rounds differently from float32, and some backward
  kernels add with atomics in no fixed order. A resumed run, a regenerated shard, an image made in a
  batch of another size or on another GPU model carries the same draws through other roundings.
- Data-parallel DDPM training with dropout > 0 (the paper UNet's 0.3) differs from one process even
  on the CPU: each rank draws its own dropout masks from its own RNG (diffusion/training.py).
SYNTHAUG_DETERMINISTIC=1 asks for deterministic algorithms where torch has them (apply_determinism):
repeated runs on one GPU model and software then repeat where every op has such a kernel; an op
without one warns and runs anyway (warn_only). It costs speed and has not been run on a GPU here.
A pool records both sides (synthaug/pools/store.py): its identity names the device type and precision
(numerics), and its pool.json the GPU model and software each shard was made with (made_on).
"""

from __future__ import annotations

import os
import platform
import sys

import torch

DEVICE_ENV = "SYNTHAUG_DEVICE"     # a documented override: cpu or cuda
DETERMINISTIC_ENV = "SYNTHAUG_DETERMINISTIC"    # a documented setting: 1 = deterministic algorithms
VISIBLE_GPUS_ENV = "CUDA_VISIBLE_DEVICES"
CUBLAS_WORKSPACE_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"      # what cuBLAS needs for deterministic results (CUDA >= 10.2)


class DeviceError(RuntimeError):
    """A process was given a GPU and cannot use it; the message is one line."""


def default_device() -> str:
    """Applies SYNTHAUG_DETERMINISTIC first (every trial, server, preparation and data-parallel worker
    picks its device here, before its first CUDA work), then picks: cpu in a Ray worker that Ray gave
    no GPU (CUDA hidden from it first; SYNTHAUG_DEVICE=cuda there is a DeviceError); elsewhere
    $SYNTHAUG_DEVICE if set, else cuda when this process sees a GPU, else cpu; DeviceError when Ray
    gave this process a GPU that CUDA cannot use."""
    apply_determinism()
    forced = os.environ.get(DEVICE_ENV)
    given = ray_worker_gpus()
    if given == []:
        return _without_gpu(forced)
    if forced:
        return forced
    if torch.cuda.is_available():
        return "cuda"
    if given:
        raise DeviceError(f"Ray gave this process GPU(s) {given}, but CUDA is unusable here "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); fix the node's driver, "
                          f"or set {DEVICE_ENV}=cpu to run on the CPU on purpose")
    return "cpu"


def deterministic_requested() -> bool:
    """SYNTHAUG_DETERMINISTIC: 1 on; unset, empty or 0 off; anything else a DeviceError (one line)."""
    value = os.environ.get(DETERMINISTIC_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise DeviceError(f"{DETERMINISTIC_ENV}: 1 (deterministic algorithms) or 0, got {value!r}")
    return value == "1"


def apply_determinism() -> bool:
    """Under SYNTHAUG_DETERMINISTIC=1, for this process: torch.use_deterministic_algorithms(True,
    warn_only=True), cuDNN deterministic with benchmark off (it would pick kernels by timing them), and
    CUBLAS_WORKSPACE_CONFIG=:4096:8 unless already set (cuBLAS reads it when a process makes its first
    handle, so this must run before the first CUDA matmul). Whether it is on; off changes nothing."""
    if not deterministic_requested():
        return False
    os.environ.setdefault(CUBLAS_WORKSPACE_ENV, CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return True


def numerics(device: torch.device | str, autocast: bool | None = None) -> str:
    """The device type and the precision a network runs in there, under the autocast rule below:
    "cpu/float32", "cuda/bf16", "cpu/bf16" (forced), "cuda/tf32" (autocast forced off; cuDNN's TF32
    convolutions, torch's default). Part of a pool's identity: a choice that changes its images."""
    device = torch.device(device)
    if autocast_enabled(device, autocast):
        precision = "bf16"
    elif device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        precision = "tf32"
    else:
        precision = "float32"
    return f"{device.type}/{precision}"


def made_on(device: torch.device | str) -> str:
    """What else decides the bits a computation on `device` gives: the GPU model (or the CPU's
    architecture and vector unit), torch and its CUDA and cuDNN builds, TF32 matmuls and deterministic
    algorithms when on. e.g. "NVIDIA H200, torch 2.5.1+cu124, CUDA 12.4, cuDNN 90100". Recorded with a
    pool's shards, not part of its identity: it changes bytes, not what the images are drawn from."""
    device = torch.device(device)
    if device.type == "cuda":
        parts = [torch.cuda.get_device_name(device), f"torch {torch.__version__}", f"CUDA {torch.version.cuda}",
                 f"cuDNN {torch.backends.cudnn.version()}"]
        if torch.backends.cuda.matmul.allow_tf32:
            parts.append("TF32 matmul")
    else:
        parts = [f"{device.type} {platform.machine()} {torch.backends.cpu.get_cpu_capability()}",
                 f"torch {torch.__version__}"]
    if torch.are_deterministic_algorithms_enabled():
        parts.append("deterministic")
    return ", ".join(parts)


def _without_gpu(forced: str | None) -> str:
    """A Ray worker with a zero GPU share: no GPU is visible to it from now on, and it runs on the CPU."""
    if forced and torch.device(forced).type == "cuda":
        raise DeviceError(f"{DEVICE_ENV}={forced}, but Ray gave this process no GPU (--gpus 0, or a zero GPU "
                          f"share); unset {DEVICE_ENV}, or give the process a GPU share")
    os.environ[VISIBLE_GPUS_ENV] = ""
    return "cpu"


def ray_worker_gpus() -> list | None:
    """The GPU ids Ray assigned to this process when it is a Ray worker (a task or an actor; [] for a zero
    share); None in a driver or a process outside Ray."""
    ray = sys.modules.get("ray")        # a Ray worker has imported ray before it runs anything of ours
    if ray is None or not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return None
    return list(ray.get_gpu_ids())


def device_task(function, num_gpus: float, num_cpus: float = 1):
    """`function` as a Ray task holding num_gpus (and num_cpus), run in a process that ends with it
    (max_calls=1): a GPU task never inherits a process whose CUDA saw another task's GPU. Ray gives
    max_calls=1 itself only to a function declared with num_gpus, not one given them by .options(),
    which cannot set max_calls. Every Ray task that may hold a GPU is made here."""
    import ray

    return ray.remote(max_calls=1)(function).options(num_gpus=num_gpus, num_cpus=num_cpus)


def autocast_enabled(device: torch.device | str, autocast: bool | None = None) -> bool:
    """bf16 autocast: None means on CUDA only; True or False forces it either way."""
    return torch.device(device).type == "cuda" if autocast is None else bool(autocast)


def bf16_autocast(device: torch.device | str, autocast: bool | None = None) -> torch.autocast:
    """The autocast context for `device` under that rule."""
    device = torch.device(device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_enabled(device, autocast))


def host_tensor(array) -> torch.Tensor:
    """A torch tensor over a host numpy array (contiguous); a read-only one (an array Ray's object
    store shipped) is copied first, since torch cannot wrap memory it may not write."""
    import numpy as np

    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def cpu_copy(obj):
    """A deep copy of a (nested) state dict with every tensor cloned to the CPU: a checkpoint that
    later training on the device leaves alone."""
    import copy

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)
