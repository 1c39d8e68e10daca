"""Ctrl-C (SIGINT to the whole process group, as a terminal sends it) at any moment of a sweep or of the
generator job: no traceback, one line naming what was kept and that the same command resumes, exit 130
soon after, no MLflow run left RUNNING; and the same command then finishes, one run a trial."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from synthaug.core.gates import TRIAL_GATE

from processes import kill_ray_instance, short_ray_tmpdir, wait_for

ROOT = Path(__file__).resolve().parents[1]
EXIT_LIMIT_S = 30           # from the signal to the exit
SCRIPT = '''
import sys
from synthaug.sweep.runner import Experiment, main
sys.exit(main(Experiment(name="tiny_int", grid={"replace_pct": [0, 20]}, fixed={"generator": "ddpm-cond"})))
'''
RESUME = re.compile(r"^interrupted: (\d+) of (\d+) (trials finished|generators trained) and kept; "
                    r"rerun the same command to resume$", re.MULTILINE)


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=1000) if ids else []


def polled(condition):
    """condition, False while the store is being made"""
    def check() -> bool:
        try:
            return condition()
        except Exception:  # noqa: BLE001
            return False
    return check


def running(uri: str, role: str | None = None) -> list:
    return [r for r in all_runs(uri) if r.info.status == "RUNNING"
            and (role is None or r.data.tags.get("synthaug.role") == role)]


def interrupted_when(argv, env, cwd: Path, uri: str, ray_tmpdir: Path, condition, what: str, log: Path) -> str:
    """Start argv in its own process group, SIGINT the group once `condition` holds; checks the exit."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        wait_for(condition, what, proc, log, limit_s=600, interval_s=0.2)
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        try:
            code = proc.wait(timeout=EXIT_LIMIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            raise AssertionError(f"no exit {EXIT_LIMIT_S} s after SIGINT ({what}):\n" + log.read_text()[-3000:])
        took = time.monotonic() - sent
    finally:
        kill_ray_instance(ray_tmpdir)       # nothing of its Ray left, whatever it did
    text = log.read_text()
    print(f"SIGINT {what}: exit {code} {took:.1f} s after the signal; {RESUME.search(text)[0] if RESUME.search(text) else '?'}")
    assert code == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-5000:]
    assert "Tuner.restore" not in text and "Resume experiment with" not in text, text[-3000:]
    assert "Failed to fetch metrics" not in text, text[-3000:]
    assert len(RESUME.findall(text)) == 1, text[-3000:]
    left = [(r.info.run_name, r.data.tags.get("synthaug.role")) for r in running(uri)]
    assert not left, f"runs left RUNNING: {left}\n" + text[-3000:]
    return text


