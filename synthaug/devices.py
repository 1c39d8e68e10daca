"""What differs on a GPU, in one place, parameterised by the device so the CPU can run it too.

The device a process uses is the one it sees (torch.cuda.is_available(), which follows
CUDA_VISIBLE_DEVICES as Ray sets it), never what Ray reserved for it: a Ray node that only
declares a GPU runs everything on the CPU. SYNTHAUG_DEVICE=cpu (or cuda) forces the choice
in every process of a local Ray (workers inherit the driver's environment).

bf16 autocast is on for CUDA and off for the CPU unless a caller forces it (`autocast=True`):
the tests do, so a dtype bug in the GPU's path shows on this machine and not on the first GPU.
"""

from __future__ import annotations

import os

import torch

DEVICE_ENV = "SYNTHAUG_DEVICE"     # a documented override: cpu or cuda


def default_device() -> str:
    """$SYNTHAUG_DEVICE if set, else cuda when this process sees a GPU, else cpu."""
    return os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")


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
