"""README's "Run on a cluster" path on this machine: install with the cluster extra, a Ray head started
with `ray start` with token authentication on, and a sweep sent to it with `ray job submit --working-dir`.

The venv is made with --system-site-packages: the wheels are this machine's (the tests run offline), so
what this proves is that the extras resolve against the pins and that the README's commands work from
the venv's interpreter (its `ray` script is the machine's, as Ray is), not that a fresh download would
succeed. The head is this machine's own, with its own RAY_TMPDIR: `ray stop` would end every Ray on the
machine, so the test kills exactly this instance's processes instead.
"""

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from processes import free_port, kill_ray_instance, short_ray_tmpdir

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 2     # replace_pct=0,20 at one seed, as the other tiny sweeps: the path end to end, not the grid
# (a conditional DDPM: the tiny unconditional one's samples need not cover 3 classes for the labeller)


def run(argv: list, env: dict, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv[:3]} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc


def test_the_readme_install_and_a_job_submitted_to_a_token_authenticated_head(tmp_path, shapes_tar):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], dict(os.environ), 120)
    run([str(venv / "bin" / "pip"), "install", "-e", f"{ROOT}[dev,cluster]", "-c", str(ROOT / "constraints.txt")],
        dict(os.environ), 600)
    ray = [str(venv / "bin" / "python"), "-m", "ray.scripts.scripts"]     # the `ray` command, in the venv

    # The laptop's step: `ray get-auth-token --generate` writes ~/.ray/auth_token (here a HOME of the test's
    # own, so this machine's token is left alone); every node and client then reads that file.
    plain = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")}
    run([*ray, "get-auth-token", "--generate"], {**plain, "HOME": str(tmp_path / "home")}, 60)
    token = tmp_path / "home" / ".ray" / "auth_token"
    ray_tmpdir = short_ray_tmpdir()
    env = {**plain, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "RAY_TMPDIR": str(ray_tmpdir), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    dashboard = free_port()
    address = f"http://127.0.0.1:{dashboard}"
    try:
        run([*ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(free_port()),
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--num-cpus", "2",
             "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
             "--disable-usage-stats"], env, 180)
        try:                                          # the Jobs API refuses a client without the token
            urllib.request.urlopen(f"{address}/api/jobs/", timeout=30)
            raise AssertionError("the dashboard answered a request without a token")
        except urllib.error.HTTPError as refused:
            assert refused.code == 401

        submitted = run([*ray, "job", "submit", "--address", address, "--submission-id", "readme-sweep",
                         "--working-dir", str(ROOT), "--",
                         "python", "sweeps/replace_pct.py", "--preset", "tiny", "--seeds", "1",
                         "--grid", "replace_pct=0,20", "--set", "generator=ddpm-cond", "--data", str(shapes_tar),
                         "--address", "auto",
                         "--cache", str(tmp_path / "cache"), "--storage", str(tmp_path / "ray_results"),
                         "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], env, 400)
        status = run([*ray, "job", "status", "--address", address, "readme-sweep"], env, 60)
    finally:
        kill_ray_instance(ray_tmpdir)
    log = submitted.stdout + submitted.stderr
    assert "Job 'readme-sweep' succeeded" in status.stdout + status.stderr, log[-4000:]
    assert f"{TRIALS}/{TRIALS} trials finished" in log and log.count(" finished: replace_pct=") == TRIALS, log[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("replace_pct")
    trials = client.search_runs([experiment.experiment_id], "tags.`synthaug.role` = 'trial'")
    assert len(trials) == TRIALS and {r.info.status for r in trials} == {"FINISHED"}
