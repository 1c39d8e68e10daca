"""What fits on a cluster's GPUs: the arithmetic the dry run prints and the sweep and the generator
job check once Ray is up, so that a request Ray could never place is refused in one line (exit 2)
instead of pending forever.

A GPU is a share of 1.0. A request below 1 takes a share of one GPU, and Ray packs such shares on a
node best fit (each on the fullest GPU it still fits: two 0.1 servers on a 2-GPU node both sit on
GPU 0, leaving GPU 1 whole); the generator servers' shares are placed here the same way. A request
of 1 or more takes whole GPUs of one node.

What a cluster can provide is what its live nodes declare when asked. A sweep asks once the GPUs of
--gpus have joined (synthaug.sweep.gpu_nodes asks an autoscaler for them), so a cluster that
scales GPUs from zero is counted with the GPUs the user asked for; nodes an autoscaler might add
beyond those are not counted.
"""

from __future__ import annotations

import math
from typing import Sequence

from synthaug.config import Preset

EPSILON = 1e-9


class PlacementError(RuntimeError):
    """A request this cluster cannot place: one line naming it and what to change, exit code 2."""


def cluster_gpus() -> list[int]:
    """The GPUs each live node of the connected Ray cluster declares (nodes without GPUs left out)."""
    import ray

    return [int(node["Resources"]["GPU"]) for node in ray.nodes() if node["Alive"] and node["Resources"].get("GPU")]


def describe(node_gpus: Sequence[int]) -> str:
    """The GPUs of nodes in words: "the cluster's 1 node with 1 GPU", "the cluster's 3 nodes with 1, 1, 8 GPUs"."""
    if not node_gpus:
        return "a cluster without GPUs"
    nodes = f"{len(node_gpus)} node{'s' * (len(node_gpus) > 1)}"
    return f"the cluster's {nodes} with {', '.join(map(str, node_gpus))} GPU{'s' * (sum(node_gpus) > 1)}"


def free_after_servers(node_gpus: Sequence[int], servers: int, share: float) -> list[list[float]] | None:
    """Each node's GPUs' free shares once `servers` generator servers took `share` each (packed best fit,
    as Ray packs them); None when one of them fits nowhere."""
    free = [[1.0] * n for n in node_gpus]
    for _ in range(servers):
        if not _take(free, share):
            return None
    return free


def _take(free: list[list[float]], request: float) -> bool:
    """Place one request in `free` as Ray would; False when it fits nowhere."""
    if request <= 0:
        return True
    if request < 1:
        fitting = [(f, n, g) for n, node in enumerate(free) for g, f in enumerate(node) if f + EPSILON >= request]
        if not fitting:
            return False
        _, n, g = min(fitting)                  # best fit: the fullest GPU it still fits
        free[n][g] -= request
        return True
    for node in free:
        whole = [g for g, f in enumerate(node) if f >= 1 - EPSILON]
        if len(whole) >= math.ceil(request - EPSILON):
            for g in whole[:math.ceil(request - EPSILON)]:
                node[g] = 0.0
            return True
    return False


def whole_free(free: list[list[float]]) -> list[int]:
    """The GPUs of each node nobody holds a share of."""
    return [sum(f >= 1 - EPSILON for f in node) for node in free]


def whole_gpus_beside_servers(node_gpus: Sequence[int], servers: int, share: float) -> int:
    """Whole GPUs left free in all by the generator servers' shares (0 when the servers do not fit)."""
    return sum(whole_free(free_after_servers(node_gpus, servers, share) or []))


def trials_that_fit(free: list[list[float]], per_trial: float) -> int:
    """How many requests of per_trial (> 0) GPUs fit at once beside what `free` already holds."""
    if per_trial < 1:
        return sum(int((f + EPSILON) // per_trial) for node in free for f in node)
    return sum(whole // math.ceil(per_trial - EPSILON) for whole in whole_free(free))


def largest_request(free: list[list[float]]) -> float:
    """The largest request that fits: whole GPUs of one node, else the largest share of one GPU."""
    return max([*whole_free(free), *(f for node in free for f in node)], default=0.0)


def gpu_problem(preset: Preset, servers: int, node_gpus: Sequence[int]) -> str | None:
    """Why the GPU requests of a sweep of `servers` generators cannot all be placed on these nodes, in one
    line naming the setting to change: the servers' shares, one trial beside them, the warm-up replicas
    the preset asks for (a whole GPU each, beside the servers); None when each can be."""
    free = free_after_servers(node_gpus, servers, preset.server_gpus)
    where = describe(node_gpus)
    if free is None:
        return (f"preset.server_gpus: {servers} generator server(s) of {preset.server_gpus:g} GPU each do not fit on "
                f"{where}; lower it or add GPUs")
    if preset.gpus_per_trial > 0 and not trials_that_fit(free, preset.gpus_per_trial):
        return (f"--gpus-per-trial (preset.gpus_per_trial) {preset.gpus_per_trial:g}: no trial fits beside the "
                f"generator servers' shares ({servers} x preset.server_gpus {preset.server_gpus:g}) on {where}; "
                f"at most {largest_request(free):g} fits: lower it, or add GPUs")
    return warmup_problem(preset.warmup_replicas, sum(whole_free(free)),
                          "a whole GPU free beside the generator servers")


def warmup_problem(setting: int, places: int, place: str) -> str | None:
    """Why the preset's warm-up replicas (`setting`; 0 and 1 ask for no extra one) cannot all be placed
    when the cluster has `places` of the `place` each takes, or None."""
    most = max(1, places)
    if setting <= most:
        return None
    return (f"preset.warmup_replicas {setting}: each replica takes {place}, and this cluster has {places}; set it "
            f"to at most {most} (1: the serving replica warms alone; 0: one replica a free GPU)")
