"""Preflight: what would fail after hours fails in the first seconds, with one line naming the flag.

Before Ray starts (reachability; whatever a check writes, it removes):
    tracking_problem(uri)      the tracking URI's scheme is one MLflow serves; an HTTP server does
                               what trials will ask of it within TRACKING_TIMEOUT_S (server_problem:
                               /health, an API route past MLflow's Host-header check, a 1-byte artifact
                               stored and deleted through its artifact proxy); a SQLite file's folder
                               can be written (synthaug.core.storage; nothing is created);
    address_problem(address)   a Ray address answers within ADDRESS_TIMEOUT_S; `auto` is the Ray that
                               `ray start` started on this machine (its address file), or RAY_ADDRESS.
    (--cache, a local --storage and an s3:// / gs:// --storage are probed by synthaug.core.storage.)
After ray.init (what the cluster is):
    cluster_problem(uri, folders)   both of these, over the live nodes:
    shared_store_problem(uri, nodes, here)   a SQLite or file store is refused when any node is
                               another machine than the driver's (pure: it reads the node list);
    visibility_problem(flag, folder)   a Ray task on every node writes a token file in the folder
                               and every node reads every other node's token: a folder on one
                               node's local disk is refused.
The GPUs are asked for and waited for first (synthaug.sweep.gpu_nodes), so these see the nodes that work.
Storage given as a URI (s3://, gs://, ...) is passed to Tune as it is, never made a folder.
"""

from __future__ import annotations

import base64
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Iterable, Mapping

from synthaug.core.storage import PROBE_PREFIX, scheme_of, unwritable

TRACKING_TIMEOUT_S = 10.0
ADDRESS_TIMEOUT_S = 30.0
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SERVER_SCHEMES = ("http", "https")
TRACKING_SCHEMES = (*SERVER_SCHEMES, *DATABASE_SCHEMES, "file", "databricks")
LOCAL_SCHEMES = ("sqlite", "file")      # stores that live on one machine's disk


def tracking_problem(uri: str, timeout_s: float = TRACKING_TIMEOUT_S) -> str | None:
    """Why the tracking URI cannot be used, in one line after '--mlflow-uri ', or None."""
    scheme = scheme_of(uri)
    if scheme not in TRACKING_SCHEMES:
        return (f"{uri!r}: an unknown scheme {scheme or '(none)'!r}; use http(s)://host:port of an mlflow server, "
                f"sqlite:////absolute/path/mlflow.db, or a database URI ({', '.join(DATABASE_SCHEMES)})")
    if scheme in SERVER_SCHEMES:
        return server_problem(uri, timeout_s)
    if scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):])
        reason = unwritable(path.parent)
        if reason:
            return (f"{uri!r}: {path.parent} cannot be created or written ({reason}); pass a SQLite file in a "
                    f"writable folder")
    return None


