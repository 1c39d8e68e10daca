"""A cluster of several Ray nodes and a real `mlflow server`: preflight refusals, HTTP tracking, node loss.

Every node here is on this machine (ray.cluster_utils.Cluster); the checks that need another
machine are driven with the node list they read.
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from synthaug.core.gates import TRIAL_GATE
from synthaug.core.storage import storage_problem
from synthaug.sweep.preflight import address_problem, shared_store_problem, tracking_problem
from synthaug.sweep.sweep_plan import storage_location

from processes import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]


def test_the_preflight_refuses_each_misconfiguration_in_one_line(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    assert "did not answer within 10 s" in tracking_problem(closed)
    assert time.monotonic() - start < 10
    assert "unknown scheme 'ftp'" in tracking_problem("ftp://host/store")
    (tmp_path / "a-file").write_text("")
    assert "cannot be created or written" in tracking_problem(f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    assert tracking_problem(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}") is None
    assert not (tmp_path / "new").exists()                       # nothing created
    with socket.socket() as silent:           # accepts, never answers: a black hole, a wrong service
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        assert "no Ray head answered within 2 s" in address_problem(f"127.0.0.1:{silent.getsockname()[1]}",
                                                                    timeout_s=2)
        assert time.monotonic() - start < 5
    assert "no Ray head answered" in address_problem(f"127.0.0.1:{free_port()}")
    assert "host:port of a Ray head" in address_problem("nonsense")
    sqlite = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert "node 10.0.0.7 is another machine" in shared_store_problem(sqlite, ["10.0.0.5", "10.0.0.7"], "10.0.0.5")
    assert shared_store_problem(sqlite, ["10.0.0.5", "10.0.0.5"], "10.0.0.5") is None
    assert shared_store_problem("http://head:5000", ["10.0.0.5", "10.0.0.7"], "10.0.0.5") is None
    assert "unknown scheme 'ftp'" in storage_problem("ftp://host/results")
    assert storage_location("s3://bucket/results") == "s3://bucket/results"     # to Tune as it is
    assert storage_location("results") == str(Path("results").resolve())


def test_a_folder_on_one_nodes_own_disk_is_refused_in_one_line(tmp_path):
    """The same path, different storage on each node: a Ray worker runs in its raylet's working folder, so
    /proc/self/cwd/<x> is node b's own folder on node b and everyone else's on the others, as a path on
    each machine's local disk would be. Every node must see what every other node wrote there."""
    import ray
    from ray.cluster_utils import Cluster

    from synthaug.sweep.preflight import cluster_problem

    here = os.getcwd()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        os.chdir(tmp_path / "a")
        cluster.add_node(num_cpus=1)
        os.chdir(tmp_path / "b")
        cluster.add_node(num_cpus=1)
        os.chdir(here)
        ray.init(address=cluster.address)
        http = "http://127.0.0.1:5000"          # not asked: only the folders are checked here
        shared = str(tmp_path / "shared")
        assert cluster_problem(http, [("--cache", shared), ("--storage", shared)]) is None
        assert not list(Path(shared).iterdir())                     # the tokens are cleaned up
        problem = cluster_problem(http, [("--cache", shared), ("--storage", "/proc/self/cwd/results")])
        assert problem.startswith("--storage /proc/self/cwd/results: node ") and "does not see" in problem
        assert "put it on storage every node mounts at the same path" in problem and "s3://" in problem
        assert "\n" not in problem
        (tmp_path / "a-file").write_text("")
        problem = cluster_problem(http, [("--cache", str(tmp_path / "a-file" / "cache"))])
        assert problem.startswith("--cache ") and "cannot write there" in problem
        local = cluster_problem(f"sqlite:///{tmp_path / 'mlflow.db'}", [])
        assert local is None                    # every node is this machine: a SQLite store serves them all
    finally:
        os.chdir(here)
        ray.shutdown()
        cluster.shutdown()


