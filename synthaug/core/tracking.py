"""MLflow: an experiment per sweep script, a parent run per sweep, a child run per trial.

Only MlflowClient is used (never the fluent API's global active run), so a Ray worker that
Tune reuses for the next trial carries no run state over. Conventions the analysis reads:

    tags    synthaug.role = sweep | trial | analysis | generator | labeller
            synthaug.artifact_key = <cache key>   (generator and labeller runs, experiment "generators")
            synthaug.generator.<name>.run_id = <the run that trained it>   (sweep runs)
            synthaug.analysis = figures | fidelity   (analysis runs of those scripts)
            synthaug.sweep = <sweep name>         (the Tune experiment; on every run)
            synthaug.primary = <the primary analysis declared, JSON>   (sweep runs; results.Declaration)
            synthaug.trial_key = <digest of the full config>  (child runs; finds a trial's run again,
                                  after a Tune restore or after a crash Tune could not restore)
            synthaug.trial_id = <Tune trial id>
            synthaug.cell = <digest of the config without the seed>
            mlflow.parentRunId = <the sweep's run>
            mlflow.note.content = <what the run holds>   (sweep runs: the result table; the UI's description)
    experiment tags  mlflow.experimentKind = custom_model_development (the UI's kind: runs, not GenAI traces)
            mlflow.note.content = <what the experiment holds and how to read it>
            mlflow.sharedViewState.<sweep> = <a runs view of that sweep>   (sweep experiments: its trials grouped
                                  by configuration with test_acc; the UI's Views menu, or ?viewStateShareKey=<sweep>)
    experiments  <script> (sweeps: parent and trial runs), <script>-analysis (analysis runs of its sweeps),
            generators (generator and labeller trainings), fidelity (E5 analysis runs)
    params  the trial's full flat config ("seed", "replace_pct", "train.lr", ...)
    metrics per epoch (step = epoch): train_loss, train_acc, lr, epoch_time_s, val_acc, val_loss (the validation
            images held out of the training split, synthaug.data.splits)
            final, at the last epoch only: test_acc, test_loss, and per class test_acc.<class> (recall),
            test_precision.<class>, test_f1.<class> (NaN where undefined; accuracies are fractions, 0..1)
            sweep runs: result/test_acc_fraction_mean.<configuration>, result/test_acc_fraction_sd.<configuration>,
            result/seeds_finished.<configuration> (synthaug.sweep.sweep_runs)
    artifacts manifest.json, confusion_matrix.csv/.png, per_class.csv, predictions.csv, synthetic_grid.png
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

ROLE, SWEEP, TRIAL_ID, CELL = "synthaug.role", "synthaug.sweep", "synthaug.trial_id", "synthaug.cell"
SESSION_TAG = "synthaug.session"    # generator and labeller runs: the command (its session id) that (re)opened them
ANALYSIS = "synthaug.analysis"          # analysis runs: which script made them (figures, fidelity)
PRIMARY = "synthaug.primary"            # sweep runs: the declared primary analysis, JSON (results.Declaration)
TRIAL_KEY = "synthaug.trial_key"
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"            # a run's or an experiment's description in the UI (Markdown)
KIND = "mlflow.experimentKind"          # the UI's experiment kind; ours train models, they hold no GenAI traces
MODEL_TRAINING = "custom_model_development"
VIEW = "mlflow.sharedViewState."        # + key: a saved runs view (columns, filter, grouping) the UI lists
UI_PORT = 5000                          # `mlflow ui`'s default


def resolve_tracking_uri(flag: str | None = None, workdir: str | Path | None = None) -> str:
    """--mlflow-uri, else MLFLOW_TRACKING_URI, else a SQLite file in the working folder (absolute)."""
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
        return uri
    return "sqlite:///" + str((Path(workdir or os.getcwd()) / "mlflow.db").resolve())


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// tracking URI, else None."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def ensure_store(uri: str) -> None:
    """Create a missing SQLite store whole: its tables are built in a private file that is then
    linked into place, so no other process (a test, `mlflow ui`, a second sweep) ever opens the
    half-built database and runs MLflow's unlocked table creation beside ours."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    private = path.with_name(f".{path.name}.{os.getpid()}.creating")
    try:
        MlflowClient("sqlite:///" + str(private)).search_experiments(max_results=1)
        try:
            os.link(private, path)          # atomic, and never replaces a store another process made
        except FileExistsError:
            pass
    finally:
        private.unlink(missing_ok=True)


