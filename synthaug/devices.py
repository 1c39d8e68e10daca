"""What differs on a GPU, in one place, parameterised by the device so the CPU can run it too.

bf16 autocast is on for CUDA and off for the CPU unless a caller forces it (`autocast=True`):
the tests do, so a dtype bug in the GPU's path shows on this machine and not on the first GPU.
"""

from __future__ import annotations

import torch


def autocast_enabled(device: torch.device | str, autocast: bool | None = None) -> bool:
    """bf16 autocast: None means on CUDA only; True or False forces it either way."""
    return torch.device(device).type == "cuda" if autocast is None else bool(autocast)


def bf16_autocast(device: torch.device | str, autocast: bool | None = None) -> torch.autocast:
    """The autocast context for `device` under that rule."""
    device = torch.device(device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_enabled(device, autocast))
