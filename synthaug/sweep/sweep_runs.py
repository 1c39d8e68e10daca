"""A sweep's MLflow runs: its parent run opened or reopened, runs ended when the command stops (KILLED on an
interrupt, FAILED with the error), trials that start over tagged, and the result table: printed, and on the parent
run as metrics, artifacts and its description, so the MLflow UI shows it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from synthaug.config import to_flat
from synthaug.sweep.overrides import grid_value
from synthaug.sweep.sweep_plan import SweepPlan


@dataclass
class Session:
    """One command's run of a sweep: what it must end when it stops (synthaug.sweep.interrupt)."""

    id: str                                     # tagged on the generator runs its tasks (re)open
    interrupts: Any                             # synthaug.sweep.interrupt.Interrupts
    parent: Any = None                          # the sweep's RunLogger, once opened or reopened
    error: str = ""                             # why it failed (exit 1 or 2 after the parent run opened)


def close_runs(plan: SweepPlan, session: Session, code: int, fresh: bool) -> int:
    """End what the sweep leaves RUNNING (Ray is down: no worker writes a status any more): generator runs
    its tasks opened and trial runs Tune stopped KILLED; its parent run KILLED on an interrupt, FAILED with
    its error on a failure. On an interrupt, the one line saying what was kept."""
    from mlflow.tracking import MlflowClient

    from synthaug.core.tracking import PARENT
    from synthaug.sweep.interrupt import INTERRUPTED, end_running, end_session_runs, resume_line
    from synthaug.training.trial import ERROR_TAG

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
    """Tag the MLflow runs of trials that start over (synthaug.training.trial.RESTARTED_TAG), found by trial key."""
    from mlflow.tracking import MlflowClient

    from synthaug.core.tracking import PARENT, TRIAL_KEY
    from synthaug.training.trial import RESTARTED_TAG, trial_config, trial_key

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

    from synthaug.core.tracking import NOTE, PRIMARY, ROLE, SWEEP, RunLogger, save_runs_view
    from synthaug.sweep.declaration import tag_value

    save_runs_view(plan.tracking_uri, experiment_id, plan.name, f"sweep {plan.name}: trials by configuration",
                   runs_view(plan))     # a parent from before views existed gains one too
    if reuse:
        found = newest_parent_id(plan, experiment_id)
        if found:
            MlflowClient(plan.tracking_uri).update_run(found, status="RUNNING")     # reopened: this command's now
            reopened = RunLogger(plan.tracking_uri, found)
            if plan.parent_tags:
                reopened.set_tags(dict(plan.parent_tags))
            return reopened
    # the declared primary analysis goes on with the run, before any trial: the analysis leads with it
    parent = RunLogger.create(plan.tracking_uri, experiment_id, parent_run_name(plan),
                              {ROLE: "sweep", SWEEP: plan.name, "synthaug.data_digest": data_digest,
                               NOTE: describe_sweep(plan, None, 0), **plan.parent_tags,
                               **({PRIMARY: tag_value(plan.declared)} if plan.declared else {})})
    parent.log_params({"preset": plan.preset.name, "seeds": list(plan.seeds), "trials": len(plan.configs),
                       **{f"grid.{k}": v for k, v in plan.grid.items()},
                       **{f"arm.{k}": v for k, v in plan.arms.items()},
                       **{f"base.{k}": v for k, v in to_flat(plan.base).items()}})
    return parent


def newest_parent_id(plan: SweepPlan, experiment_id: str | None = None) -> str | None:
    """The newest MLflow run of this sweep (tags synthaug.role = sweep, synthaug.sweep = its name), or None."""
    from mlflow.tracking import MlflowClient

    from synthaug.core.tracking import ROLE, SWEEP, sqlite_path

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


def experiment_description(plan: SweepPlan) -> str:
    """The sweep experiment's description (Markdown): its Experiment's, then how to read its runs."""
    return (f"{plan.experiment.description}\n\n".lstrip() +
            "Each sweep is a parent run (tag `synthaug.role` = sweep, named by its settings' digest, preset, grid and "
            "seeds) whose description, metrics `result/test_acc_fraction_mean.<configuration>` and artifacts "
            "`results/` hold its result table; its trials are its child runs, each with its configuration as params "
            "and `test_acc` (test accuracy, a fraction 0..1). In the MLflow UI: **Model training** (top left) shows "
            "the runs; **Views** lists each sweep's trials grouped by configuration with the mean `test_acc`. The "
            f"analysis scripts log to experiment `{plan.experiment.name}-analysis`.")


def parent_run_name(plan: SweepPlan) -> str:
    """What tells this sweep from the experiment's others, first (the runs list cuts names short): the digest
    of its settings, its preset, its grid and seeds; 'b1c2d3e4 smoke: replace_pct=0,2,4; 3 seeds'."""
    digest = plan.name.rsplit("-", 1)[-1]
    axes = "; ".join(f"{key}={','.join(grid_value(v) for v in values)}" for key, values in plan.grid.items())
    seeds = f"{len(plan.seeds)} seed{'s' if len(plan.seeds) > 1 else ''}"
    return f"{digest} {plan.preset.name}: {axes + '; ' if axes else ''}{seeds}"


