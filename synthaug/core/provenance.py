"""Provenance: which code and which libraries made a run, as tags on every run synthaug creates.

    synthaug.git_commit      the commit of the synthaug checkout ("unknown" outside one)
    synthaug.git_dirty       "true" when tracked files differed from that commit
    synthaug.version.<pkg>   python, torch, diffusers, ray, mlflow, numpy

The driver exports its commit (export_commit) before Ray starts, and Ray passes the setting to
every worker, so a run made on a worker machine without the checkout names the driver's code.
The data a run used is named by its own param or tag (data digest), not here.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

COMMIT_ENV = "SYNTHAUG_CODE_COMMIT"     # "<sha>" or "<sha>+dirty", set by the driver for its workers
PACKAGES = ("torch", "diffusers", "ray", "mlflow", "numpy")


def code_commit() -> str:
    """'<sha>', '<sha>+dirty', or 'unknown': the driver's export, else the checkout this module is in."""
    exported = os.environ.get(COMMIT_ENV)
    if exported:
        return exported
    return _checkout_commit()


@functools.lru_cache(maxsize=1)
def _checkout_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if changed else sha


def export_commit() -> str:
    """Put this process's commit where its Ray workers read it (call on the driver before ray.init)."""
    os.environ[COMMIT_ENV] = code_commit()
    return os.environ[COMMIT_ENV]


def provenance_tags() -> dict[str, str]:
    commit = code_commit()
    tags = {"synthaug.git_commit": commit.removesuffix("+dirty"),
            "synthaug.git_dirty": str(commit.endswith("+dirty")).lower(),
            "synthaug.version.python": platform.python_version()}
    for package in PACKAGES:
        loaded = sys.modules.get(package)           # a loaded module names its build (torch 2.14.1+cu130)
        try:
            version = getattr(loaded, "__version__", None) or metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "absent"
        tags[f"synthaug.version.{package}"] = str(version)
    return tags
