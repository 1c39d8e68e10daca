"""Read a sweep's trial runs from MLflow into pandas.

    trials = load_trials("sqlite:////abs/mlflow.db", "replace_pct")      # the newest sweep
    trials.frame          # one row per trial run: run_id, sweep, status, seed, cell, params, final metrics
    trials.config_columns # the params that vary across cells (not the seed): what defines a configuration
    trials.classes        # class names behind the per-class metrics (<metric>.<class>)
    trials.declaration    # the primary analysis the sweep declared (its parent run's tag synthaug.primary), or None
    load_predictions(uri, run_id)   # a trial's predictions.csv as a DataFrame

It follows the conventions of synthaug.core.tracking: the sweep's parent run has tag
synthaug.role=sweep, each trial run synthaug.role=trial, both synthaug.sweep=<sweep name>.
Params come back from MLflow as strings; each column gets its natural type back (bool, int,
float, else str). A number column is float when any value, or the sweep's declared default
(its parent run's ``base.<param>``), is written as a float, so a grid of whole percentages
still reads as the float field it is. Metrics are the final (latest-step) values.

Problems a user can fix (an unknown experiment, sweep or metric, a declaration that is not the JSON
sweep.py writes) raise InputError, whose one-line message names the CLI flag (or the tag) and what is
allowed.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from synthaug.core.tracking import CELL, PARENT, PRIMARY, ROLE, SWEEP, TRIAL_ID

FINISHED = "FINISHED"
RUN_COLUMNS = ("run_id", "run_name", "sweep", "status", "seed", "cell", "trial_id", "parent_run_id",
               "start_time", "end_time")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)$", re.IGNORECASE)


class InputError(ValueError):
    """Input the user can fix; the message is one line that names the flag and what is allowed."""


class NoTrialRuns(InputError):
    """The sweep named has no trial runs (it never started a trial)."""


Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Declaration:
    """The primary analysis a sweep declared before it ran (sweep_plan.Experiment's fields of the same names,
    written as JSON to its parent run's tag synthaug.primary). Configurations are named in --baseline form
    (configurations.parse_baseline); a baseline "" is the sweep's baseline."""

    primary: Pairs = ()             # (treatment, baseline) contrasts
    trend: str = ""                 # a numeric config column tested for a trend across its values
    trend_within: str = ""          # the configurations the trend runs over; "" = all
    exchange: Pairs = ()            # (synthetic, real) pairs, each against the sweep's baseline

    @classmethod
    def from_tag(cls, text: str) -> "Declaration":
        """The tag's JSON: {"primary": [[t, b], ...], "trend": "", "trend_within": "", "exchange": [[s, r], ...]}."""
        allowed = ", ".join(f.name for f in fields(cls))
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or set(data) - set(allowed.split(", ")):
                raise ValueError(f"keys {sorted(data) if isinstance(data, dict) else type(data).__name__}")
            return cls(primary=_pairs(data.get("primary", ())), trend=str(data.get("trend") or ""),
                       trend_within=str(data.get("trend_within") or ""), exchange=_pairs(data.get("exchange", ())))
        except (ValueError, TypeError) as err:
            raise InputError(f"tag {PRIMARY}: a JSON object with keys {allowed} (pairs as [[a, b], ...]); "
                             f"got {text[:200]!r} ({err})") from None


def _pairs(items) -> Pairs:
    pairs = tuple(tuple(str(x) for x in pair) for pair in items)
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError("a pair that is not two texts")
    return pairs


@dataclass(frozen=True, eq=False)
class Trials:
    """A sweep's trial runs (every status) and what the analysis needs to read them."""

    frame: pd.DataFrame                 # one row per trial run
    config_columns: tuple[str, ...]     # params that vary across cells, seed excluded
    classes: tuple[str, ...]            # from <metric>.<class> names, in the manifest's order
    experiment: str
    sweep: str                          # the synthaug.sweep tag
    sweep_run_id: str | None            # the newest parent run of that sweep (None if it is gone)
    metric: str                         # the metric the analysis compares, e.g. test_acc
    tracking_uri: str
    declaration: Declaration | None = None      # None: the sweep declared no primary analysis


def load_trials(uri: str, experiment: str, sweep: str | None = None, metric: str = "test_acc") -> Trials:
    """The trial runs of `sweep` (default: the newest sweep) in `experiment`."""
    client = MlflowClient(uri)
    experiment_id = _experiment_id(client, experiment, uri)
    parents = search_all(client, experiment_id, f"tags.`{ROLE}` = 'sweep'", ["attributes.start_time DESC"])
    sweep = sweep or _newest_sweep(parents, experiment)
    parent = next((r for r in parents if r.data.tags.get(SWEEP) == sweep), None)
    runs = search_all(client, experiment_id,
                      f"tags.`{ROLE}` = 'trial' and tags.`{SWEEP}` = '{_quoted(sweep, '--sweep')}'")
    if not runs:
        known = sorted({r.data.tags.get(SWEEP, "?") for r in parents})
        raise NoTrialRuns(f"--sweep: no trial runs for sweep {sweep!r} in experiment {experiment!r}; "
                         f"sweeps there: {', '.join(known) or 'none'}")
    declared = {k[len("base."):]: v for k, v in parent.data.params.items() if k.startswith("base.")} if parent else {}
    frame = trial_frame(runs, declared)
    _check_metric(frame, metric, sorted(set().union(*(run.data.metrics for run in runs))))
    classes = _order_classes(client, frame, per_class_names(frame, metric))
    params = sorted(set().union(*(run.data.params for run in runs)))
    tag = parent.data.tags.get(PRIMARY) if parent else None
    return Trials(frame, config_columns(frame, params), classes, experiment, sweep,
                  parent.info.run_id if parent else None, metric, uri,
                  Declaration.from_tag(tag) if tag else None)


def load_predictions(uri: str, run_id: str) -> pd.DataFrame:
    """The run's predictions.csv: test_index, label, prediction, confidence, correct."""
    with tempfile.TemporaryDirectory() as folder:
        path = MlflowClient(uri).download_artifacts(run_id, "predictions.csv", folder)
        return pd.read_csv(path)


def search_all(client: MlflowClient, experiment_id: str, filter_string: str,
               order_by: list[str] | None = None) -> list[Run]:
    """Every run matching the filter, following page tokens 1,000 runs at a time."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, order_by=order_by,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def trial_frame(runs: list[Run], declared: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per run: run columns, params (typed), then final metrics (float)."""
    rows, params, metrics = [], set(), set()
    for run in runs:
        params.update(run.data.params)
        metrics.update(run.data.metrics)
        rows.append({**run.data.metrics, **_run_columns(run), **run.data.params})
    frame = pd.DataFrame(rows, columns=[*RUN_COLUMNS, *sorted(params - {"seed"}),
                                        *sorted(metrics - params - set(RUN_COLUMNS))])
    for name in ["seed", *sorted(params - {"seed"})]:
        frame[name] = typed(frame[name], (declared or {}).get(name))
    for name in ("start_time", "end_time"):
        frame[name] = pd.to_datetime(frame[name], unit="ms")
    return frame.sort_values(["start_time", "run_id"], ignore_index=True)


def typed(values: pd.Series, declared: str | None = None) -> pd.Series:
    """A column of param strings with its natural type: bool, int, float, else left as str."""
    present = values.dropna().astype(str)
    if present.empty:
        return values
    if present.isin(["True", "False"]).all():
        return values.map({"True": True, "False": False}).astype("boolean" if values.isna().any() else bool)
    if present.map(lambda v: bool(_INT.match(v) or _FLOAT.match(v))).all():
        floats = any(not _INT.match(v) for v in [*present, *([declared] if declared else [])])
        if not floats:
            return values.astype("Int64" if values.isna().any() else "int64")
        return values.astype(float)
    return values


def config_columns(frame: pd.DataFrame, params: list[str]) -> tuple[str, ...]:
    """The TrialConfig params that take more than one value across the runs, the seed excluded; when the
    sweep has arms (named variants), the params an arm fixes are left to its name."""
    from synthaug.config import TrialConfig, leaf_types

    # only what defines a trial: the generator's description (generator_spec.*, its instance) follows from it
    defining = set(leaf_types(TrialConfig)) - {"seed"}
    varying = [c for c in params if c in defining and frame[c].nunique(dropna=True) > 1]
    if "arm" in varying:
        by_arm = frame.groupby("arm", dropna=False)
        varying = [c for c in varying if c == "arm" or (by_arm[c].nunique(dropna=False) > 1).any()]
    return tuple(varying)


def per_class_names(frame: pd.DataFrame, metric: str) -> list[str]:
    """Class names of the <metric>.<class> columns, sorted."""
    return sorted(c[len(metric) + 1:] for c in frame.columns if c.startswith(metric + "."))


def _run_columns(run: Run) -> dict:
    tags = run.data.tags
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "sweep": tags.get(SWEEP),
            "status": run.info.status, "seed": run.data.params.get("seed"), "cell": tags.get(CELL),
            "trial_id": tags.get(TRIAL_ID), "parent_run_id": tags.get(PARENT),
            "start_time": run.info.start_time, "end_time": run.info.end_time}


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments())
        raise InputError(f"--experiment: no experiment {name!r} at {uri}; experiments there: "
                         f"{', '.join(known) or 'none'}")
    return experiment.experiment_id