def ensure_experiment(uri: str, name: str, description: str = "") -> str:
    """The experiment's id, creating the store and the experiment (artifacts beside a SQLite store)
    when missing; safe when several processes do it at once. Its kind (model training) and its
    description (`description`, Markdown) are set where missing: a description edited in the UI stays."""
    from mlflow.exceptions import MlflowException

    ensure_store(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        path = sqlite_path(uri)
        location = (path.parent / "mlartifacts" / name).as_uri() if path else None
        try:
            experiment_id = client.create_experiment(name, artifact_location=location)
        except MlflowException:             # another process created it first
            experiment_id = client.get_experiment_by_name(name).experiment_id
        experiment = client.get_experiment(experiment_id)
    for key, value in {KIND: MODEL_TRAINING, NOTE: description}.items():
        if value and not experiment.tags.get(key):
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def analysis_experiment(uri: str, experiment: str) -> str:
    """The id of `<experiment>-analysis`, where the analysis scripts log their runs of `experiment`'s sweeps:
    their dozens of metrics (diff.*, p.*) stay out of the sweep experiment's runs list and charts."""
    return ensure_experiment(uri, f"{experiment}-analysis", (
        f"Analysis runs of the sweeps in experiment **{experiment}** (analysis/significance.py, figures.py, "
        f"sample_count.py): one run a script and sweep (tag `{SWEEP}`), its numbers as metrics "
        "(`mean.*`, `diff.*`, `p.*`: accuracies as fractions) and its report, tables and figures as artifacts."))


def save_runs_view(uri: str, experiment_id: str, key: str, name: str, state: Mapping[str, Any]) -> None:
    """A runs view of the experiment that the MLflow UI lists under Views and opens from a link
    (runs_link): `state` holds its searchFilter, orderByKey, selectedColumns ("metrics.`test_acc`"), groupBy."""
    import json

    now = int(time.time() * 1000)
    MlflowClient(uri).set_experiment_tag(experiment_id, VIEW + key, json.dumps(
        {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(dict(state))}))


def runs_link(uri: str, experiment_id: str, view: str | None = None) -> str:
    """The UI's page of the experiment's runs (the model-training side, a saved view if given): at a tracking
    server's address, else at `mlflow ui`'s default one."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{UI_PORT}"
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={quote(view)}" if view else "")
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


class RunLogger:
    """One MLflow run: batched params and metrics, artifacts, terminal status."""

    def __init__(self, uri: str, run_id: str, finished_metrics: Mapping[str, float] | None = None):
        self.client = MlflowClient(uri)
        self.run_id = run_id
        self.finished_metrics = finished_metrics    # for_trial: a run found FINISHED already, its metrics

    @classmethod
    def create(cls, uri: str, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> "RunLogger":
        """A new run, tagged with what made it (synthaug.core.provenance: the code's commit, the libraries)."""
        from synthaug.core.provenance import provenance_tags

        run = MlflowClient(uri).create_run(experiment_id, run_name=run_name, tags={**provenance_tags(), **tags})
        return cls(uri, run.info.run_id)

    @classmethod
    def reopen_or_create(cls, uri: str, experiment_id: str, filter_string: str, run_name: str,
                         tags: Mapping[str, str]) -> "RunLogger":
        """The run `filter_string` finds (reopened unless finished; a finished one comes with its
        metrics), else a new one: how a resumed trial or training keeps logging into its own run."""
        client = MlflowClient(uri)
        found = client.search_runs([experiment_id], filter_string=filter_string, max_results=1)
        if found:
            run = found[0]
            if run.info.status == "FINISHED":
                return cls(uri, run.info.run_id, dict(run.data.metrics))
            client.update_run(run.info.run_id, status="RUNNING")     # a retried or restored one
            return cls(uri, run.info.run_id)
        return cls.create(uri, experiment_id, run_name, tags)

    @classmethod
    def for_trial(cls, uri: str, experiment_id: str, parent_run_id: str, trial_key: str, run_name: str,
                  tags: Mapping[str, str]) -> "RunLogger":
        """The trial's run under the sweep's run: found again by the config's digest, else created."""
        return cls.reopen_or_create(
            uri, experiment_id, f"tags.`{PARENT}` = '{parent_run_id}' and tags.`{TRIAL_KEY}` = '{trial_key}'",
            run_name, {**tags, PARENT: parent_run_id, TRIAL_KEY: trial_key, ROLE: "trial"})

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        existing = self.client.get_run(self.run_id).data.params
        items = [p for p in items if p.key not in existing]     # params are write-once; a resume re-logs
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def browse_hint(uri: str, link: str | None = None) -> str:
    """How to look at the runs of `uri`: a tracking server's own UI is its address; a store, `mlflow ui` over it.
    With `link` (runs_link), the page to open."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} (the tracking server's UI)" + (f"; this sweep's runs: {link}" if link else "")
    command = f"mlflow ui --host 127.0.0.1 --backend-store-uri {uri}"
    return f"{command}, then open {link}" if link else command


def log_folder_run(uri: str, experiment_id: str, run_name: str, tags: Mapping[str, str],
                   params: Mapping[str, Any], metrics: Mapping[str, float], folder: str | Path) -> str:
    """A finished run holding params, metrics and `folder` as artifacts (FAILED if logging fails)."""
    run = RunLogger.create(uri, experiment_id, run_name, tags)
    try:
        run.log_params(params)
        run.log_metrics(metrics)
        run.log_artifacts(folder)
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
    return run.run_id


def _param_value(value: Any) -> str:
    text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    return redacted(text)


def metric_safe(text: str) -> str:
    """text as an MLflow metric key part: letters, digits, _ - . and space kept, anything else '_'."""
    return "".join(ch if ch.isalnum() or ch in "_-. " else "_" for ch in text)


def redacted(text: str) -> str:
    """What a param may show: a URI's user:password@ becomes ***@, the home folder ~ (no credential or
    home path is logged)."""
    text = re.sub(r"(://)[^/@\s]+@", r"\1***@", text)
    home = str(Path.home())
    return text.replace(home, "~") if len(home) > 1 else text