def test_a_dead_tracking_server_is_one_line_exit_2_within_seconds(tmp_path, shapes_tar):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "sweeps/replace_pct.py", "--preset", "tiny", "--data", str(shapes_tar),
                           "--storage", str(tmp_path / "r"), "--cache", str(tmp_path / "c"),
                           "--mlflow-uri", f"http://127.0.0.1:{free_port()}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and time.monotonic() - start < 60
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --mlflow-uri ") and "did not answer" in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.fixture
def mlflow_server(tmp_path):
    """A real tracking server on 127.0.0.1, its store and artifacts in tmp_path."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "served-artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(uri + "/health", timeout=2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
    yield uri
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


KILL_A_NODE = '''
import sys
from synthaug.sweep.runner import Experiment, main
sys.exit(main(Experiment(name="tiny_nodes", grid={"replace_pct": [0, 20]}, fixed={"generator": "ddpm-cond"})))
'''


def gated_sweep(tmp_path: Path, shapes_tar: Path, seeds: int, uri: str, address: str) -> tuple[list[str], Path, Path]:
    """(argv of a tiny sweep on the cluster at `address`, its trial gate holding 2 tickets, its log file)."""
    gate = tmp_path / "gate"
    gate.mkdir()
    for i in range(2):
        (gate / f"ticket-{i}").touch()
    script = tmp_path / "tiny_nodes.py"
    script.write_text(KILL_A_NODE)
    argv = [sys.executable, str(script), "--preset", "tiny", "--seeds", str(seeds), "--data", str(shapes_tar),
            "--cache", str(tmp_path / "cache"), "--storage", str(tmp_path / "ray_results"), "--mlflow-uri", uri,
            "--address", address]
    return argv, gate, tmp_path / "sweep.log"


def open_gate(gate: Path) -> None:
    """Tickets for every trial left: the sweep runs to its end."""
    for i in range(2, 40):
        (gate / f"ticket-{i}").touch()


def trial_runs(uri: str) -> list:
    """The tiny_nodes sweep's trial runs so far ([] before its store or experiment exists)."""
    try:
        experiment = MlflowClient(uri).get_experiment_by_name("tiny_nodes")
    except Exception:           # a SQLite store not created yet
        return []
    if experiment is None:
        return []
    return MlflowClient(uri).search_runs([experiment.experiment_id], "tags.`synthaug.role` = 'trial'")