def _newest_sweep(parents: list[Run], experiment: str) -> str:
    if not parents:
        raise InputError(f"--experiment: {experiment!r} has no sweep runs (tag {ROLE}=sweep); run a sweep first")
    return parents[0].data.tags[SWEEP]


def _quoted(value: str, flag: str) -> str:
    if "'" in value:
        raise InputError(f"{flag}: a name without quotes, got {value!r}")
    return value


def _check_metric(frame: pd.DataFrame, metric: str, metrics: list[str]) -> None:
    if metric not in metrics or frame[metric].isna().all():
        known = [m for m in metrics if "." not in m]
        raise InputError(f"--metric: {metric!r} is not a metric of these runs; one of {', '.join(known)}")


def _order_classes(client: MlflowClient, frame: pd.DataFrame, names: list[str]) -> tuple[str, ...]:
    """The manifest's class order (from one finished run), names it lacks sorted after."""
    finished = frame[frame["status"] == FINISHED]
    order = _manifest_classes(client, finished["run_id"].iloc[-1]) if len(finished) and names else []
    first = [c for c in order if c in names]
    return tuple(first + [c for c in names if c not in first])


def _manifest_classes(client: MlflowClient, run_id: str) -> list[str]:
    try:
        with tempfile.TemporaryDirectory() as folder:
            manifest = json.loads(Path(client.download_artifacts(run_id, "manifest.json", folder)).read_text())
        return [row["class"] for row in sorted(manifest["classes"], key=lambda row: row["index"])]
    except (MlflowException, OSError, KeyError, TypeError, ValueError):
        return []