def runs_view(plan: SweepPlan) -> dict:
    """The UI's view of this sweep's runs (tracking.save_runs_view): its trials grouped by configuration, the
    group rows showing the mean test_acc over seeds, with the grid's columns and the seed."""
    from synthaug.core.tracking import SWEEP

    view = {"searchFilter": f"tags.`{SWEEP}` = '{plan.name}'", "orderByKey": "attributes.start_time",
            "orderByAsc": False,
            "selectedColumns": ["metrics.`test_acc`", *(f"params.`{key}`" for key in plan.grid), "params.`seed`"]}
    if plan.grid:
        view["groupBy"] = {"aggregateFunction": "average",
                           "groupByKeys": [{"mode": "param", "groupByData": key} for key in plan.grid]}
    return view


def result_table(plan: SweepPlan, rows: list[dict]):
    """Test accuracy (a fraction) per configuration across the seeds that finished: seeds, mean, sd (NaN for
    one seed), indexed by the grid's axes (one row 'all' without a grid); None before any trial finished."""
    import pandas as pd

    done = [r for r in rows if r.get("done") and r.get("test_acc") is not None]
    if not done:
        return None
    frame = pd.DataFrame(done)
    keys = list(plan.grid)
    if not keys:                        # one configuration (no grid, no arms): one row
        frame["configuration"], keys = "all", ["configuration"]
    # a tuple as text (truck+ship, none); numbers stay numbers, so the rows come in numeric order (2 before 10)
    frame[keys] = frame[keys].map(lambda v: grid_value(v) if isinstance(v, (list, tuple)) else v)
    return frame.groupby(keys)["test_acc"].agg(seeds="count", mean="mean", sd="std")


def print_summary(table) -> None:
    """result_table's rows in percent."""
    if table is None:
        print("no finished trials yet")
        return
    shown = table.copy()
    shown[["mean", "sd"]] = shown[["mean", "sd"]] * 100
    print("\ntest accuracy (%) across seeds:")
    print(shown.round(2).to_string(na_rep="-"))


def log_results(plan: SweepPlan, parent, table, finished: int) -> None:
    """The result table on the parent run: metrics result/test_acc_fraction_mean.<configuration> (and _sd with
    two seeds or more, seeds_finished), results/results.csv and .md, and the run's description. A store that
    fails here costs a warning line, not the sweep's exit code."""
    import tempfile
    from pathlib import Path

    from synthaug.core.tracking import NOTE

    try:
        metrics = {"result/trials_finished": finished}
        if table is not None:
            for index, row in table.iterrows():
                key = configuration_key(table.index.names, index)
                metrics[f"result/test_acc_fraction_mean.{key}"] = row["mean"]
                metrics[f"result/seeds_finished.{key}"] = row["seeds"]
                if row["seeds"] > 1:
                    metrics[f"result/test_acc_fraction_sd.{key}"] = row["sd"]
        parent.log_metrics(metrics)
        parent.set_tags({NOTE: describe_sweep(plan, table, finished)})
        if table is not None:
            with tempfile.TemporaryDirectory() as folder:
                table.rename(columns={"seeds": "seeds_finished", "mean": "test_acc_fraction_mean",
                                      "sd": "test_acc_fraction_sd"}).to_csv(Path(folder) / "results.csv")
                (Path(folder) / "results.md").write_text(markdown_results(table) + "\n")
                parent.log_artifacts(folder, "results")
    except Exception as err:  # noqa: BLE001 - the trials' own runs hold every number already
        print(f"warning: could not log the result table to the sweep's MLflow run "
              f"({str(err).splitlines()[0][:200]})", file=sys.stderr)


def describe_sweep(plan: SweepPlan, table, finished: int) -> str:
    """The parent run's description (Markdown): what the sweep compares, its preset, seeds and data, the result."""
    from synthaug.core.tracking import redacted

    axes = "; ".join(f"`{key}` in {', '.join(grid_value(v) for v in values)}" for key, values in plan.grid.items())
    lines = [f"**{plan.experiment.name}**: {plan.experiment.description}".rstrip(": "), "",
             (f"Sweep `{plan.name}` compares {axes or 'one configuration'} over seeds "
              f"{', '.join(map(str, plan.seeds))} (preset {plan.preset.name}, data `{redacted(plan.base.data)}`): "
              f"{finished} of {len(plan.configs)} trials finished."), ""]
    if table is not None:
        lines += ["Mean test accuracy (%) across the seeds that finished:", "", markdown_results(table), ""]
    lines.append(f"Its trials are this run's child runs (expand it), each with `test_acc` (a fraction). The view "
                 f"`sweep {plan.name}: trials by configuration` (Views, above the runs) groups them by configuration. "
                 "The table: metrics `result/test_acc_fraction_*` (fractions) and artifacts `results/`.")
    return "\n".join(lines)


def markdown_results(table) -> str:
    from synthaug.core.report import markdown_table

    headers = [*table.index.names, "seeds finished", "mean test accuracy (%)", "sd (percentage points)"]
    rows = [[*(index if isinstance(index, tuple) else (index,)), int(row["seeds"]), f"{100 * row['mean']:.2f}",
             "-" if row["seeds"] < 2 else f"{100 * row['sd']:.2f}"] for index, row in table.iterrows()]
    return markdown_table(headers, rows)


def configuration_key(names, index) -> str:
    """A configuration as an MLflow metric key: ('replace_pct',), 2 -> 'replace_pct_2' (as significance.metric_key)."""
    values = index if isinstance(index, tuple) else (index,)
    from synthaug.core.tracking import metric_safe

    return metric_safe(" ".join(f"{name}_{value}" for name, value in zip(names, values)))
