"""Object storage safe to resume on: a sweep whose --storage is s3:// on a real S3 API (moto's server on
127.0.0.1) and whose tracking server keeps its artifacts in the same store, killed with SIGKILL at three
different points and rerun each time: every trial FINISHED exactly once, no MLflow run left RUNNING. A
trial whose checkpoint the store no longer holds (Ray issue 27790) trains again from scratch.
(Missing bucket and wrong credentials are one line, exit 2, in tests/test_preflight_probes.py.)
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from synthaug.core.gates import TRIAL_GATE
from synthaug.training.trial import RESTARTED_TAG

from processes import kill_ray_instance, processes_of_ray_instance, short_ray_tmpdir, wait_for
from services import mlflow_server, s3_server

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = '''
import sys
from synthaug.sweep.runner import Experiment, main
sys.exit(main(Experiment(name="tiny_s3", grid={"replace_pct": [0, 20]}, fixed={"generator": "ddpm-cond"})))
'''


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=1000) if ids else []


def trial_runs(uri: str) -> list:
    return [r for r in all_runs(uri) if r.data.tags.get("synthaug.role") == "trial"]


def test_a_sweep_on_s3_killed_three_times_finishes_every_trial_exactly_once(tmp_path, shapes_tar):
    (tmp_path / "tiny_s3.py").write_text(SCRIPT)
    gate = tmp_path / "gate"
    gate.mkdir()
    with s3_server(check_signatures=False) as s3, \
            mlflow_server(tmp_path, artifacts=s3.uri("artifacts"),
                          env={**s3.env, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint}) as uri:
        ray_tmpdir = short_ray_tmpdir()
        # Tune snapshots the experiment at every step: the checkpoint it names is the newest on S3
        env = {**os.environ, **s3.env, "RAY_TMPDIR": str(ray_tmpdir), TRIAL_GATE: str(gate),
               "PYTHONPATH": str(ROOT), "TUNE_GLOBAL_CHECKPOINT_S": "0"}
        # epochs enough that a trial is seen between its first checkpoint and its last epoch
        argv = [sys.executable, str(tmp_path / "tiny_s3.py"), "--preset", "tiny", "--seeds", "2",
                "--data", str(shapes_tar), "--cache", str(tmp_path / "cache"), "--storage", s3.uri("results"),
                "--mlflow-uri", uri, "--set", "train.epochs=12"]

        def killed_when(condition, what: str, attempt: int) -> None:
            log = tmp_path / f"run-{attempt}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(argv, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=env)
            try:
                wait_for(condition, what, proc, log, interval_s=0.2)
                assert processes_of_ray_instance(ray_tmpdir) - {proc.pid}
                os.killpg(proc.pid, 9)          # the driver and its group, no chance to clean up
                proc.wait()
            finally:
                kill_ray_instance(ray_tmpdir)   # its Ray: the daemons that left the group too
            print(f"kill {attempt}: {what}; {len(s3.keys('results/'))} objects under results/")

        def trial_mid_training() -> bool:
            """A running trial's third checkpoint is on S3: Tune has taken in the earlier ones (and deleted
            the first: it keeps two), so its snapshot names one of them."""
            running = {r.data.tags["synthaug.trial_id"] for r in trial_runs(uri) if r.info.status == "RUNNING"
                       and "synthaug.trial_id" in r.data.tags}
            return any(f"_{trial}_" in key and "/checkpoint_000002/" in key for trial in running
                       for key in s3.keys("results/"))

        try:
            # 1: while the generator trains (its run open, no sweep run yet trained anything)
            killed_when(lambda: any(r.info.status == "RUNNING" and r.data.tags.get("synthaug.role") != "sweep"
                                    for r in all_runs(uri)), "the generator training", 1)
            # 2: one trial finished, the next waiting at the gate
            (gate / "ticket-0").touch()
            killed_when(lambda: sum(r.info.status == "FINISHED" for r in trial_runs(uri)) >= 1
                        and any(gate.glob("waiting-*")), "a trial finished, the next at the gate", 2)
            # 3: a trial between its first checkpoint on S3 and its last epoch
            for i in range(1, 40):
                (gate / f"ticket-{i}").touch()
            killed_when(trial_mid_training, "a trial mid-training, its third checkpoint on S3", 3)
            # what Ray issue 27790 leaves: the checkpoints of the unfinished trials gone from the store
            unfinished = {r.data.tags["synthaug.trial_id"] for r in trial_runs(uri) if r.info.status != "FINISHED"
                          and "synthaug.trial_id" in r.data.tags}
            gone = [k for k in s3.keys("results/") if "/checkpoint_" in k and any(f"_{t}_" in k for t in unfinished)]
            s3.delete(gone)
            start = time.monotonic()
            rerun = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
            print(f"rerun: exit {rerun.returncode} in {time.monotonic() - start:.0f} s; "
                  f"{len(gone)} checkpoint objects of {len(unfinished)} unfinished trials deleted before it")
        finally:
            kill_ray_instance(ray_tmpdir)
            shutil.rmtree(ray_tmpdir, ignore_errors=True)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        runs = all_runs(uri)
        trials = [r for r in runs if r.data.tags.get("synthaug.role") == "trial"]
        assert len(trials) == 4 and {r.info.status for r in trials} == {"FINISHED"}
        assert len({r.data.tags["synthaug.trial_key"] for r in trials}) == 4
        assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
        restarted = [r.info.run_name for r in trials if RESTARTED_TAG in r.data.tags]
        print(f"{len(runs)} runs, none RUNNING; trained again from scratch: {restarted}")
        # each trial Tune restored from a checkpoint that was gone; one whose first checkpoint it had not
        # yet recorded starts over by itself
        assert 1 <= len(restarted) <= len({t for t in unfinished if any(f"_{t}_" in k for k in gone)})
        assert "had a checkpoint the storage no longer holds (Ray issue 27790)" in rerun.stdout
        assert f"Browse:   open {uri} (the tracking server's UI)" in rerun.stdout
        assert any(k.startswith("artifacts/") and k.endswith("manifest.json") for k in s3.keys())
