"""Two different sweeps side by side on one cluster, one cache and one tracking store: each creates and
uses its own DDPM server (named for the sweep, owned by its driver), so ending one sweep ends its server
and nothing of the other, and each sweep's trials read pools of its own generator only."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from synthaug.core.gates import TRIAL_GATE
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.pools.store import PoolKey

from processes import wait_for

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = "ddpm-cond"
WEIGHTS_TAG = f"synthaug.generator.{GENERATOR}.weights"

SCRIPT = '''
import sys
from synthaug.sweep.runner import Experiment, main
sys.exit(main(Experiment(name="{name}", grid={{"replace_pct": [20, 40]}}, fixed={{"generator": "{generator}"}})))
'''


class Sweep:
    """One tiny sweep script on the cluster, gated: its trials wait at its own gate until tickets appear."""

    def __init__(self, tmp_path: Path, name: str, shapes_tar: Path, uri: str, address: str, sets: list[str]):
        self.name, self.uri = name, uri
        self.gate = tmp_path / f"gate-{name}"
        self.gate.mkdir()
        script = tmp_path / f"{name}.py"
        script.write_text(SCRIPT.format(name=name, generator=GENERATOR))
        self.argv = [sys.executable, str(script), "--preset", "tiny", "--seeds", "1", "--data", str(shapes_tar),
                     "--cache", str(tmp_path / "cache"), "--storage", str(tmp_path / "ray_results"),
                     "--mlflow-uri", uri, "--address", address, *(a for s in sets for a in ("--set", s))]
        self.log = tmp_path / f"{name}.log"
        self.proc = None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         env={**os.environ, TRIAL_GATE: str(self.gate), "PYTHONPATH": str(ROOT)})

    def waiting(self) -> bool:
        """A trial of this sweep waits at its gate (it is past its server's creation and the warm-up)."""
        return any(self.gate.glob("waiting-*"))

    def alive(self) -> bool:
        assert self.proc.poll() is None, f"sweep {self.name} ended:\n" + self.log.read_text()[-3000:]
        return True

    def open(self) -> None:
        for i in range(10):
            (self.gate / f"ticket-{i}").touch()

    def runs(self, role: str) -> list:
        client = MlflowClient(self.uri)
        experiment = client.get_experiment_by_name(self.name)
        if experiment is None:
            return []
        return client.search_runs([experiment.experiment_id], f"tags.`synthaug.role` = '{role}'")

    def server(self, names: set[str]) -> str | None:
        mine = [n for n in names if n.startswith(f"ddpm-server/{self.name}-tiny-") and n.endswith(f"/{GENERATOR}/0")]
        assert len(mine) <= 1, mine
        return mine[0] if mine else None

    def digest(self) -> str:
        """The weights digest of the generator this sweep's parent run says it served."""
        [parent] = self.runs("sweep")
        return parent.data.tags[WEIGHTS_TAG]

    def check_trials(self, cache: Path, tmp_path: Path, digest: str, train_seed: int) -> None:
        """Both trials FINISHED, children of this sweep's run, logged with this sweep's generator settings,
        and trained on pools of this sweep's generator only."""
        [parent] = self.runs("sweep")
        done = self.runs("trial")
        assert len(done) == 2 and {r.info.status for r in done} == {"FINISHED"}, done
        for run in done:
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert run.data.params["generator_spec.train_seed"] == str(train_seed)
            assert pool_digests(self.uri, run, cache, tmp_path) == {digest}


def server_names() -> set[str]:
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("ddpm-server/")}


def pool_digests(uri: str, run, cache: Path, tmp_path: Path) -> set[str]:
    """The weights digests of the pools a finished trial run trained on (its manifest's pool ids, each
    pool's key as written beside its shards)."""
    folder = tmp_path / "manifests" / run.info.run_id
    folder.mkdir(parents=True)
    path = MlflowClient(uri).download_artifacts(run.info.run_id, "manifest.json", str(folder))
    manifest = json.loads(Path(path).read_text())
    pool_ids = {row["pool_id"] for row in manifest["classes"] if row["pool_id"]}
    assert pool_ids, manifest
    digests = set()
    for pool_id in pool_ids:
        written = json.loads((cache / "pools" / pool_id / "pool.json").read_text())
        key = PoolKey(**{**{k: written[k] for k in ("weights_digest", "class_index", "labeller_digest", "seed",
                                                    "numerics")}, "sampler": SamplerConfig(**written["sampler"])})
        assert key.pool_id == pool_id           # the id is the digest of that key, the weights digest in it
        digests.add(key.weights_digest)
    return digests


def test_two_sweeps_side_by_side_each_own_server_and_generator_and_one_ends_alone(tmp_path, shapes_tar,
                                                                                     monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")      # the test's manifest downloads
    started = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    a = Sweep(tmp_path, "side_a", shapes_tar, uri, cluster.address, [])
    # the same generator name, other weights: another training seed (a cache key and a digest of its own)
    b = Sweep(tmp_path, "side_b", shapes_tar, uri, cluster.address, [f"generators.{GENERATOR}.train_seed=1"])
    try:
        a.start()
        b.start()
        wait_for(lambda: b.alive() and a.waiting() and b.waiting(), "a trial of each sweep at its gate", a.proc, a.log)
        print(f"\nboth sweeps at their gates after {time.monotonic() - started:.0f} s")
        ray.init(address=cluster.address)
        names = server_names()
        server_a, server_b = a.server(names), b.server(names)
        assert server_a and server_b and server_a != server_b, names       # both alive at once, each its own
        digest_a, digest_b = a.digest(), b.digest()
        assert digest_a != digest_b

        os.kill(a.proc.pid, signal.SIGKILL)         # the driver only: the cluster and the other sweep stay
        a.proc.wait(timeout=30)
        wait_for(lambda: a.server(server_names()) is None, "the killed sweep's server gone", b.proc, b.log,
                 limit_s=120)
        assert b.server(server_names()) == server_b and b.proc.poll() is None
        print(f"sweep A killed, its server gone, B's kept after {time.monotonic() - started:.0f} s")

        b.open()
        assert b.proc.wait(timeout=600) == 0, b.log.read_text()[-3000:]
        b.check_trials(tmp_path / "cache", tmp_path, digest_b, train_seed=1)            # never A's
        assert f"DDPM server {GENERATOR}: generated" in b.log.read_text()
        print(f"sweep B finished on its own generator after {time.monotonic() - started:.0f} s")

        # the killed sweep, rerun: it resumes, on a new server of its own, with its own generator
        a.open()
        a.start()
        assert a.proc.wait(timeout=600) == 0, a.log.read_text()[-3000:]
        assert "resuming " in a.log.read_text()
        a.check_trials(tmp_path / "cache", tmp_path, digest_a, train_seed=0)
        assert a.digest() == digest_a                                      # the same parent run, resumed
        deadline = time.monotonic() + 60                                   # both drivers gone: their servers too
        while not server_names().isdisjoint({server_a, server_b}):
            assert time.monotonic() < deadline, server_names()
            time.sleep(0.5)
        print(f"sweep A resumed and finished after {time.monotonic() - started:.0f} s")
    finally:
        for sweep in (a, b):
            if sweep.proc is not None and sweep.proc.poll() is None:
                sweep.proc.kill()
                sweep.proc.wait(timeout=30)
        ray.shutdown()
        cluster.shutdown()
