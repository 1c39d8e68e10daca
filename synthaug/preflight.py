"""Preflight: what would fail after hours fails in the first seconds, with one line naming the flag.

Before Ray starts (reachability, no side effects):
    tracking_problem(uri)      the tracking URI's scheme is one MLflow serves, an HTTP server
                               answers /health within TRACKING_TIMEOUT_S, a SQLite file's folder
                               exists and can be written (nothing is created);
    address_problem(address)   a Ray address answers within ADDRESS_TIMEOUT_S.
After ray.init (what the cluster is):
    cluster_problem(uri, folders)   both of these, over the live nodes:
    shared_store_problem(uri, nodes, here)   a SQLite or file store is refused when any node is
                               another machine than the driver's (pure: it reads the node list);
    visibility_problem(flag, folder)   a Ray task on every node writes a token file in the folder
                               and every node reads every other node's token: a folder on one
                               node's local disk is refused.
The GPUs are asked for and waited for first (synthaug.gpu_nodes), so these see the nodes that work.
Storage given as a URI (s3://, gs://, ...) is passed to Tune as it is, never made a folder.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterable, Mapping

TRACKING_TIMEOUT_S = 10.0
ADDRESS_TIMEOUT_S = 30.0
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SERVER_SCHEMES = ("http", "https")
TRACKING_SCHEMES = (*SERVER_SCHEMES, *DATABASE_SCHEMES, "file", "databricks")
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "az")   # pyarrow file systems Tune takes
LOCAL_SCHEMES = ("sqlite", "file")      # stores that live on one machine's disk


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""


def tracking_problem(uri: str, timeout_s: float = TRACKING_TIMEOUT_S) -> str | None:
    """Why the tracking URI cannot be used, in one line after '--mlflow-uri ', or None."""
    scheme = scheme_of(uri)
    if scheme not in TRACKING_SCHEMES:
        return (f"{uri!r}: an unknown scheme {scheme or '(none)'!r}; use http(s)://host:port of an mlflow server, "
                f"sqlite:////absolute/path/mlflow.db, or a database URI ({', '.join(DATABASE_SCHEMES)})")
    if scheme in SERVER_SCHEMES:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as reply:
                if reply.status == 200:
                    return None
                return f"{uri!r}: /health answered {reply.status}, not 200; is it an mlflow server?"
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            return (f"{uri!r} did not answer within {timeout_s:g} s ({reason}); start it "
                    f"(mlflow server --host 127.0.0.1 --port 5000, or the head's private address on a cluster) "
                    f"or pass a URI that answers")
    if scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):])
        if folder_problem(path.parent):
            return f"{uri!r}: {path.parent} cannot be created or written; pass a SQLite file in a writable folder"
    return None


def address_problem(address: str | None, timeout_s: float = ADDRESS_TIMEOUT_S) -> str | None:
    """Why a Ray address (host:port, ray://host:port) does not answer within timeout_s, or None.
    'auto' and a local Ray (None) are left to ray.init, which fails fast when there is none."""
    if not address or address in ("auto", "local"):
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


def is_uri(location: str) -> bool:
    return scheme_of(location) in STORAGE_SCHEMES


def storage_problem(location: str) -> str | None:
    """A --storage value: a folder (made absolute) this user can make or write, or a URI of a file system
    Tune knows."""
    if "://" in location and not is_uri(location):
        return (f"{location!r}: an unknown scheme {scheme_of(location)!r}; a folder every node sees, or a URI "
                f"({', '.join(s + '://' for s in STORAGE_SCHEMES)})")
    return None if is_uri(location) else folder_problem(Path(os.path.abspath(location)))


def folder_problem(folder: Path) -> str | None:
    """Why a folder the command will write (--cache, a local --storage) cannot be made or written, or None.
    Creates nothing: the folder, or the nearest part of its path that exists, must be a writable folder."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        return f"{str(folder)!r}: {existing} is a file, not a folder; pass a folder that can be created"
    if not _writable(existing):
        return f"{str(folder)!r}: {existing} cannot be written; pass a folder this user can write"
    return None


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


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


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
