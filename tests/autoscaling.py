"""Ray's own autoscaler on this machine, with the GPU node types of cluster.yaml.

`ray start --head --autoscaling-config` runs Ray's monitor (the StandardAutoscaler, its resource demand
scheduler, request_resources, idle scale-down) over Ray's fake multi-node provider, which starts each
node it launches as Ray processes on this machine declaring the node type's resources (GPUs included:
Ray schedules and assigns them like real ones). It is what ray.cluster_utils.AutoscalingCluster does,
started here with a Ray temp folder and port of its own (AutoscalingCluster runs `ray stop --force`,
which stops every Ray on the machine, and reads a file this Ray build does not ship), and with one
change to the provider: each node it launches runs in a folder of its own, so `/proc/self/cwd/<x>`
is a different folder on each node, as a path on each machine's own disk would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

from processes import free_port, kill_ray_instance, short_ray_tmpdir

ROOT = Path(__file__).resolve().parents[1]
NODE_FOLDERS_ENV = "SYNTHAUG_TEST_NODE_FOLDERS"


class NodeLocalFakeProvider(FakeMultiNodeProvider):
    """Ray's fake multi-node provider; each node it launches runs in its own folder under $NODE_FOLDERS_ENV."""

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        with self.lock:
            folder = Path(os.environ[NODE_FOLDERS_ENV]) / f"node-{self._next_node_id + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            here = os.getcwd()
            os.chdir(folder)             # the node's processes inherit it; the monitor's own is restored
            try:
                super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
            finally:
                os.chdir(here)


def cluster_yaml_gpu_types() -> dict:
    """cluster.yaml's GPU worker node types as the fake provider takes them: their resources, min_workers and
    max_workers as written there (no instance to launch: node_config empty)."""
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    return {name: {"resources": dict(t["resources"]), "min_workers": t["min_workers"], "max_workers": t["max_workers"],
                   "node_config": {}}
            for name, t in config["available_node_types"].items() if t.get("resources", {}).get("GPU")}


@contextmanager
def autoscaling_cluster(folder: Path, idle_timeout_minutes: float = 0.1) -> Iterator[str]:
    """A head that takes no work (no CPU, no GPU) and cluster.yaml's GPU node types from zero, scaled by Ray's
    autoscaler; yields the head's address. Every process of it is killed afterwards."""
    import ray._private.services

    ip = ray._private.services.get_node_ip_address()
    port = free_port()
    config = {
        "cluster_name": "synthaug-test", "max_workers": 8, "upscaling_speed": 2.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "external", "module": "autoscaling.NodeLocalFakeProvider", "gcs_address": f"{ip}:{port}",
                     "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {"ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
                                 **cluster_yaml_gpu_types()},
        "head_node_type": "ray.head.default", "auth": {}, "docker": {},
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                               "cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts": {}, "file_mounts_sync_continuously": False,
    }
    (folder / "head").mkdir(parents=True, exist_ok=True)
    config_file = folder / "autoscaling.json"
    config_file.write_text(json.dumps(config))
    ray_tmpdir = short_ray_tmpdir()
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_TMPDIR": str(ray_tmpdir),
           NODE_FOLDERS_ENV: str(folder / "nodes"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port", str(port),
                        "--num-cpus", "0", "--num-gpus", "0", "--include-dashboard", "false",
                        f"--autoscaling-config={config_file}", "--disable-usage-stats"],
                       cwd=folder / "head", env=env, check=True, capture_output=True, timeout=120)
        yield f"{ip}:{port}"
    finally:
        kill_ray_instance(ray_tmpdir)


def pending_gpu_request(address: str) -> list:
    """The bundles of the autoscaler's standing request_resources request (v1: kept in the GCS KV store)."""
    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return json.loads(raw) if raw else []


@contextmanager
def connected(address: str) -> Iterator[None]:
    """This process connected to the cluster as the commands connect (synthaug.sweep.cli.start_ray: token mode for
    a head started with `ray start`), and afterwards as it was."""
    import ray
    from ray._raylet import Config

    from synthaug.sweep.cli import start_ray

    mode = os.environ.get("RAY_AUTH_MODE")
    start_ray(address)
    try:
        yield
    finally:
        ray.shutdown()
        if mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = mode
        Config.initialize("")
