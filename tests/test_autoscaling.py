"""The cluster path on Ray's own autoscaler (tests/autoscaling.py): cluster.yaml's GPU node types scale from
zero, a head that takes no work. A command that asks for GPUs waits for the nodes to be launched, runs its
checks on them, does its work there, and lets them go: its request is cleared and the autoscaler scales the
nodes down.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from synthaug.core.devices import DEVICE_ENV

from autoscaling import autoscaling_cluster, connected, pending_gpu_request

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = '''
import sys
from synthaug.sweep.runner import Experiment, main
sys.exit(main(Experiment(name="tiny_autoscaled", grid={"replace_pct": [0, 20]}, fixed={"generator": "ddpm-cond"})))
'''


def run(argv: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    # the nodes' GPUs are declared, not real: their processes run on the CPU on purpose
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, DEVICE_ENV: "cpu", "PYTHONPATH": str(ROOT)})


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    """The command's error lines (beside Ray's own log lines on stderr)."""
    return [line for line in proc.stderr.splitlines() if line.startswith("error")]


def gpu_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU"))


def released(address: str, limit_s: float = 180) -> float:
    """Seconds until the request is gone and no GPU node is left (the autoscaler took them down)."""
    start = time.monotonic()
    while pending_gpu_request(address) or gpu_nodes():
        assert time.monotonic() - start < limit_s, f"GPU nodes still up: request {pending_gpu_request(address)}"
        time.sleep(1)
    return time.monotonic() - start


def test_commands_wait_for_the_gpu_nodes_check_them_work_on_them_and_let_them_go(tmp_path, shapes_tar):
    driver = tmp_path / "driver"            # the commands' working folder: /proc/self/cwd there is this one
    driver.mkdir()
    (driver / "tiny_autoscaled.py").write_text(SCRIPT)
    common = ["--preset", "tiny", "--data", str(shapes_tar), "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    sweep = [sys.executable, "tiny_autoscaled.py", *common, "--seeds", "1", "--gpus", "2", "--wait-for-gpus", "300",
             "--storage", str(tmp_path / "results")]
    job = [sys.executable, str(ROOT / "sweeps" / "train_generators.py"), *common, "--generators", "ddpm-cond",
           "--cache", str(tmp_path / "cache")]
    with autoscaling_cluster(tmp_path / "cluster") as address, connected(address):
        assert gpu_nodes() == 0
        # asked for GPUs it cannot wait for: one line, nothing trained on the CPUs, the request cleared
        start = time.monotonic()
        proc = run([*job, "--gpus", "2", "--wait-for-gpus", "0", "--address", address], driver)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert errors(proc) == [
            "error: --gpus 2: only 0 GPU(s) joined within 0 s; raise --wait-for-gpus, check the cluster's GPU "
            "workers, or pass --gpus 0 to run on CPUs"]
        assert "training" not in proc.stdout and not (tmp_path / "cache" / "generators").exists()
        print(f"job, no wait: exit 2 in {time.monotonic() - start:.1f} s; released in {released(address):.1f} s")

        # a node-local --cache: the same path is each node's own folder; refused once the GPU nodes joined
        proc = run([*sweep, "--cache", "/proc/self/cwd/cache", "--address", address], driver)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "waiting for GPUs: 0 of 2" in proc.stdout and "GPUs joined: 2 of 2" in proc.stdout
        [line] = errors(proc)
        assert line.startswith("error: --cache /proc/self/cwd/cache: node ") and "does not see" in line
        assert "preparing generators" not in proc.stdout
        assert not [p for p in tmp_path.rglob("generators") if p.is_dir()]      # nothing trained anywhere
        print(f"node-local cache: {line}; released in {released(address):.1f} s")

        # the generator job: waits, checks every GPU node, trains there, lets the nodes go
        proc = run([*job, "--gpus", "2", "--address", address], driver)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "waiting for GPUs: 0 of 2" in proc.stdout
        assert proc.stdout.count("NVIDIA driver none found") == 2             # each GPU node, looked at
        assert "; GPU, 1 worker(s) a generator" in proc.stdout
        print(f"job: released in {released(address):.1f} s")

        # the sweep: the same, its generator cached by the job
        proc = run([*sweep, "--cache", str(tmp_path / "cache"), "--address", address], driver)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "waiting for GPUs: 0 of 2" in proc.stdout and "2/2 trials finished" in proc.stdout
        assert "cluster: 3 node(s)" in proc.stdout
        print(f"sweep: released in {released(address):.1f} s")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny_autoscaled").experiment_id],
                              "tags.`synthaug.role` = 'trial'")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
