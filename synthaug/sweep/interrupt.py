"""Ctrl-C at any moment of a sweep or of the generator job: no traceback, one line, exit 130, no run left RUNNING.

A terminal's Ctrl-C reaches the whole foreground process group. Ray's daemons and workers block SIGINT
(they are started so), so only the driver sees it: while Tune runs the trials it is passed to Tune's own
stop (the experiment state is saved, trials stop), elsewhere it raises KeyboardInterrupt, which the
command catches where Ray is shut down. Once Ray is down (no worker can write a status any more), the
command ends the MLflow runs it opened or reopened and left RUNNING as KILLED (end_running), and prints
one line naming what was kept and that the same command resumes.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from contextlib import contextmanager
from collections.abc import Callable, Iterator

INTERRUPTED = 130                   # the exit code of a command stopped by SIGINT


def new_session() -> str:
    return uuid.uuid4().hex[:16]


class Interrupts:
    """The SIGINT handler of a command's main thread, while it runs (a context manager). `received`: a
    SIGINT came. Inside tune(): the first goes to Tune's stop (Tune saves the experiment state, and fit
    returns), a second raises KeyboardInterrupt; elsewhere each raises KeyboardInterrupt; after shield(),
    none does (the cleanup runs to its end)."""

    def __init__(self) -> None:
        self.received = self.in_tune = self.shielded = False
        self.previous = None

    def __enter__(self) -> "Interrupts":
        # Tune's SIGINT handler would replace this one (and keep the interruption to itself); its SIGUSR1
        # handler, the same function, is what the first SIGINT calls instead
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def __call__(self, sig, frame) -> None:
        first, self.received = not self.received, True
        if self.shielded:
            return
        tune_stop = signal.getsignal(signal.SIGUSR1) if self.in_tune and first else None
        if callable(tune_stop):
            tune_stop(sig, frame)       # Tune's: ends the run after checkpointing the experiment state
            return
        raise KeyboardInterrupt

    @contextmanager
    def tune(self) -> Iterator[None]:
        self.in_tune = True
        try:
            yield
        finally:
            self.in_tune = False

    def shield(self) -> None:
        """From now on SIGINT is ignored: the command is cleaning up."""
        self.shielded = True

    def on_ray(self, address: str | None, namespace: str | None, gpus: int, work: Callable[[], int]) -> int:
        """Ray up (with a cluster's autoscaler asked for `gpus`: synthaug.sweep.gpu_nodes.gpu_request), work(), and
        Ray down whatever happens, SIGINT shielded from then on. Returns work's exit code, INTERRUPTED where
        it never returned because of a SIGINT; `received` says whether one came. Any other error propagates."""
        import ray

        from synthaug.sweep.cli import start_ray
        from synthaug.sweep.gpu_nodes import gpu_request

        code = INTERRUPTED
        try:
            start_ray(address, namespace)
            try:
                # a local Ray gains no GPUs by waiting: only a cluster's autoscaler can bring them
                with gpu_request(gpus if address else 0):
                    code = work()
            finally:
                self.shield()
                ray.shutdown()
        except KeyboardInterrupt:
            self.received = True
        return code


def end_running(uri: str, experiment: str, filter_string: str, status: str = "KILLED") -> int:
    """End the RUNNING runs of `experiment` that filter_string finds with `status`; how many."""
    from mlflow.tracking import MlflowClient

    from synthaug.core.tracking import sqlite_path

    path = sqlite_path(uri)
    if path is not None and not path.exists():
        return 0
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    runs = client.search_runs([found.experiment_id], f"{filter_string} and attributes.status = 'RUNNING'",
                              max_results=1000)
    for run in runs:
        client.set_terminated(run.info.run_id, status)
    return len(runs)


def end_session_runs(uri: str, session: str) -> int:
    """The generator and labeller runs this command's tasks (re)opened and left RUNNING: KILLED."""
    from synthaug.core.tracking import SESSION_TAG
    from synthaug.generation.generator_training import GENERATORS_EXPERIMENT

    return end_running(uri, GENERATORS_EXPERIMENT, f"tags.`{SESSION_TAG}` = '{session}'")


def resume_line(kept: str) -> str:
    return f"interrupted: {kept}; rerun the same command to resume"