def server_problem(uri: str, timeout_s: float = TRACKING_TIMEOUT_S) -> str | None:
    """What a trial will do with an mlflow server, tried within timeout_s in all: /health answers; an API
    route answers (MLflow 3's Host-header check exempts /health alone: a host name the server does not
    allow gets 403 everywhere else); and, where the server proxies artifacts, a 1-byte artifact is
    uploaded and deleted through it, as trials log theirs (an s3:// artifact store needs boto3 and
    credentials on the server). A server started with --no-serve-artifacts has no such route: nothing is
    said about artifacts then."""
    base, deadline = uri.rstrip("/"), time.monotonic() + timeout_s
    status, body = _call(base + "/health", "GET", deadline)
    if status is None:
        return (f"{uri!r} did not answer within {timeout_s:g} s ({body}); start it "
                f"(mlflow server --host 127.0.0.1 --port 5000, or the head's private address on a cluster) "
                f"or pass a URI that answers")
    if status != 200:
        return f"{uri!r}: /health answered {status}, not 200; is it an mlflow server?"
    status, body = _call(base + "/api/2.0/mlflow/experiments/search", "POST", deadline, b'{"max_results": 1}')
    host = urllib.parse.urlsplit(uri).netloc.rsplit("@", 1)[-1]
    if status == 403 and "Host header" in body:
        return (f"{uri!r}: the server refuses every API call from this address with 403, its Host-header check "
                f"(MLflow 3) does not allow {host!r}; pass the server's IP address in --mlflow-uri, or start it "
                f"with --allowed-hosts {host}")
    if status in (401, 403):
        return (f"{uri!r}: the server refused the API with {status} ({body}); set MLFLOW_TRACKING_USERNAME and "
                f"MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) to credentials it accepts")
    if status != 200:
        return (f"{uri!r}: the API (experiments/search) {_answered(status, body, timeout_s)}; "
                f"is it an mlflow server, and is its backend store up?")
    name = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
    route = f"{base}/api/2.0/mlflow-artifacts/artifacts/{name}"
    status, body = _call(route, "PUT", deadline, b"x")
    if status == 404 or (status == 503 and "artifact" in body.lower()):
        return None                     # no artifact proxy (--no-serve-artifacts): trials write to the store
    if status != 200:
        return (f"{uri!r}: the server could not store a 1-byte test artifact: it {_answered(status, body, timeout_s)}"
                f"; its artifact store (--artifacts-destination) must be writable from the server: for s3:// the "
                f"server needs boto3 (pip install boto3) and credentials that may write there; its log says more")
    status, body = _call(route, "DELETE", deadline)
    if status != 200:
        return (f"{uri!r}: the server stored a 1-byte test artifact ({name}) but could not delete it: it "
                f"{_answered(status, body, timeout_s)}; its artifact store's credentials must also delete")
    return None


def _call(url: str, method: str, deadline: float, data: bytes | None = None) -> tuple[int | None, str]:
    """(status, the body's first 200 characters on one line), or (None, why there was no answer by the
    deadline). Sends the credentials MLflow's client would (MLFLOW_TRACKING_TOKEN, _USERNAME/_PASSWORD)."""
    headers = {"Content-Type": "application/json"} if method == "POST" else {}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
    elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
        pair = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    left = deadline - time.monotonic()
    if left <= 0:
        return None, "out of time"
    try:
        with urllib.request.urlopen(request, timeout=left) as reply:
            return reply.status, _one_line(reply.read(400))
    except urllib.error.HTTPError as err:
        return err.code, _one_line(err.read(400))
    except (urllib.error.URLError, OSError, ValueError) as err:
        return None, str(getattr(err, "reason", err))


def _answered(status: int | None, body: str, timeout_s: float) -> str:
    return f"did not answer within {timeout_s:g} s ({body})" if status is None else f"answered {status} ({body})"


def _one_line(raw: bytes) -> str:
    text = " ".join(raw.decode("utf-8", "replace").split())
    return text[:200] + ("..." if len(text) > 200 else "")


def address_problem(address: str | None, timeout_s: float = ADDRESS_TIMEOUT_S) -> str | None:
    """Why a Ray address (host:port, ray://host:port, auto) does not answer within timeout_s, or None.
    A local Ray (None) is this command's own, started by ray.init."""
    if address == "auto":
        return auto_address_problem(timeout_s)
    if not address or address == "local":
        return None
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return f"{address!r}: host:port of a Ray head (e.g. 10.0.0.2:6379), ray://host:10001 or auto"
    try:
        if not _speaks_grpc(host, int(port), timeout_s):
            return (f"{address!r}: something answers there, but not a Ray head (no gRPC); check the port "
                    f"(6379, or 10001 with ray://)")
    except OSError as err:
        return f"{address!r}: no Ray head answered within {timeout_s:g} s ({err}); start one or pass auto on the head"
    return None


