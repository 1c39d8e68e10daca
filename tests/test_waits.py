"""Nothing waits forever for a placement: on a Ray node declaring one GPU (only declared: the processes
run with SYNTHAUG_DEVICE=cpu), a request that can never be placed stops in one line, exit code 2,
before any generator trains; one that is not placed in time ends its wait in one line too."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthaug.core.devices import DEVICE_ENV
from synthaug.generation.placement import PlacementError, free_after_servers, trials_that_fit, whole_gpus_beside_servers
from synthaug.sweep.runner import main

from test_sweep import sweep_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_gpu_node():
    """One Ray node with 2 CPUs and 1 declared GPU, shared by the module's tests."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1})
    yield cluster
    cluster.shutdown()


def test_what_can_never_be_placed_stops_in_one_line_before_any_generator_trains(tmp_path, shapes_tar, one_gpu_node):
    """A trial beside the server's share, warm-up replicas beyond the whole GPUs it leaves free, data-parallel
    workers beyond the cluster's GPUs, or beyond its CPUs when they train on CPUs: Ray would leave each pending
    forever."""
    def command(script, case, *extra):
        return [sys.executable, f"sweeps/{script}.py", "--preset", "tiny", "--data", str(shapes_tar),
                "--cache", str(tmp_path / case / "cache"), "--mlflow-uri", f"sqlite:///{tmp_path / case / 'mlflow.db'}",
                "--address", one_gpu_node.address, *extra]

    sweep = ("--seeds", "1", "--gpus", "1", "--wait-for-gpus", "0", "--grid", "replace_pct=0,12",
             "--set", "generator=ddpm-cond")
    cases = {
        "trial": (command("replace_pct", "trial", *sweep, "--storage", str(tmp_path / "trial" / "ray_results"),
                          "--set", "preset.gpus_per_trial=1"),
                  "error: --gpus-per-trial (preset.gpus_per_trial) 1: no trial fits beside the generator servers' "
                  "shares (1 x preset.server_gpus 0.1) on the cluster's 1 node with 1 GPU; at most 0.9 fits"),
        "warm-up": (command("replace_pct", "warm-up", *sweep, "--storage", str(tmp_path / "warm-up" / "ray_results"),
                            "--set", "preset.warmup_replicas=2"),
                    "error: preset.warmup_replicas 2: each replica takes a whole GPU free beside the generator "
                    "servers, and this cluster has 0; set it to at most 1"),
        "workers": (command("train_generators", "workers", "--gpus-per-generator", "2"),
                    "error: --gpus-per-generator 2: each data-parallel worker takes a GPU, and this cluster has 1; "
                    "pass at most 1"),
        "cpu-workers": (command("train_generators", "cpu-workers", "--gpus", "0", "--gpus-per-generator", "4"),
                        "error: --gpus-per-generator 4: each data-parallel worker takes a CPU, and this cluster has 2 "
                        "(CPU workers: --gpus 0, or no GPU asked for or found); pass at most 2"),
    }
    env = {**os.environ, DEVICE_ENV: "cpu", "PYTHONPATH": str(ROOT)}
    for case, (argv, expected) in cases.items():
        start = time.monotonic()
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        seconds = time.monotonic() - start
        print(f"{case}: exit {proc.returncode} in {seconds:.1f} s: {proc.stderr.strip().splitlines()[-1:]}")
        assert proc.returncode == 2 and seconds < 60, (case, proc.stderr[-3000:])
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0] == proc.stderr.strip().splitlines()[-1], (case, proc.stderr[-3000:])
        assert errors[0].startswith(expected), (case, errors[0])
        assert not (tmp_path / case / "cache" / "generators").exists(), case         # no generator trained


def test_shares_are_packed_as_ray_packs_them():
    """Ray 2.60 put two 0.1-GPU actors on a 3-GPU node both on GPU 0, then 0.45-GPU ones on GPU 0, 1, 1: best fit."""
    assert free_after_servers([3], 2, 0.1) == [[0.8, 1.0, 1.0]]
    assert trials_that_fit(free_after_servers([3], 2, 0.1), 0.45) == 5
    assert whole_gpus_beside_servers([1, 1, 2], 2, 0.1) == 3          # both servers on one 1-GPU node's GPU
    assert trials_that_fit(free_after_servers([2], 1, 0.1), 2) == 0    # whole GPUs of one node
    assert trials_that_fit(free_after_servers([1, 2], 1, 0.1), 2) == 1
    assert free_after_servers([1], 2, 1) is None                       # the second server fits nowhere


def test_the_dry_run_names_the_same_problem(tmp_path, shapes_tar, capsys):
    """--dry-run --gpus 1 counts a one-GPU cluster the way the sweep does once Ray is up."""
    assert main(sweep_script("replace_pct"), ["--preset", "tiny", "--data", str(shapes_tar), "--cache", str(tmp_path),
                                              "--dry-run", "--gpus", "1", "--set", "preset.gpus_per_trial=1"]) == 0
    assert ("the sweep would stop here: --gpus-per-trial (preset.gpus_per_trial) 1: no trial fits beside the generator "
            "servers' shares (1 x preset.server_gpus 0.1) on the cluster's 1 node with 1 GPU; at most 0.9 fits"
            in capsys.readouterr().out)


def test_an_actor_not_placed_in_time_ends_the_wait_in_one_line(one_gpu_node):
    """A warm-up replica asks for the whole GPU while something else holds a share of it."""
    import ray

    from synthaug.generation.serving import wait_until_placed

    class Idle:
        """An actor that only holds what it asked for (defined here: a worker cannot import a test module)."""

    ray.init(address=one_gpu_node.address)
    try:
        holder = ray.remote(num_cpus=0, num_gpus=0.1)(Idle).remote()
        wait_until_placed({"the holder": holder}, "", timeout_s=60)
        start = time.monotonic()
        with pytest.raises(PlacementError) as caught:
            replica = ray.remote(num_cpus=0, num_gpus=1)(Idle).remote()
            wait_until_placed({"warm-up replica 1 of ddpm-cond (a whole GPU)": replica}, "set preset.warmup_replicas=1",
                              timeout_s=2)
        assert time.monotonic() - start < 10
        message = str(caught.value)
        print(f"error: {message}")
        assert "\n" not in message and message.endswith("set preset.warmup_replicas=1")
        assert message.startswith("warm-up replica 1 of ddpm-cond (a whole GPU) was not placed within 2 s")
    finally:
        ray.shutdown()


def test_address_auto_joins_only_a_ray_started_with_ray_start(tmp_path, shapes_tar, one_gpu_node):
    """The module's cluster is a Ray process on this machine that no `ray start` made (Ray's address file
    is absent under this RAY_TMPDIR): ray.init('auto') would have joined it; both commands refuse it in one
    line, exit 2, before the data is cached or anything starts."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({DEVICE_ENV: "cpu", "PYTHONPATH": str(ROOT), "RAY_TMPDIR": str(tmp_path / "raytmp")})
    common = ["--preset", "tiny", "--data", str(shapes_tar), "--cache", str(tmp_path / "cache"),
              "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--address", "auto"]
    for script in ("train_generators", "replace_pct"):
        extra = ["--storage", str(tmp_path / "ray_results")] if script == "replace_pct" else []
        proc = subprocess.run([sys.executable, f"sweeps/{script}.py", *common, *extra], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        print(f"{script}: exit {proc.returncode}: {proc.stderr.strip()}")
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
        assert proc.stderr.startswith("error: --address 'auto': no Ray started with `ray start` on this machine (")
        assert "Started a local Ray" not in proc.stdout + proc.stderr and not (tmp_path / "cache" / "datasets").exists()
