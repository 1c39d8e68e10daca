"""A sweep's MLflow runs: its parent run opened or reopened, runs ended when the command stops (KILLED on an
interrupt, FAILED with the error), trials that start over tagged, and the summary table."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from synthaug.config import to_flat
from synthaug.sweep_plan import SweepPlan


@dataclass
class Session:
    """One command's run of a sweep: what it must end when it stops (synthaug.interrupt)."""

    id: str                                     # tagged on the generator runs its tasks (re)open
    interrupts: Any                             # synthaug.interrupt.Interrupts
    parent: Any = None                          # the sweep's RunLogger, once opened or reopened
    error: str = ""                             # why it failed (exit 1 or 2 after the parent run opened)


def close_runs(plan: SweepPlan, session: Session, code: int, fresh: bool) -> int:
    """End what the sweep leaves RUNNING (Ray is down: no worker writes a status any more): generator runs
    its tasks opened and trial runs Tune stopped KILLED; its parent run KILLED on an interrupt, FAILED with
    its error on a failure. On an interrupt, the one line saying what was kept."""
    from mlflow.tracking import MlflowClient

    from synthaug.interrupt import INTERRUPTED, end_running, end_session_runs, resume_line
    from synthaug.tracking import PARENT
    from synthaug.trial import ERROR_TAG

    kept = 0
    try:
        end_session_runs(plan.tracking_uri, session.id)
        parent = session.parent
        parent_id = parent.run_id if parent is not None else (None if fresh else newest_parent_id(plan))
        if parent_id:
            end_running(plan.tracking_uri, plan.experiment.name, f"tags.`{PARENT}` = '{parent_id}'")
            experiment_id = MlflowClient(plan.tracking_uri).get_run(parent_id).info.experiment_id
            kept = len(MlflowClient(plan.tracking_uri).search_runs(
                [experiment_id], f"tags.`{PARENT}` = '{parent_id}' and attributes.status = 'FINISHED'",
                max_results=len(plan.configs) * 4))
        if parent is not None and code == INTERRUPTED:
            parent.finish("KILLED")
        elif parent is not None and code:
            parent.set_tags({ERROR_TAG: (session.error or f"exit {code}")[:500]})
            parent.finish("FAILED")
    except Exception as err:  # noqa: BLE001 - the store gone meanwhile: say so in a line, keep the exit code
        print(f"warning: could not end this sweep's MLflow runs ({str(err).splitlines()[0][:200]})", file=sys.stderr)
    if code == INTERRUPTED:
        print(resume_line(f"{kept} of {len(plan.configs)} trials finished and kept"), flush=True)
    return code


def mark_restarted(plan: SweepPlan, lost: list, parent_run_id: str, experiment_id: str) -> None:
    """Tag the MLflow runs of trials that start over (synthaug.trial.RESTARTED_TAG), found by trial key."""
    from mlflow.tracking import MlflowClient

    from synthaug.tracking import PARENT, TRIAL_KEY
    from synthaug.trial import RESTARTED_TAG, trial_config, trial_key

    client = MlflowClient(plan.tracking_uri)
    arms = {k: dict(v) for k, v in plan.arms.items()}
    for result in lost:
        key = trial_key(trial_config(dict(result.config), to_flat(plan.base), arms))
        for run in client.search_runs([experiment_id], f"tags.`{PARENT}` = '{parent_run_id}' and "
                                                       f"tags.`{TRIAL_KEY}` = '{key}'"):
            client.set_tag(run.info.run_id, RESTARTED_TAG, "its checkpoint was gone from storage")


def parent_run(plan: SweepPlan, experiment_id: str, data_digest: str, reuse: bool):
    """The sweep's MLflow run: when resuming, the newest run of this sweep (tags synthaug.role = sweep,
    synthaug.sweep = its name), else a new one. Found in MLflow, so storage can be any URI."""
    from mlflow.tracking import MlflowClient

    from synthaug.tracking import ROLE, SWEEP, RunLogger

    if reuse:
        found = newest_parent_id(plan, experiment_id)
        if found:
            MlflowClient(plan.tracking_uri).update_run(found, status="RUNNING")     # reopened: this command's now
            return RunLogger(plan.tracking_uri, found)
    parent = RunLogger.create(plan.tracking_uri, experiment_id, plan.name,
                              {ROLE: "sweep", SWEEP: plan.name, "synthaug.data_digest": data_digest})
    parent.log_params({"preset": plan.preset.name, "seeds": list(plan.seeds), "trials": len(plan.configs),
                       **{f"grid.{k}": v for k, v in plan.grid.items()},
                       **{f"arm.{k}": v for k, v in plan.arms.items()},
                       **{f"base.{k}": v for k, v in to_flat(plan.base).items()}})
    return parent


def newest_parent_id(plan: SweepPlan, experiment_id: str | None = None) -> str | None:
    """The newest MLflow run of this sweep (tags synthaug.role = sweep, synthaug.sweep = its name), or None."""
    from mlflow.tracking import MlflowClient

    from synthaug.tracking import ROLE, SWEEP, sqlite_path

    path = sqlite_path(plan.tracking_uri)
    if path is not None and not path.exists():
        return None
    client = MlflowClient(plan.tracking_uri)
    if experiment_id is None:
        experiment = client.get_experiment_by_name(plan.experiment.name)
        if experiment is None:
            return None
        experiment_id = experiment.experiment_id
    found = client.search_runs([experiment_id], f"tags.`{ROLE}` = 'sweep' and tags.`{SWEEP}` = '{plan.name}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else None


def print_summary(plan: SweepPlan, rows: list[dict]) -> None:
    """Mean test accuracy per configuration across the seeds that finished."""
    import pandas as pd

    from synthaug.overrides import grid_value

    done = [r for r in rows if r.get("done")]
    if not done:
        print("no finished trials yet")
        return
    frame = pd.DataFrame(done)
    keys = list(plan.grid)
    if not keys:                        # one configuration (no grid, no arms): one row
        frame["configuration"], keys = plan.experiment.name, ["configuration"]
    # a tuple as the console and the dry run write it (truck+ship, none); numbers stay numbers, in order
    frame[keys] = frame[keys].map(lambda v: grid_value(v) if isinstance(v, (list, tuple)) else v)
    table = frame.groupby(keys)["test_acc"].agg(n="count", mean="mean", std="std")
    table[["mean", "std"]] = table[["mean", "std"]] * 100
    print("\ntest accuracy (%) across seeds:")
    print(table.round(2).to_string())
