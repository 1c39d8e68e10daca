"""What a study report reads: which sweep of each experiment, and which fidelity run, from MLflow alone.

    inputs = read_inputs(uri, study="RUN_ID" | None, sweeps=["long_tail:NAME", "replace_pct"], fidelity_run=None)
    inputs.sweeps           # {"E1+E2": SweepRef("long_tail", "long_tail-tiny-1a2b3c4d"), "E4": ...}
    inputs.fidelity_run     # the E5 fidelity run's id, or None
    analysed, not_run = analyse_sweeps(uri, inputs)  # {"E1+E2": Analysed(trials, result), ...}, {"E3": why}

A study run (experiment `study`, tag `synthaug.study`) names its sweeps in its tag `synthaug.study.sweeps`:
JSON {experiment id: {"experiment": MLflow experiment, "sweep": sweep name}, ..., "E5": {"run_id": fidelity run}}.
read_inputs is the one place that reads that format. An experiment the inputs do not name is "not run" in the
report, not an error, and so is a sweep the study run names that never started a trial (the study stopped in it
or before); a name the user gives that points at nothing is bad input (results.InputError, one line naming the flag).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pandas as pd

from synthaug.analysis.results import InputError, NoTrialRuns, Trials, load_predictions, load_trials, search_all

STUDY_EXPERIMENT = "study"                  # the MLflow experiment of study runs
STUDY_TAG = "synthaug.study"                # marks a study run
SWEEPS_TAG = "synthaug.study.sweeps"        # its sweeps, JSON (module docstring)
FIDELITY_ID = "E5"
# the study's experiment ids and the sweep script (MLflow experiment) that runs each
EXPERIMENT_IDS = {"long_tail": "E1+E2", "imagenet_targeted": "E2a", "cond_vs_uncond": "E3", "replace_pct": "E4"}


@dataclass(frozen=True)
class SweepRef:
    experiment: str             # the MLflow experiment (the sweep script's name)
    sweep: str | None           # the sweep's name (tag synthaug.sweep); None: the newest in the experiment


@dataclass(frozen=True)
class Inputs:
    sweeps: Mapping[str, SweepRef] = field(default_factory=dict)    # experiment id -> its sweep
    fidelity_run: str | None = None
    study_run: str | None = None            # the study run the report belongs to, if any


@dataclass(frozen=True, eq=False)
class Analysed:
    """One sweep's runs and its significance analysis (synthaug.analysis.significance.Result)."""

    trials: Trials
    result: object


@dataclass(frozen=True, eq=False)
class Fidelity:
    """What the report reads from an E5 fidelity run (analysis/fidelity.py)."""

    run_id: str
    values: pd.DataFrame        # its image_values.csv: source, class, brightness, background, saturation
    metrics: Mapping[str, float]
    tags: Mapping[str, str] = field(default_factory=dict)


def read_inputs(uri: str, study: str | None = None, sweeps: Sequence[str] = (),
                fidelity_run: str | None = None) -> Inputs:
    """The study run's sweeps (the newest study run when neither `study` nor `sweeps` is given), or the
    `--sweep experiment[:sweep]` texts given; `fidelity_run` overrides the study's E5 run."""
    if sweeps:
        refs = dict(parse_sweep(text) for text in sweeps)
        return Inputs(refs, fidelity_run, None)
    run = _study_run(uri, study)
    refs, found_fidelity = parse_sweeps_tag(run.data.tags.get(SWEEPS_TAG, "{}"))
    return Inputs(refs, fidelity_run or found_fidelity, run.info.run_id)


def parse_sweep(text: str) -> tuple[str, SweepRef]:
    """'long_tail:NAME' or 'long_tail' -> ("E1+E2", SweepRef("long_tail", NAME or None))."""
    experiment, _, sweep = text.partition(":")
    if experiment not in EXPERIMENT_IDS:
        raise InputError(f"--sweep: experiment:sweep with experiment one of {', '.join(EXPERIMENT_IDS)}; got {text!r}")
    return EXPERIMENT_IDS[experiment], SweepRef(experiment, sweep or None)


def parse_sweeps_tag(text: str) -> tuple[dict[str, SweepRef], str | None]:
    """The study run's tag: ({experiment id: SweepRef}, the fidelity run id or None)."""
    try:
        data = json.loads(text)
        refs = {key: SweepRef(str(value["experiment"]), value.get("sweep") or None)
                for key, value in data.items() if key != FIDELITY_ID}
        fidelity = data.get(FIDELITY_ID, {}).get("run_id") or None
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise InputError(f"tag {SWEEPS_TAG}: JSON {{id: {{\"experiment\": ..., \"sweep\": ...}}, "
                         f"\"{FIDELITY_ID}\": {{\"run_id\": ...}}}}; got {text[:200]!r} ({err})") from None
    return refs, fidelity


def _study_run(uri: str, study: str | None):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if study:
        try:
            return client.get_run(study)
        except MlflowException:
            raise InputError(f"--study: no run {study!r} at {uri}") from None
    experiment = client.get_experiment_by_name(STUDY_EXPERIMENT)
    runs = [run for run in (search_all(client, experiment.experiment_id, "", ["attributes.start_time DESC"])
                            if experiment else []) if STUDY_TAG in run.data.tags]
    if not runs:
        raise InputError(f"--study: no study run (experiment {STUDY_EXPERIMENT!r}, tag {STUDY_TAG}) at {uri}; "
                         "run sweeps/study.py, or name sweeps with --sweep experiment[:sweep]")
    return runs[0]


def analyse_sweeps(uri: str, inputs: Inputs) -> tuple[dict[str, Analysed], dict[str, str]]:
    """Each named sweep loaded and analysed (synthaug.analysis.significance.analyse, with per-image predictions), and
    for a sweep the study run names that has no trial runs, why it is not run."""
    from synthaug.analysis.significance import analyse

    found, not_run = {}, {}
    for key, ref in inputs.sweeps.items():
        try:
            trials = load_trials(uri, ref.experiment, ref.sweep)
        except NoTrialRuns:
            if inputs.study_run is None:        # the user named it: bad input
                raise
            not_run[key] = f"sweep {ref.sweep} of study run {inputs.study_run} has no trial runs (it stopped before any)"
            continue
        found[key] = Analysed(trials, analyse(trials, predictions=functools.partial(load_predictions, uri)))
    return found, not_run


def load_fidelity(uri: str, run_id: str) -> Fidelity:
    """The fidelity run's per-image values and its metrics (FID/KID, background_diff.*, cas.* where logged)."""
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
        with tempfile.TemporaryDirectory() as folder:
            values = pd.read_csv(client.download_artifacts(run_id, "image_values.csv", folder))
    except (MlflowException, OSError) as err:
        raise InputError(f"--fidelity-run: run {run_id!r} is not a fidelity run with image_values.csv at {uri} "
                         f"({str(err).splitlines()[0][:120]})") from None
    return Fidelity(run_id, values, dict(run.data.metrics), dict(run.data.tags))
