"""What a sweep prints while Tune runs it: a line when a trial starts, a line when it ends, the status
table every 30 s, and warnings only when they matter.

Tune's default ("new") console output prints a 30-40 line configuration box at every trial start and
ignores a progress reporter passed to it (with a warning saying so). A sweep therefore runs Tune's
documented classic output (RAY_AIR_NEW_OUTPUT=0: CONSOLE) at verbosity 1: the CLIReporter's status
table (status_reporter) and nothing per trial but TrialLines' own lines:

    trial 00003 started: augment_classes=truck+ship, seed=0
    trial 00003 finished: augment_classes=truck+ship, seed=0, test_acc 61.20%
"""

from __future__ import annotations

from collections.abc import Sequence

from ray import tune

from synthaug.overrides import grid_value

REPORT_EVERY_S = 30     # the status table, at most this often (and once at the end)
VERBOSE = 1             # Tune's classic verbosity 1: the status table, not a box or a line a trial result
# Set before the RunConfig is made (Tune reads it then, and again in fit); a sweep's only, not the generator
# job's (Ray Train keeps its own console)
CONSOLE = {"RAY_AIR_NEW_OUTPUT": "0"}   # Tune's classic console: it takes status_reporter, prints no box a trial


def status_reporter(keys: Sequence[str]) -> tune.CLIReporter:
    """The status table: a row a trial with its grid values and seed, epoch, loss and test accuracy."""
    return tune.CLIReporter(parameter_columns=list(keys), metric_columns=["epoch", "train_loss", "test_acc"],
                            max_report_frequency=REPORT_EVERY_S, print_intermediate_tables=True)


class TrialLines(tune.Callback):
    """One line when a trial starts, one when it finishes (with its test accuracy) or fails."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)          # the grid's keys and "seed", as the trial's config holds them

    def where(self, trial) -> str:
        return ", ".join(f"{k}={grid_value(trial.config.get(k), empty='none')}" for k in self.keys)

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
