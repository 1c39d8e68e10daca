"""Real services on 127.0.0.1 for tests: an S3 API (moto's server) with credentials it checks, and an
`mlflow server`. Each is a subprocess in its own session, stopped with its process group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from processes import free_port

MOTO_NO_AUTH_ACTIONS = 4        # the user, its key, its policy, the bucket: every later call is checked


@dataclass(frozen=True)
class S3:
    endpoint: str               # http://127.0.0.1:port
    bucket: str                 # made at start, writable with `env`'s credentials
    env: dict                   # AWS_* variables a process needs to reach it as the user

    def uri(self, path: str) -> str:
        return f"s3://{self.bucket}/{path}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.client().delete_object(Bucket=self.bucket, Key=key)


def _wait_http(url: str, proc: subprocess.Popen, what: str, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:      # it answers (an error status is an answer)
            return
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, 9)


@contextmanager
def s3_server(bucket: str = "synthaug-results", check_signatures: bool = True) -> Iterator[S3]:
    """moto's S3 API server: a user with one access key and one bucket, made before it starts refusing
    unsigned or wrongly signed calls (check_signatures). moto 5.1 computes a wrong signature for a listing
    whose prefix holds "/", as pyarrow's folder lookups (and Tune's) send: a server that is to hold a sweep's
    results checks none. moto 5.2.x answers pyarrow's CompleteMultipartUpload with a body pyarrow rejects
    (getmoto/moto#10055): the dev extra pins < 5.2."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": str(MOTO_NO_AUTH_ACTIONS)}
                                                  if check_signatures else {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_http(endpoint + "/moto-api/", proc, "moto server")
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="unused", aws_secret_access_key="unused")
        iam.create_user(UserName="synthaug")
        key = iam.create_access_key(UserName="synthaug")["AccessKey"]
        iam.put_user_policy(UserName="synthaug", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)
        yield S3(endpoint, bucket, env)
    finally:
        _stop(proc)


@contextmanager
def mlflow_server(root: Path, artifacts: str | None = None, env: dict | None = None,
                  extra: tuple[str, ...] = ()) -> Iterator[str]:
    """A real tracking server on 127.0.0.1, its SQLite store in `root`, its artifacts in `artifacts`
    (a folder or an s3:// URI; default root/served-artifacts), run with `env` added. Yields its URI."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                             "--artifacts-destination", artifacts or str(root / "served-artifacts"),
                             "--workers", "1", *extra],
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=open(root / "mlflow-server.log", "w"), start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_http(uri + "/health", proc, "mlflow server")
        yield uri
    finally:
        _stop(proc)
