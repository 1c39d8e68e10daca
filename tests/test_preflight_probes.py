"""The preflight's probes, against real services: an S3 API that checks signatures (moto's server) for an
s3:// --storage, pseudo file systems and a read-only mount for folders (as root, where os.access says yes
to all of them), and real `mlflow server`s for what trials will ask of a tracking server."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from synthaug.core.storage import folder_problem, object_store_problem
from synthaug.sweep.preflight import tracking_problem

from services import mlflow_server, s3_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


def buckets(s3) -> list[str]:
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                          aws_access_key_id=s3.env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3.env["AWS_SECRET_ACCESS_KEY"])
    return sorted(b["Name"] for b in client.list_buckets()["Buckets"])


def test_a_writable_bucket_passes_and_keeps_no_probe_object(s3_env):
    assert object_store_problem(s3_env.uri("probe/ok")) is None
    assert object_store_problem(f"s3://{s3_env.bucket}") is None          # the bucket's root
    # pyarrow's S3 delete re-creates the parent's empty 'folder' object, as Tune's create_dir makes it:
    # the storage folder's own marker is all that remains, never the probe object
    assert [k for k in s3_env.keys() if "synthaug-probe" in k] == []
    assert set(s3_env.keys()) <= {"probe/ok/"}


def test_a_missing_bucket_and_refused_credentials_are_one_line_each(s3_env, monkeypatch):
    problem = object_store_problem("s3://no-such-bucket/results")
    assert "the bucket 'no-such-bucket' does not exist" in problem and "create it first" in problem
    assert buckets(s3_env) == [s3_env.bucket]                             # never created
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    problem = object_store_problem(s3_env.uri("results"))
    assert "refused these credentials" in problem and "SIGNATURE_DOES_NOT_MATCH" in problem
    assert "AWS_SECRET_ACCESS_KEY" in problem
    for problem in (object_store_problem("s3://no-such-bucket/results"), problem):
        assert "\n" not in problem


def test_a_store_that_never_answers_is_one_line_within_30_s(monkeypatch):
    import socket

    with socket.socket() as silent:                # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(key, "unused")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        start = time.monotonic()
        problem = object_store_problem("s3://silent/results")
        assert time.monotonic() - start < 30
    assert "did not answer" in problem and "AWS_ENDPOINT_URL=http://127.0.0.1:" in problem


@pytest.mark.parametrize("case", ["missing bucket", "wrong secret"])
def test_the_sweep_refuses_a_bad_s3_storage_before_anything_starts(case, s3, shapes_tar, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    env = {**os.environ, **s3.env, "PYTHONPATH": str(ROOT)}
    uri = "s3://no-such-bucket/results" if case == "missing bucket" else s3.uri("results")
    if case == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "replace_pct.py"), "--preset", "tiny",
                           "--data", str(shapes_tar), "--storage", uri, "--cache", str(tmp_path / "cache"),
                           "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=run, env=env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 30
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: --storage '{uri}': ")
    assert ("does not exist" if case == "missing bucket" else "refused these credentials") in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and not list(run.iterdir())   # no cache, no db
    assert buckets(s3) == [s3.bucket] and not [k for k in s3.keys() if k.startswith("results")]


def test_pseudo_file_systems_are_refused_as_root(tmp_path):
    assert os.access("/proc", os.W_OK) and os.access("/sys", os.W_OK)    # as root: permission bits say yes
    for folder in ("/proc/synthaug-cache", "/sys/synthaug/results", "/proc/self/nothing/cache"):
        problem = folder_problem(Path(folder))
        assert problem.startswith(f"'{folder}': /") and "cannot be written" in problem, problem
        assert "\n" not in problem
    assert "cannot be created or written" in tracking_problem("sqlite:////proc/synthaug/mlflow.db")
    assert folder_problem(tmp_path / "new" / "cache") is None
    assert list(tmp_path.iterdir()) == []                                # nothing made, the probe removed


PROBE_RO = """
import sys
from pathlib import Path
from synthaug.core.storage import folder_problem
problem = folder_problem(Path(sys.argv[1]) / "cache")
print(problem)
sys.exit(0 if problem and "Read-only file system" in problem else 1)
"""


def test_a_read_only_mount_is_refused_as_root(tmp_path):
    """In a mount namespace of its own (unshare -m): the read-only tmpfs is seen by nothing else."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("no unshare -m here")
    folder = tmp_path / "ro"
    folder.mkdir()
    proc = subprocess.run(["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o ro tmpfs "{folder}" && '
                           f'"{sys.executable}" -c \'{PROBE_RO}\' "{folder}"'],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if "mount" in proc.stderr and "permission denied" in proc.stderr.lower():
        pytest.skip(f"mount refused here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"'{folder}/cache': {folder} cannot be written (Read-only file system)" in proc.stdout


@pytest.fixture
def no_boto3(tmp_path) -> Path:
    """A folder whose boto3 package fails to import: put first on a process's PYTHONPATH."""
    package = tmp_path / "no-boto3" / "boto3"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("No module named \'boto3\' (hidden by the test)")\n')
    return package.parent


def test_a_server_whose_s3_artifact_store_it_cannot_reach_is_one_line(s3, tmp_path, no_boto3):
    artifacts = s3.uri("mlflow-artifacts")
    env = {**s3.env, "PYTHONPATH": os.pathsep.join([str(no_boto3), os.environ.get("PYTHONPATH", "")])}
    with mlflow_server(tmp_path, artifacts=artifacts, env=env) as uri:
        start = time.monotonic()
        problem = tracking_problem(uri)
        assert time.monotonic() - start < 10
    assert problem.startswith(f"'{uri}': the server could not store a 1-byte test artifact: it answered 500")
    assert "boto3" in problem and "\n" not in problem
    assert "No module named 'boto3' (hidden by the test)" in (tmp_path / "mlflow-server.log").read_text()


def test_a_server_with_boto3_and_credentials_passes_and_keeps_no_test_artifact(s3, tmp_path):
    # the artifact store at the bucket's root: moto 5.1's signature check refuses a ListObjectsV2 whose
    # prefix holds a '/' (what MLflow's delete lists), a fault of the test server, not of the probe
    with mlflow_server(tmp_path, artifacts=f"s3://{s3.bucket}", env=s3.env) as uri:
        assert tracking_problem(uri) is None
    assert [k for k in s3.keys() if "synthaug-probe" in k] == []


def test_a_host_the_server_does_not_allow_is_the_403_line_and_no_proxy_means_no_artifact_check(tmp_path):
    """One server: --no-serve-artifacts, and only 127.0.0.1 allowed in the Host header; by its IP the
    check passes (nothing said about artifacts), by the name localhost it gets the 403 line."""
    with mlflow_server(tmp_path, extra=("--no-serve-artifacts", "--allowed-hosts", "127.0.0.1:*")) as uri:
        assert tracking_problem(uri) is None
        by_name = uri.replace("127.0.0.1", "localhost")
        problem = tracking_problem(by_name)
    host = by_name.split("://", 1)[1]
    assert problem.startswith(f"'{by_name}': the server refuses every API call from this address with 403")
    assert f"--allowed-hosts {host}" in problem and "IP address" in problem and "\n" not in problem


def test_the_generator_job_checks_cache_and_tracking_before_it_writes(tmp_path, shapes_tar, capsys):
    from synthaug.sweep.generator_job import main

    from processes import free_port

    common = ["--preset", "tiny", "--data", str(shapes_tar)]
    assert main([*common, "--cache", "/proc/synthaug-cache", "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --cache '/proc/synthaug-cache': /proc cannot be written"), err
    dead = f"http://127.0.0.1:{free_port()}"
    assert main([*common, "--cache", str(tmp_path / "cache"), "--mlflow-uri", dead]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --mlflow-uri '{dead}' did not answer"), err
    assert list(tmp_path.iterdir()) == []                    # the data was not cached: no cache folder, no db