def test_ctrl_c_in_preparation_in_warm_up_and_in_trials_then_the_same_command_finishes(tmp_path, shapes_tar):
    (tmp_path / "tiny_int.py").write_text(SCRIPT)
    gate = tmp_path / "gate"
    gate.mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ray_tmpdir = short_ray_tmpdir()
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmpdir), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(tmp_path / "tiny_int.py"), "--preset", "tiny", "--seeds", "1",
            "--data", str(shapes_tar), "--cache", str(tmp_path / "cache"), "--storage", str(tmp_path / "ray_results"),
            "--mlflow-uri", uri]

    def blocked_at_gate() -> bool:
        taken = {p.name.removeprefix("taken-") for p in gate.glob("taken-*")}
        return any(p.name.removeprefix("waiting-") not in taken for p in gate.glob("waiting-*"))

    def finished_trials() -> int:
        return sum(r.info.status == "FINISHED" for r in all_runs(uri) if r.data.tags.get("synthaug.role") == "trial")

    started = time.monotonic()
    try:
        # (a) while the generator trains: its run open in MLflow, no trial started
        text = interrupted_when(argv, {**env, TRIAL_GATE: str(gate)}, tmp_path, uri, ray_tmpdir,
                                polled(lambda: bool(running(uri, "generator"))),
                                "in preparation (the generator training)", tmp_path / "a.log")
        assert RESUME.search(text).groups()[:2] == ("0", "2")
        sweeps = [r for r in all_runs(uri) if r.data.tags.get("synthaug.role") == "sweep"]
        assert [r.info.status for r in sweeps] == ["KILLED"]
        assert "KILLED" in {r.info.status for r in all_runs(uri) if r.data.tags.get("synthaug.role") == "generator"}

        # (b) the generator trained, its pools warming (each pool request held at the gate)
        (gate / "hold-warmup").touch()
        text = interrupted_when(argv, {**env, TRIAL_GATE: str(gate)}, tmp_path, uri, ray_tmpdir,
                                polled(lambda: (gate / "warming").exists()),
                                "in warm-up (the pools)", tmp_path / "warm-up.log")
        assert RESUME.search(text).groups()[:2] == ("0", "2")
        assert [r.info.status for r in all_runs(uri) if r.data.tags.get("synthaug.role") == "sweep"] == ["KILLED"]
        assert not [r for r in all_runs(uri) if r.data.tags.get("synthaug.role") == "trial"]
        (gate / "hold-warmup").unlink()

        # (c) one trial finished, the next waiting at the gate
        (gate / "ticket-0").touch()
        text = interrupted_when(argv, {**env, TRIAL_GATE: str(gate)}, tmp_path, uri, ray_tmpdir,
                                polled(lambda: finished_trials() == 1 and blocked_at_gate()),
                                "in trials (one finished, the next at the gate)", tmp_path / "b.log")
        assert RESUME.search(text).groups()[:2] == ("1", "2")
        sweeps = [r for r in all_runs(uri) if r.data.tags.get("synthaug.role") == "sweep"]
        assert [r.info.status for r in sweeps] == ["KILLED"]

        # the same command, no gate: finishes what is left, each trial and the sweep in their own run
        rerun = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    finally:
        kill_ray_instance(ray_tmpdir)
        shutil.rmtree(ray_tmpdir, ignore_errors=True)
    print(f"rerun: exit {rerun.returncode}; all four runs {time.monotonic() - started:.0f} s")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    runs = all_runs(uri)
    trials = [r for r in runs if r.data.tags.get("synthaug.role") == "trial"]
    sweeps = [r for r in runs if r.data.tags.get("synthaug.role") == "sweep"]
    assert len(trials) == 2 and len({r.data.tags["synthaug.trial_key"] for r in trials}) == 2
    assert len(sweeps) == 1 and {r.data.tags["mlflow.parentRunId"] for r in trials} == {sweeps[0].info.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}, [(r.info.run_name, r.info.status) for r in runs]
    generators = [r for r in runs if r.data.tags.get("synthaug.role") == "generator"]
    assert len(generators) == 1                         # reopened by the rerun, not made again


def test_ctrl_c_in_the_generator_job_then_the_same_command_finishes(tmp_path, shapes_tar):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ray_tmpdir = short_ray_tmpdir()
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmpdir), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(ROOT / "sweeps" / "train_generators.py"), "--preset", "tiny", "--generators", "ddpm-cond",
            "--data", str(shapes_tar), "--cache", str(tmp_path / "cache"), "--mlflow-uri", uri]
    try:
        text = interrupted_when(argv, env, tmp_path, uri, ray_tmpdir,
                                polled(lambda: bool(running(uri, "generator"))),
                                "in the generator job (a generator training)", tmp_path / "job.log")
        assert RESUME.search(text).group(3) == "generators trained"
        assert "KILLED" in {r.info.status for r in all_runs(uri)}
        rerun = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    finally:
        kill_ray_instance(ray_tmpdir)
        shutil.rmtree(ray_tmpdir, ignore_errors=True)
    print(f"generator job rerun: exit {rerun.returncode}")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    runs = all_runs(uri)
    assert {r.info.status for r in runs} == {"FINISHED"}, [(r.info.run_name, r.info.status) for r in runs]
    keys = [r.data.tags["synthaug.artifact_key"] for r in runs]
    assert len(keys) == len(set(keys))                  # each training reopened, none made twice
