"""What differs on a GPU, in one place, parameterised by the device so the CPU can run it too.

The device a process uses is the one it sees (torch.cuda.is_available(), which follows
CUDA_VISIBLE_DEVICES as Ray sets it), never what Ray reserved for it. A process Ray gave a GPU
that finds CUDA unusable (no driver, a broken install, a GPU only declared) stops with
DeviceError instead of quietly training on the CPU. SYNTHAUG_DEVICE=cpu (or cuda) forces the
choice in every process (the sweep passes it to its workers on every node): how the tests run
on Ray nodes that declare GPUs this machine does not have.

bf16 autocast is on for CUDA and off for the CPU unless a caller forces it (`autocast=True`):
the tests do, so a dtype bug in the GPU's path shows on this machine and not on the first GPU.
"""

from __future__ import annotations

import os

import torch

DEVICE_ENV = "SYNTHAUG_DEVICE"     # a documented override: cpu or cuda


class DeviceError(RuntimeError):
    """A process was given a GPU and cannot use it; the message is one line."""


def default_device() -> str:
    """$SYNTHAUG_DEVICE if set, else cuda when this process sees a GPU, else cpu; DeviceError when Ray
    gave this process a GPU that CUDA cannot use."""
    forced = os.environ.get(DEVICE_ENV)
    if forced:
        return forced
    if torch.cuda.is_available():
        return "cuda"
    given = assigned_gpus()
    if given:
        raise DeviceError(f"Ray gave this process GPU(s) {given}, but CUDA is unusable here "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); fix the node's driver, "
                          f"or set {DEVICE_ENV}=cpu to run on the CPU on purpose")
    return "cpu"


def assigned_gpus() -> list:
    """The GPU ids Ray assigned to this process (a task or actor that asked for num_gpus); [] elsewhere."""
    try:
        import ray

        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:  # noqa: BLE001 - not inside Ray, or a Ray without a runtime context
        return []


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