def test_a_sweep_over_http_tracking_on_three_nodes_survives_losing_a_worker(tmp_path, shapes_tar, mlflow_server):
    """A head that takes no work and two workers; two trials finish, the next ones wait at the trial
    gate, a worker node is removed, the gate opens: every trial ends FINISHED exactly once, its runs
    and artifacts on the tracking server."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    argv, gate, log = gated_sweep(tmp_path, shapes_tar, 3, mlflow_server, cluster.address)
    client = MlflowClient(mlflow_server)

    def trials():
        return trial_runs(mlflow_server)

    try:
        with log.open("w") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, TRIAL_GATE: str(gate), "PYTHONPATH": str(ROOT)})
        wait_for(lambda: sum(r.info.status == "FINISHED" for r in trials()) == 2, "two finished trials", proc, log)
        taken = lambda: {p.name[len("taken-"):] for p in gate.glob("taken-*")}  # noqa: E731
        wait_for(lambda: any(p.name[len("waiting-"):] not in taken() for p in gate.glob("waiting-*")),
                 "a trial at the gate", proc, log)
        cluster.remove_node(workers[1])             # a worker lost mid-sweep, trials and maybe a server on it
        cluster.add_node(num_cpus=1)                # the autoscaler's replacement
        open_gate(gate)
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        ray.shutdown()
        cluster.shutdown()
    out = log.read_text()
    assert "cluster: 3 node(s)" in out and "its node has died" in out      # the loss hit a trial
    done = trials()
    assert len(done) == 6 and {r.info.status for r in done} == {"FINISHED"}
    assert len({r.data.tags["synthaug.trial_key"] for r in done}) == 6
    for run in done:
        assert {"manifest.json", "predictions.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert any((tmp_path / "served-artifacts").rglob("manifest.json"))   # served by the server, not written by trials


def test_a_killed_server_comes_back_and_every_trial_finishes_without_regenerating_a_pool(tmp_path, shapes_tar):
    """Two trials finish, the next wait at the gate; the DDPM server actor is killed (Ray restarts it);
    the gate opens: the trials' requests reach the restarted server, every trial finishes, and no pool
    shard is written again (the restarted server reads them from disk)."""
    import ray
    from ray.cluster_utils import Cluster

    from synthaug.generation.server import NAMESPACE

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv, gate, log = gated_sweep(tmp_path, shapes_tar, 2, uri, cluster.address)

    def trials():
        return trial_runs(uri) if (tmp_path / "mlflow.db").exists() else []

    def shards():
        return {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "pools").rglob("*.npz")}

    try:
        with log.open("w") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, TRIAL_GATE: str(gate), "PYTHONPATH": str(ROOT)})
        wait_for(lambda: sum(r.info.status == "FINISHED" for r in trials()) == 2, "two finished trials", proc, log)
        before = shards()
        ray.init(address=cluster.address, namespace=NAMESPACE)
        [name] = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith("ddpm-server/tiny_nodes-") and a["name"].endswith("/ddpm-cond/0")]
        server = ray.get_actor(name, namespace=NAMESPACE)
        ray.kill(server, no_restart=False)                  # Ray restarts it (max_restarts=-1)
        open_gate(gate)
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        ray.shutdown()
        cluster.shutdown()
    done = trials()
    assert len(done) == 4 and {r.info.status for r in done} == {"FINISHED"}
    assert before and shards() == before                   # not one shard written again
    assert "generated 0 images this sweep" in log.read_text()      # the restarted server made nothing


def test_cluster_yaml_passes_rays_own_validation_and_is_safe_as_shipped():
    """What `ray up` checks first, and what makes the file come up with only cloud credentials: shared
    storage that is the head's own disk over NFS (no EFS API, nothing to fill in), the code without the
    user's stores, the caches on the shared disk for every node's Ray, token authentication on."""
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = (ROOT / "cluster.yaml").read_text()
    config = prepare_config(yaml.safe_load(text))
    validate_config(config)                                   # what `ray up` runs first
    gpu_types = {n: t for n, t in config["available_node_types"].items() if t.get("resources", {}).get("GPU")}
    assert sorted(t["resources"]["GPU"] for t in gpu_types.values()) == [1, 8]
    assert all(t["min_workers"] == 0 for t in gpu_types.values())      # GPU workers scale from zero
    assert not re.search(r"(?<![\d.])0\.0\.0\.0", text) and "fs-XXXX" not in text   # nothing public, nothing to fill in
    assert "aws efs" not in text and "efs." not in text                  # no call the nodes' roles may not make
    assert "--dashboard-host=127.0.0.1" in text and "/mnt/shared/mlflow.db" not in text

    head, worker = (" && ".join(config[key]) for key in ("head_setup_commands", "worker_setup_commands"))
    assert "nfs-kernel-server" in head and "exportfs -ra" in head
    assert all(f"{cidr}(rw,sync,no_subtree_check,no_root_squash)" in head
               for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
    assert 'mount -t nfs4 -o hard,timeo=600 "$RAY_HEAD_IP":/mnt/shared /mnt/shared' in worker
    assert "pip download -q -d /mnt/shared/wheels -c /home/ubuntu/synthaug/constraints.txt" in head
    install = ("pip install --no-index --find-links /mnt/shared/wheels -e /home/ubuntu/synthaug"
               " -c /home/ubuntu/synthaug/constraints.txt")
    assert install in head and install in worker
    assert head.index("exportfs") < head.index("pip download") < head.index(install)
    assert worker.index("mount -t nfs4") < worker.index(install)

    assert config["rsync_filter"] == [".gitignore", ".rayignore"] and not config.get("rsync_exclude")
    ignored = {line.rstrip("/") for name in config["rsync_filter"] for line in (ROOT / name).read_text().splitlines()}
    assert {".git", ".synthaug", "ray_results", "mlflow.db", "mlruns", "mlartifacts", "/.whl"} <= ignored
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        exports = start[:start.index("ray start")]
        assert {"RAY_AUTH_MODE=token", "HF_HOME=/mnt/shared/huggingface", "TORCH_HOME=/mnt/shared/torch"} <= set(
            exports.split()), start
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line and line[0] != "#"]
    assert any(p.startswith("ray==") for p in pins) and any(p.startswith("torch==") for p in pins)
    assert not any("[" in p for p in pins)                    # pip refuses a constraint with extras


def test_a_gpu_nodes_driver_too_old_for_torchs_cuda_build_is_one_line(monkeypatch):
    from synthaug.core.devices import DEVICE_ENV
    from synthaug.sweep.gpu_nodes import driver_problem

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    found = {"host": "gpu-1", "model": "NVIDIA A10G", "torch": "2.14.1+cu130", "cuda": "13.0"}
    assert driver_problem({**found, "driver": "580.95.05"}, "10.0.1.7") is None
    old = driver_problem({**found, "driver": "535.104.05"}, "10.0.1.7")
    assert old.startswith("GPU node 10.0.1.7: NVIDIA driver 535.104.05 is older than 580, which torch 2.14.1+cu130 "
                          "(CUDA 13.0) needs") and "cu126" in old
    assert driver_problem({**found, "cuda": "12.6", "driver": "535.104.05"}, "10.0.1.7") is None
    assert "no NVIDIA driver answers there" in driver_problem({**found, "driver": None}, "10.0.1.7")
    assert "a CPU build" in driver_problem({**found, "cuda": None, "driver": "580.95.05"}, "10.0.1.7")
    monkeypatch.setenv(DEVICE_ENV, "cpu")                   # declared GPUs run on the CPU on purpose
    assert driver_problem({**found, "driver": None}, "10.0.1.7") is None