def auto_address_problem(timeout_s: float = ADDRESS_TIMEOUT_S) -> str | None:
    """Why `--address auto` finds no cluster to join, or None. auto means RAY_ADDRESS (a `ray job submit`
    entrypoint's), else the Ray `ray start` started on this machine, which it names in Ray's address file.
    Not any Ray process found on the machine, as ray.init's own 'auto' would fall back to: another sweep's
    or job's private Ray (started by ray.init, which writes no address file) is not a cluster to join."""
    from ray._common.utils import get_ray_address_file

    if os.environ.get("RAY_ADDRESS"):
        return None
    path = Path(get_ray_address_file(None))
    try:
        started = path.read_text().strip()
    except OSError:
        started = ""
    if not started:
        return (f"'auto': no Ray started with `ray start` on this machine ({path} is absent; another command's own "
                f"Ray is not joined); run `ray start --head` first, pass a head's host:port, or leave --address out "
                f"to start a Ray of this command's own")
    problem = address_problem(started, timeout_s)
    return f"'auto' -> {problem} (named by {path}: a `ray start` since stopped?)" if problem else None


def _speaks_grpc(host: str, port: int, timeout_s: float) -> bool:
    """A Ray head's GCS (and the Ray Client server) speaks gRPC: to an HTTP/2 client preface it
    answers with a SETTINGS frame. A bare TCP accept (a proxy, a firewall) is not an answer."""
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        conn.settimeout(timeout_s)
        conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        header = b""
        while len(header) < 9:
            chunk = conn.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
        return header[3] == 0x04


def shared_store_problem(uri: str, node_addresses: Iterable[str], driver_address: str) -> str | None:
    """A store on the driver's disk (SQLite, file) serves no process on another machine."""
    if scheme_of(uri) not in LOCAL_SCHEMES and "://" in uri:
        return None
    others = sorted({a for a in node_addresses if a != driver_address})
    if not others:
        return None
    return (f"{uri!r} lives on this machine's disk, and node {others[0]} is another machine; start an mlflow "
            f"server on the head, bound to its private address (see cluster.yaml), and pass --mlflow-uri "
            f"http://<head private address>:5000")


def visibility_problem(flag: str, folder: str, nodes: Mapping[str, str]) -> str | None:
    """Every node (id -> address) writes a token in `folder`, then reads every other node's token.
    Runs Ray tasks pinned to each node, then removes the tokens."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if len(nodes) < 2:
        return None
    run = uuid.uuid4().hex[:12]
    tokens = {node: f".synthaug-preflight-{run}-{i}" for i, node in enumerate(nodes)}
    probe = ray.remote(_probe)

    def pinned(node: str):
        return probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False), num_cpus=0)

    try:
        written = ray.get([pinned(node).remote(folder, tokens[node], None) for node in nodes])
        problems = [p for p in written if p]
        if not problems:
            seen = ray.get([pinned(node).remote(folder, None, sorted(tokens.values())) for node in nodes])
            problems = [f"node {nodes[node]} does not see {missing} written there by another node"
                        for node, missing in zip(nodes, seen) if missing]
    finally:
        ray.get([pinned(node).remote(folder, None, None, cleanup=sorted(tokens.values())) for node in nodes])
    if problems:
        return (f"{flag} {folder}: {problems[0]}; put it on storage every node mounts at the same path "
                f"(NFS, EFS, a shared disk){' or pass an s3:// / gs:// URI' if flag == '--storage' else ''}")
    return None


def cluster_problem(tracking_uri: str, folders: list[tuple[str, str]]) -> str | None:
    """With Ray up: the tracking store serves every node and each (flag, folder) is seen by every node."""
    import ray

    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    problem = shared_store_problem(tracking_uri, nodes.values(), ray.util.get_node_ip_address())
    if problem:
        return f"--mlflow-uri {problem}"
    for flag, folder in folders:
        problem = visibility_problem(flag, folder, nodes)
        if problem:
            return problem
    return None


def _probe(folder: str, write: str | None, expect: list[str] | None, cleanup: list[str] | None = None):
    root = Path(folder)
    if cleanup is not None:
        for name in cleanup:
            try:
                (root / name).unlink(missing_ok=True)
            except OSError:             # the folder could not be made (a file in the way): nothing to remove
                pass
        return None
    if write is not None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / write).write_text(socket.gethostname())
        except OSError as err:
            return f"node {socket.gethostname()} cannot write there ({err.strerror})"
        return None
    missing = [name for name in expect or () if not (root / name).exists()]
    return missing[0] if missing else None
