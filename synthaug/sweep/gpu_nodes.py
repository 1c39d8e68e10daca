"""A cluster's GPUs: asked of the autoscaler, waited for, looked at before any work, and let go.

    gpu_request(wanted)             while the block runs, the autoscaler is asked for `wanted` GPUs (one
                                    bundle each); the request is cleared when the block ends, fails or is
                                    interrupted: a request left behind keeps GPU nodes up until `ray down`
    wait_for_gpus(wanted, limit_s)  waits for them to join, printing what has; never falls back to the CPU
    gpu_node_problem()              on every live GPU node, the NVIDIA driver and torch's CUDA build,
                                    printed; a node whose driver cannot run that build is one line

A sweep and the generator job run them in this order, and their other cluster checks (tracking,
shared folders, placement) after them, so that on a cluster that scales GPU nodes from zero those
checks see the nodes that will do the work. A driver killed with SIGKILL cannot clear its request;
the next command that asks replaces it (a request is the cluster's, not a driver's).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

# the oldest NVIDIA driver (Linux) that runs each CUDA major version's runtime (NVIDIA's CUDA
# compatibility table: minor-version compatibility from these on)
MIN_DRIVER = {11: 450, 12: 525, 13: 580}


def _request(bundles: list[dict]) -> None:
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)
    except Exception:  # noqa: BLE001 - no autoscaler (a local Ray): nothing will join, nothing to clear
        pass


@contextmanager
def gpu_request(wanted: int) -> Iterator[None]:
    """Ask the autoscaler for `wanted` GPUs for as long as the block runs (0: ask for nothing)."""
    if wanted <= 0:
        yield
        return
    _request([{"GPU": 1}] * wanted)
    try:
        yield
    finally:
        _request([])


def wait_for_gpus(wanted: int, limit_s: float, poll_s: float = 2.0) -> str | None:
    """Wait up to limit_s for the cluster to hold `wanted` GPUs; None once it does, else the one-line
    problem. wanted 0: nothing to wait for."""
    import ray

    if wanted <= 0:
        return None
    deadline, shown = time.monotonic() + limit_s, None
    while True:
        have = int(ray.cluster_resources().get("GPU", 0))
        if have >= wanted:
            if shown is not None:
                print(f"GPUs joined: {have} of {wanted}", flush=True)
            return None
        if have != shown:
            print(f"waiting for GPUs: {have} of {wanted} joined (up to {limit_s:g} s)", flush=True)
            shown = have
        if time.monotonic() >= deadline:
            return (f"--gpus {wanted}: only {have} GPU(s) joined within {limit_s:g} s; raise --wait-for-gpus, "
                    f"check the cluster's GPU workers, or pass --gpus 0 to run on CPUs")
        time.sleep(poll_s)


def _node_gpus() -> dict:
    """What this node has: its NVIDIA driver (None without one) and the CUDA build of its torch."""
    import socket
    import subprocess

    import torch

    try:
        query = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
        lines = [line.split(",", 1) for line in query.stdout.strip().splitlines() if "," in line]
    except (OSError, subprocess.TimeoutExpired):
        lines = []
    return {"host": socket.gethostname(), "driver": lines[0][0].strip() if lines else None,
            "model": lines[0][1].strip() if lines else None, "torch": torch.__version__, "cuda": torch.version.cuda}


def driver_problem(found: dict, address: str) -> str | None:
    """Why the node at `address` (what _node_gpus found there) cannot run its torch on its GPUs, or None."""
    from synthaug.core.devices import DEVICE_ENV

    if found["cuda"] is None:
        return (f"GPU node {address}: torch {found['torch']} there is a CPU build; install a CUDA build "
                f"(README, Install)")
    if found["driver"] is None:
        if os.environ.get(DEVICE_ENV) == "cpu":         # declared GPUs run on the CPU on purpose (tests)
            return None
        return (f"GPU node {address}: no NVIDIA driver answers there (nvidia-smi); install one, or set "
                f"{DEVICE_ENV}=cpu to run on its CPU on purpose")
    major = int(found["cuda"].split(".")[0])
    need = MIN_DRIVER.get(major, 0)
    if int(found["driver"].split(".")[0]) < need:
        return (f"GPU node {address}: NVIDIA driver {found['driver']} is older than {need}, which torch "
                f"{found['torch']} (CUDA {found['cuda']}) needs; install the build of the same torch for an older "
                f"CUDA there (README, Install: the cu126 wheels run on drivers >= 525), or a newer driver")
    return None


def gpu_node_problem() -> str | None:
    """On every live node that declares GPUs: print its driver and torch's CUDA build; the first node that
    cannot run them is the one-line problem."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    probe = ray.remote(_node_gpus)
    found = ray.get([probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote() for n in nodes])
    for node, seen in zip(nodes, found):
        print(f"GPU node {node['NodeManagerAddress']}: {int(node['Resources']['GPU'])} GPU(s)"
              f"{', ' + seen['model'] if seen['model'] else ''}; NVIDIA driver {seen['driver'] or 'none found'}; "
              f"torch {seen['torch']}, CUDA {seen['cuda'] or 'none (a CPU build)'}", flush=True)
    return next(filter(None, (driver_problem(seen, n["NodeManagerAddress"]) for n, seen in zip(nodes, found))),
                None)
