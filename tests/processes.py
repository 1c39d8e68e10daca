"""Helpers for tests that kill a sweep or a job: find and kill exactly one Ray instance's processes,
and wait for events the test caused."""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def short_ray_tmpdir() -> Path:
    """A fresh RAY_TMPDIR for one Ray instance; short, because Ray's socket paths must fit 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))


def processes_of_ray_instance(ray_tmpdir: Path) -> set[int]:
    """The processes of the one Ray instance started under ray_tmpdir: each inherited RAY_TMPDIR from
    the driver (or names its session directory on its command line), or is an agent of one of its
    raylets (a raylet starts its dashboard and runtime-env agents without RAY_TMPDIR and renames them,
    but tells them RAY_RAYLET_PID). Never matched by name."""
    marker = str(ray_tmpdir).encode()
    seen = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            seen[int(proc.name)] = ((proc / "environ").read_bytes().split(b"\0"), (proc / "cmdline").read_bytes())
        except OSError:                 # gone, or not ours to read
            continue
    found = {pid for pid, (environ, cmdline) in seen.items() if b"RAY_TMPDIR=" + marker in environ or marker in cmdline}
    raylets = {b"RAY_RAYLET_PID=%d" % pid for pid in found}
    return found | {pid for pid, (environ, _) in seen.items() if raylets.intersection(environ)}


def kill_ray_instance(ray_tmpdir: Path) -> None:
    """SIGKILL every process of that Ray instance, until none is left (no chance to clean up)."""
    for _ in range(50):
        pids = processes_of_ray_instance(ray_tmpdir)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"processes of {ray_tmpdir} survived SIGKILL: {processes_of_ray_instance(ray_tmpdir)}")


def wait_for(condition, what: str, proc: subprocess.Popen, log: Path, limit_s: float = 900,
             interval_s: float = 0.5):
    """Poll for an event the test caused; the limit only guards against a hang, it decides nothing."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert proc.poll() is None, f"the process ended before {what}:\n" + log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {what} after {limit_s} s:\n" + log.read_text()[-3000:]
        time.sleep(interval_s)


def free_port() -> int:
    """A local TCP port nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
