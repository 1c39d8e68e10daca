"""What a sweep prints while Tune runs it: a line when a trial starts, a line when it ends, one status line
at most every 30 s, and warnings only when they matter; no colour codes when the output is not a terminal.

Tune's default ("new") console output prints a 30-40 line configuration box at every trial start and
ignores a progress reporter passed to it (with a warning saying so). A sweep therefore runs Tune's
documented classic output (RAY_AIR_NEW_OUTPUT=0: CONSOLE) at verbosity 1, with StatusLine as its progress
reporter (one line, where Tune's CLIReporter printed its whole table) and nothing per trial but
TrialLines' own lines:

    trial 00003 started: augment_classes=truck+ship, seed=0
    status 0:04:10: 2 running, 3 pending, 3/8 finished; test_acc best 61.20%, last 58.40%; ETA 0:06:40 (...)
    trial 00003 finished: augment_classes=truck+ship, seed=0, test_acc 61.20%
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from ray import tune
from ray.tune.progress_reporter import ProgressReporter

from synthaug.config import trial_values
from synthaug.sweep.overrides import grid_value

REPORT_EVERY_S = 30     # the status line, at most this often (and once at the end)
VERBOSE = 1             # Tune's classic verbosity 1: the progress reporter, not a box or a line a trial result
# Set before the RunConfig is made (Tune reads it then, and again in fit); a sweep's only, not the generator
# job's (Ray Train keeps its own console)
CONSOLE = {"RAY_AIR_NEW_OUTPUT": "0"}
QUIET = {   # a sweep's and the generator job's: the status line and our own lines are the progress; these only repeat themselves
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")    # a terminal's colour (or cursor) escape


class StatusLine(ProgressReporter):
    """One line at most every REPORT_EVERY_S (and at the end): trials running, pending, finished, errored;
    the best and the last final test accuracy; the time since the start; an ETA from the finished trials'
    measured times once one has finished."""

    def __init__(self, every_s: float = REPORT_EVERY_S):
        self.every_s, self.start, self.last = every_s, time.time(), 0.0

    def setup(self, start_time=None, total_samples=None, metric=None, mode=None, **kwargs) -> None:
        self.start = start_time or time.time()

    def should_report(self, trials, done: bool = False) -> bool:
        return done or time.time() - self.last >= self.every_s

    def report(self, trials, done: bool, *sys_info: str) -> None:
        self.last = time.time()
        print(status_line(trials, self.last - self.start), flush=True)


def status_line(trials, elapsed_s: float) -> str:
    """The status of `trials` (Tune's Trial objects: status, last_result) elapsed_s after the start."""
    by_status: dict[str, list] = {}
    for trial in trials:
        by_status.setdefault(trial.status, []).append(trial)
    running, pending = by_status.get("RUNNING", []), by_status.get("PENDING", []) + by_status.get("PAUSED", [])
    finished, errored = by_status.get("TERMINATED", []), by_status.get("ERROR", [])
    parts = [f"{len(running)} running", f"{len(pending)} pending", f"{len(finished)}/{len(trials)} finished"]
    if errored:
        parts.append(f"{len(errored)} errored")
    scored = sorted((t.last_result.get("timestamp", 0), t.last_result["test_acc"]) for t in finished
                    if isinstance((t.last_result or {}).get("test_acc"), float))     # by when it was reported
    line = f"status {_clock(elapsed_s)}: {', '.join(parts)}"
    if scored:
        line += f"; test_acc best {max(acc for _, acc in scored):.2%}, last {scored[-1][1]:.2%}"
    if running or pending:
        eta = estimate_eta(running, pending, finished)
        line += f"; {eta}" if eta else "; ETA once a trial has finished"
    return line


@dataclass(frozen=True)
class Eta:
    """When the trials left should be done, from the finished trials' measured times."""

    seconds: float          # 0 when none is left
    per_trial_s: float      # the finished trials' mean time
    at_a_time: int          # the trials running now (at least 1)

    def __str__(self) -> str:
        return f"ETA {_clock(self.seconds)} ({self.per_trial_s:.0f} s a trial, {self.at_a_time} at a time)"


def estimate_eta(running: Sequence, pending: Sequence, finished: Sequence) -> Eta | None:
    """The trials left (Tune's Trial objects: last_result) at the finished ones' mean time, those running less
    what they have run, spread over as many at a time as run now; None before a trial has finished."""
    durations = [t.last_result["time_total_s"] for t in finished if (t.last_result or {}).get("time_total_s")]
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    left = sum(max(mean - (t.last_result or {}).get("time_total_s", 0.0), 0.0) for t in running)
    left += mean * len(pending)
    return Eta(left / max(len(running), 1), mean, max(len(running), 1))


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class PlainText:
    """A text stream with every ANSI escape taken out of what is written to it (delegating the rest)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(ANSI.sub("", text))
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def plain_when_redirected() -> None:
    """When stdout or stderr is not a terminal (a log file, a pipe), no colour codes reach it: Ray colours the
    "(pid=...)" prefix of worker lines (unless RAY_COLOR_PREFIX=0) and its "[repeated Nx across cluster]"
    notes whatever the output is."""
    import os

    if not (_is_terminal(sys.stdout) and _is_terminal(sys.stderr)):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, PlainText) and not _is_terminal(stream):
            setattr(sys, name, PlainText(stream))


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class TrialLines(tune.Callback):
    """One line when a trial starts, one when it finishes (with its test accuracy) or fails."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)          # the grid's keys and "seed", as the trial's values hold them

    def where(self, trial) -> str:
        return values_label(trial_values(trial.config), self.keys)

    def on_trial_start(self, iteration, trials, trial, **info):
        print(f"trial {_short(trial)} started: {self.where(trial)}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        acc = (trial.last_result or {}).get("test_acc")
        score = f", test_acc {acc:.2%}" if isinstance(acc, float) else ""
        print(f"trial {_short(trial)} finished: {self.where(trial)}{score}", flush=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        print(f"trial {_short(trial)} failed, retrying: {self.where(trial)} (error file {trial.error_file})",
              flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"trial {_short(trial)} failed: {self.where(trial)} (error file {trial.error_file})", flush=True)


def values_label(values: Mapping, keys: Sequence[str]) -> str:
    """A trial's (or a configuration's) values as the console writes them: 'arm=none, augment_classes=none'."""
    return ", ".join(f"{k}={grid_value(values.get(k), empty='none')}" for k in keys)


def _short(trial) -> str:
    """A trial's number in its sweep: run_trial_555b9_00003 -> 00003."""
    return str(trial.trial_id).rsplit("_", 1)[-1]


class _NoRestoreAdvice:
    """Drops Tune's "Resume experiment with: Tuner.restore(...)" (and Ray Train's "Resume training with"):
    a sweep or the generator job resumes by rerunning the same command, which its own line says. And,
    after an interruption, the warning that the trials which never started have no results yet."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        if message.startswith("Failed to fetch metrics for"):
            return not all("were not found" in line for line in message.splitlines()[1:])
        return "Resume experiment with:" not in message and "Resume training with:" not in message


def quiet_restore_advice() -> None:
    """Install the filter on the loggers Tune writes those to (after an interruption)."""
    import logging

    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoRestoreAdvice) for f in logger.filters):
            logger.addFilter(_NoRestoreAdvice())
