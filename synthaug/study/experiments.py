"""The whole study as one job (sweeps/study.py): every experiment's sweep, then E5's fidelity, on one Ray session.

The experiments are the sweep scripts' own Experiment declarations (sweeps/study.py imports them and hands
them here by script name); this module only says which study id each is and runs them in order:

    E1+E2   long_tail            (E1 and E2b, the CIFAR-10 DDPM's E2; also chosen by E1, E2b, E1+E2b or E2)
    E2a     imagenet_targeted    (also chosen by E2)
    E3      cond_vs_uncond
    E4      replace_pct
    E5      fidelity             (synthaug.analysis.fidelity's computation; analysis/fidelity.py's report)
    sample_count                 only with --extended or --only sample_count: it goes past the study

One Ray session: Ray starts once (or --address connects), every generator instance gets one server, named in
the study's scope and kept alive across the sweeps (synthaug.sweep.runner.SharedServers; generators are trained once
and cached, content-addressed, so a later sweep only loads what an earlier one prepared), and each sweep runs
through synthaug.sweep.runner.sweep_on_ray, the runner every sweep script uses. Rerunning the same command resumes: a
sweep whose parent run is FINISHED is skipped (nothing retrained), the one that was running is restored by
Tune, and the study run is reopened.

MLflow (what analysis/study_report.py reads):
  experiment `study`, one run a study (reopened on a rerun), named like "study smoke: E1-E5, 2 seeds", tags
    synthaug.role          = "study"
    synthaug.study         = the study id, "study-<preset>-<8 hex>": a digest of its sweeps' names (each a
                             digest of its preset, data, seeds and settings), the experiments chosen (--only,
                             --extended), and E5's preset, data digest and samples a class
    synthaug.study.sweeps  = JSON, one key a study id:
                             {"E1+E2": {"experiment": "long_tail", "sweep": "long_tail-smoke-646e9fc8"},
                              "E3":    {"experiment": "cond_vs_uncond", "sweep": "cond_vs_uncond-smoke-..."},
                              "E5":    {"experiment": "fidelity", "run_id": "<the fidelity run's id>"}, ...}
                             (ids E1+E2, E2a, E3, E4, E5, sample_count; E5's "run_id" appears once its run has
                             finished; synthaug.study.study_inputs reads it)
    synthaug.study.left_out = JSON {id: why}: the experiments chosen that this machine cannot run (E2a without
                             its model), not in synthaug.study.sweeps; "{}" when none
  Each sweep's parent run stays in its own experiment (long_tail, ...), so every analysis script reads it as
  before (--experiment long_tail --sweep NAME); it gains the tags mlflow.parentRunId = the study run's id and
  synthaug.study = the study id. E5's run (experiment `fidelity`) gains the same two tags.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from synthaug.sweep.sweep_inputs import UsageError

STUDY_EXPERIMENT = "study"
STUDY_TAG, SWEEPS_TAG, LEFT_OUT_TAG = "synthaug.study", "synthaug.study.sweeps", "synthaug.study.left_out"
FIDELITY = "fidelity"
EXTENDED = "sample_count"


@dataclass(frozen=True)
class StudyItem:
    """One experiment of the study: its id, the sweep script (or "fidelity") that declares it, other names."""

    id: str
    script: str
    aliases: tuple[str, ...] = ()
    extended: bool = False          # past the study: only with --extended or named by --only


ITEMS = (
    StudyItem("E1+E2", "long_tail", ("E1", "E2b", "E1+E2b", "E2")),   # E2b: the CIFAR-10 DDPM's E2
    StudyItem("E2a", "imagenet_targeted", ("E2",)),
    StudyItem("E3", "cond_vs_uncond"),
    StudyItem("E4", "replace_pct"),
    StudyItem("E5", FIDELITY),
    StudyItem(EXTENDED, EXTENDED, extended=True),
)
# the study's own default seeds at a preset (else the preset's): the smoke study at the preset's 3 seeds is
# estimated at about 1.5 h on a 2-core machine; at 2 it fits within the hour (README, "The main job")
STUDY_SEEDS = {"smoke": 2}


def chosen_items(only: str | None, extended: bool) -> tuple[StudyItem, ...]:
    """The experiments --only names (ids, aliases or script names, comma-separated), in the study's order; without
    --only, every experiment of the study (and sample_count with --extended)."""
    if only is None:
        return tuple(item for item in ITEMS if extended or not item.extended)
    names = [name.strip() for name in only.split(",") if name.strip()]
    known = {n.lower(): item for item in ITEMS for n in (item.id, item.script, *item.aliases)}
    unknown = [name for name in names if name.lower() not in known and not _alias_of_many(name)]
    if unknown or not names:
        allowed = ", ".join(f"{i.id} ({i.script})" if i.id != i.script else i.id for i in ITEMS)
        raise UsageError(f"--only: comma-separated experiments among {allowed}, or E1, E2, E2b; got {only!r}")
    picked = {item.id for name in names for item in ITEMS
              if name.lower() in (item.id.lower(), item.script.lower(), *(a.lower() for a in item.aliases))}
    return tuple(item for item in ITEMS if item.id in picked)


def _alias_of_many(name: str) -> bool:
    return any(name.lower() in (a.lower() for a in item.aliases) for item in ITEMS)


@dataclass(frozen=True)
class StudyPlan:
    """A validated study: each sweep's plan, E5's settings, what this machine cannot run, the id."""

    id: str
    preset: Any                     # synthaug.config.Preset (with --set applied)
    seeds: tuple[int, ...]
    items: tuple[StudyItem, ...]
    plans: Mapping[str, Any]        # study id -> SweepPlan
    outline: Any                    # the data set, outlined (synthaug.data.sources.data_outline)
    fidelity: Any = None            # synthaug.analysis.fidelity.Settings, when E5 is chosen
    left_out: Mapping[str, str] = field(default_factory=dict)   # study id -> why (one line)
    tracking_uri: str = ""
    address: str | None = None

    @property
    def run_name(self) -> str:
        ids = [i.id for i in self.items]
        default = [i.id for i in ITEMS if not i.extended]
        whole = ids[:len(default)] == default           # the study, perhaps with sample_count (--extended)
        shown = " + ".join(["E1-E5", *ids[len(default):]]) if whole else ",".join(ids)
        return f"study {self.preset.name}: {shown}, {len(self.seeds)} seed{'s' * (len(self.seeds) > 1)}"

    def sweeps_tag(self, fidelity_run: str | None = None) -> str:
        entries: dict[str, dict] = {}
        for item in self.items:
            entry: dict[str, str] = {"experiment": item.script}
            if item.id in self.left_out:
                continue                        # in LEFT_OUT_TAG
            if item.script == FIDELITY:
                entry.update({"run_id": fidelity_run} if fidelity_run else {})
            else:
                entry["sweep"] = self.plans[item.id].name
            entries[item.id] = entry
        return json.dumps(entries)


def plan_study(experiments: Mapping[str, Any], args) -> StudyPlan:
    """Every chosen experiment planned and validated (synthaug.sweep.sweep_plan.plan_sweep: nothing started or written).
    An experiment that cannot run on this machine (a pretrained model not downloaded) is left out, in one line,
    unless --only named it (then that line is the error); a dry run counts it all the same."""
    from synthaug.config import digest, preset
    from synthaug.data.sources import data_outline, resolve_source
    from synthaug.sweep.overrides import apply_sets
    from synthaug.sweep.sweep_plan import Experiment, parse_seeds, plan_sweep

    items = chosen_items(args.only, args.extended)
    chosen = preset(args.preset)
    seeds = parse_seeds(args.seeds or str(STUDY_SEEDS.get(chosen.name, chosen.seeds)))
    sweep_args = argparse_namespace(args, seeds=",".join(map(str, seeds)), grid=[])
    plans, left_out, outline = {}, {}, None
    for item in items:
        if item.script == FIDELITY:
            continue
        plan, outline = plan_sweep(experiments[item.script], sweep_args, allow_unavailable=True)
        if plan.unavailable and not args.dry_run:
            if args.only:
                raise UsageError(f"--only {item.id}: {plan.unavailable[0]}")
            left_out[item.id] = plan.unavailable[0]
        plans[item.id] = plan
    # the preset as the sweeps see it (--set, --checkpoint applied); E5 samples from it
    effective = (next(iter(plans.values())).preset if plans else
                 apply_sets(Experiment(name=FIDELITY, grid={}), chosen, args.set)[1])
    data = resolve_source(args.data or effective.data)
    cache_dir = Path(os.path.abspath(args.cache))
    outline = outline if outline is not None else data_outline(data, cache_dir)
    fidelity = None
    if any(item.script == FIDELITY for item in items):
        from synthaug.analysis.fidelity import Settings

        fidelity = Settings(effective, data, cache_dir, effective.fidelity_per_class, 0, progress=True)
    from synthaug.core.tracking import resolve_tracking_uri

    study_id = f"study-{effective.name}-" + digest({
        "sweeps": sorted(p.name for k, p in plans.items() if k not in left_out), "left_out": sorted(left_out),
        "items": [i.id for i in items], "seeds": seeds, "data": outline.digest,
        "fidelity": fidelity and {"preset": digest(fidelity.preset), "per_class": fidelity.samples_per_class}})[:8]
    return StudyPlan(study_id, effective, seeds, items, plans, outline, fidelity, left_out,
                     resolve_tracking_uri(args.mlflow_uri), args.address)


def argparse_namespace(args, **changes):
    import argparse

    return argparse.Namespace(**{**vars(args), **changes})


def running_plans(study: StudyPlan) -> list[tuple[StudyItem, Any]]:
    """(item, its SweepPlan) for each sweep the study runs, in order."""
    return [(item, study.plans[item.id]) for item in study.items
            if item.id in study.plans and item.id not in study.left_out]


def finished_run(uri: str, experiment: str, filter_string: str) -> str | None:
    """The newest FINISHED run of `experiment` that filter_string finds, or None (also with no store yet)."""
    from mlflow.tracking import MlflowClient

    from synthaug.core.tracking import sqlite_path

    path = sqlite_path(uri)
    if path is not None and not path.exists():
        return None
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], f"{filter_string} and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def study_run(study: StudyPlan, fresh: bool):
    """The study's MLflow run: the newest of this study id reopened (unless --fresh), else a new one."""
    from mlflow.tracking import MlflowClient

    from synthaug.core.tracking import NOTE, ROLE, RunLogger, ensure_experiment

    experiment_id = ensure_experiment(study.tracking_uri, STUDY_EXPERIMENT, (
        "The whole study as one job (python sweeps/study.py): a run a study, tags `synthaug.study` (its id) and "
        "`synthaug.study.sweeps` (JSON: each experiment's MLflow experiment and sweep name). Each sweep's parent run "
        "is in its own experiment, tagged `mlflow.parentRunId` = the study run."))
    client = MlflowClient(study.tracking_uri)
    if not fresh:
        found = client.search_runs([experiment_id], f"tags.`{STUDY_TAG}` = '{study.id}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            print(f"study {study.id}: reopened its MLflow run {found[0].info.run_id}")
            return RunLogger(study.tracking_uri, found[0].info.run_id)
    run = RunLogger.create(study.tracking_uri, experiment_id, study.run_name, {
        ROLE: "study", STUDY_TAG: study.id, SWEEPS_TAG: study.sweeps_tag(), LEFT_OUT_TAG: json.dumps(dict(study.left_out)),
        NOTE: f"**{study.run_name}** (`{study.id}`): " + "; ".join(
            f"{i.id} `{i.script}`" + (" (left out: " + study.left_out[i.id] + ")" if i.id in study.left_out else "")
            for i in study.items)})
    run.log_params({"preset": study.preset.name, "seeds": list(study.seeds), "experiments": [i.id for i in study.items],
                    "data": study.outline.name})
    return run
