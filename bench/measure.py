"""How bench/ measures: medians after a warm-up with the device waited for, peak memory, the idle share of
a device (torch.profiler), and what machine and versions a figure comes from."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import numpy as np
import torch


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], reps: int, device) -> float:
    """Median seconds of `reps` calls of fn after one warm-up call, the device waited for each time."""
    fn()
    times = []
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n CIFAR-sized uint8 NHWC images and labels (speed does not depend on content)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def device_type(device: str) -> str:
    return torch.device(device).type


def reset_peak(device: str) -> None:
    if device_type(device) == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device_type(device) == "cuda" else None


def idle_share(run_epoch, device: str) -> float:
    """1 - (the union of device-busy intervals) / (the profiled span) over one call of run_epoch. On CUDA the
    busy intervals are the kernels; on a CPU, the aten operators."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device_type(device) == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    synchronize(device)
    with profile(activities=activities) as prof:
        run_epoch()
        synchronize(device)
    events = list(prof.events())
    busy = [(e.time_range.start, e.time_range.end) for e in events
            if (e.device_type == DeviceType.CUDA if cuda else e.name.startswith("aten::"))]
    if not busy:
        raise RuntimeError("the profiler recorded no " + ("kernels" if cuda else "operators"))
    span = max(e.time_range.end for e in events) - min(e.time_range.start for e in events)
    covered, end = 0.0, -float("inf")
    for start, stop in sorted(busy):
        if stop > end:
            covered += stop - max(start, end)
            end = stop
    return max(0.0, 1 - covered / span)


def device_name(device: str) -> str:
    if device_type(device) == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"


def versions() -> str:
    import importlib.metadata as md

    found = []
    for package in ("torch", "torchvision", "diffusers", "ray", "mlflow"):
        try:
            found.append(f"{package} {md.version(package)}")
        except md.PackageNotFoundError:
            pass
    cuda = f", CUDA {torch.version.cuda}" if torch.cuda.is_available() else ""
    return f"python {platform.python_version()}, " + ", ".join(found) + cuda
