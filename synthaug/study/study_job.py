"""sweeps/study.py's command: flags, the study planned, a dry run or the run on one Ray session (synthaug.study.experiments)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from synthaug.study.experiments import (EXTENDED, FIDELITY, ITEMS, STUDY_SEEDS, STUDY_TAG, StudyPlan, finished_run,
                                        plan_study, running_plans, study_run)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from synthaug.sweep.sweep_plan import sweep_parser

    ids = ", ".join(f"{i.id} ({i.script})" for i in ITEMS if not i.extended)
    parser = sweep_parser("sweeps/study.py", (
        f"The whole study as one job on one Ray session: {ids}, each sweep with its control arms, then E5's "
        f"fidelity; one MLflow run (experiment study) with each sweep under it. {EXTENDED} goes past the study: it "
        f"runs only with --extended or --only {EXTENDED}. At the smoke preset the study runs "
        f"{STUDY_SEEDS['smoke']} seeds unless --seeds says otherwise. Rerun the same command to resume."), grids=False)
    parser.add_argument("--only", default=None, metavar="E2,E4",
                        help="run only these experiments: ids (E1+E2, E2a, E3, E4, E5; E1, E2b and E2 choose "
                             f"theirs) or script names (long_tail, ..., fidelity, {EXTENDED})")
    parser.add_argument("--extended", action="store_true", help=f"add {EXTENDED} (K = 0 .. 4000) to the study")
    return parser.parse_args(argv)


def main(experiments: Mapping[str, Any], argv: Sequence[str] | None = None) -> int:
    """experiments: script name -> its Experiment. Exit code: 0 done, 1 failed, 2 bad input, 130 interrupted."""
    from synthaug.sweep.interrupt import INTERRUPTED, resume_line

    try:
        return _main(experiments, argv)
    except KeyboardInterrupt:
        print(resume_line("nothing started yet"), flush=True)
        return INTERRUPTED


def _main(experiments: Mapping[str, Any], argv: Sequence[str] | None) -> int:
    from synthaug.config import ConfigError
    from synthaug.data.sources import DataError, load_dataset
    from synthaug.sweep.runner import preflight
    from synthaug.sweep.sweep_inputs import UsageError

    try:
        args = parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    try:
        study = plan_study(experiments, args)
        if args.dry_run:
            from synthaug.study.study_dry_run import print_study_dry_run

            print_study_dry_run(study, args.gpu_model, args.benchmarks)
            return 0
        sweeps = running_plans(study)
        for plan in [p for _, p in sweeps][:1]:        # one tracking URI, address and storage for all
            preflight(plan)
        dataset = load_dataset(study.fidelity.data if study.fidelity else sweeps[0][1].base.data,
                               sweeps[0][1].cache_dir if sweeps else study.fidelity.cache_dir)
    except (UsageError, ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run_study(study, dataset, args.fresh, float(args.wait_for_gpus))


@dataclass
class Progress:
    """Where the study is: the sweep running now (its plan and synthaug.sweep.sweep_runs.Session), the codes so far."""

    current: Any = None
    session: Any = None
    codes: dict | None = None
    fidelity_run: str | None = None


def run_study(study: StudyPlan, dataset, fresh: bool, wait_s: float) -> int:
    """Ray up once, each sweep in turn, E5, Ray down; the study run ended FINISHED, KILLED or FAILED. One process
    at a time for a study over a cache (a lock in it, as a sweep's)."""
    import logging

    from synthaug.sweep.console import CONSOLE, QUIET, plain_when_redirected, quiet_restore_advice
    from synthaug.sweep.runner import run_locked

    for item in study.items:
        if item.id in study.left_out:
            print(f"{item.id} {item.script}: left out: {study.left_out[item.id]}")
    print(f"study {study.id}: {study.run_name}; data {dataset.name}")
    for key, value in {**QUIET, **CONSOLE}.items():
        os.environ.setdefault(key, value)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    plain_when_redirected()
    quiet_restore_advice()
    cache_dir = study.fidelity.cache_dir if study.fidelity else running_plans(study)[0][1].cache_dir
    return run_locked(cache_dir, study.id, "study", lambda: _run_study(study, dataset, fresh, wait_s))


def _run_study(study: StudyPlan, dataset, fresh: bool, wait_s: float) -> int:
    from synthaug.generation.server import NAMESPACE
    from synthaug.sweep.interrupt import INTERRUPTED, Interrupts
    from synthaug.sweep.sweep_runs import close_runs

    progress = Progress(codes={})
    run = study_run(study, fresh)
    gpus = study.preset.gpus or 0
    with Interrupts() as interrupts:
        try:
            code = interrupts.on_ray(study.address, NAMESPACE, gpus, lambda: _study_on_ray(
                study, dataset, fresh, wait_s if study.address else 0, interrupts, run, progress))
        except Exception as err:
            interrupts.shield()
            if progress.current is not None:
                progress.session.error = f"{type(err).__name__}: {err}"
                close_runs(progress.current, progress.session, 1, fresh)
            run.finish("FAILED")
            raise
        if progress.current is not None:            # interrupted mid-sweep: its runs ended now Ray is down
            code = INTERRUPTED if interrupts.received else code
            progress.codes[progress.current.name] = close_runs(progress.current, progress.session, code, fresh)
        interrupted = interrupts.received
    return _finish(study, run, progress, INTERRUPTED if interrupted else code)


def _study_on_ray(study: StudyPlan, dataset, fresh: bool, wait_s: float, interrupts, run, progress: Progress) -> int:
    from synthaug.core.tracking import PARENT
    from synthaug.data.instances import instances
    from synthaug.sweep.interrupt import INTERRUPTED, new_session
    from synthaug.sweep.runner import SharedServers, sweep_lock, sweep_on_ray
    from synthaug.sweep.sweep_runs import Session, close_runs, newest_parent_id

    shared = SharedServers(study.id)
    for _, plan in running_plans(study):        # trained side by side with the first sweep's (start_servers)
        shared.ahead.update(instances(plan.preset, plan.configs))
    tags = {PARENT: run.run_id, STUDY_TAG: study.id}
    for item, plan in running_plans(study):
        done = finished_run(plan.tracking_uri, plan.experiment.name, f"tags.`synthaug.role` = 'sweep' and "
                                                                     f"tags.`synthaug.sweep` = '{plan.name}'")
        if done and not fresh and done == newest_parent_id(plan):
            from mlflow.tracking import MlflowClient

            client = MlflowClient(plan.tracking_uri)
            for key, value in tags.items():
                client.set_tag(done, key, value)
            print(f"\n{item.id} {item.script}: sweep {plan.name} finished before: skipped (nothing retrained)")
            progress.codes[plan.name] = 0
            continue
        print(f"\n{item.id} {item.script}: sweep {plan.name}")
        lock = sweep_lock(plan.cache_dir, plan.name, "sweep")     # not beside the same sweep run by its script
        if lock is None:
            progress.codes[plan.name] = 1
            continue
        progress.current, progress.session = plan, Session(new_session(), interrupts)
        tagged = _with_tags(plan, tags)
        try:
            code = sweep_on_ray(tagged, dataset, fresh, wait_s, progress.session, shared)
        finally:
            lock.release()
        if code == INTERRUPTED or interrupts.received:
            return INTERRUPTED                      # its runs are ended once Ray is down (run_study)
        progress.codes[plan.name] = close_runs(tagged, progress.session, code, fresh)
        progress.current = progress.session = None
    if study.fidelity is not None:
        progress.fidelity_run = _fidelity(study, run, fresh)
    return max(progress.codes.values(), default=0)


def _with_tags(plan, tags: Mapping[str, str]):
    import dataclasses

    return dataclasses.replace(plan, parent_tags={**plan.parent_tags, **tags})


def _fidelity(study: StudyPlan, run, fresh: bool) -> str:
    """E5: synthaug.analysis.fidelity's computation over the study's preset (analysis/fidelity.py's report), once."""
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from synthaug.analysis.fidelity import run_fidelity
    from synthaug.analysis.fidelity_report import log_fidelity, summary_lines, write_outputs
    from synthaug.core.tracking import PARENT

    done = None if fresh else finished_run(study.tracking_uri, FIDELITY, f"tags.`{STUDY_TAG}` = '{study.id}'")
    if done:
        print(f"\nE5 fidelity: run {done} finished before: skipped")
        return done
    print(f"\nE5 fidelity: {study.fidelity.samples_per_class} samples a class of each generator of the "
          f"{study.preset.name} preset")
    result = run_fidelity(study.fidelity)
    out = Path("analysis_out") / "study" / study.id / FIDELITY
    write_outputs(result, out)
    print("\n".join(summary_lines(result)))
    run_id = log_fidelity(study.tracking_uri, result, out)
    client = MlflowClient(study.tracking_uri)
    client.set_tag(run_id, PARENT, run.run_id)
    client.set_tag(run_id, STUDY_TAG, study.id)
    print(f"E5 fidelity: run {run_id} (experiment {FIDELITY}); report {(out / 'report.md').resolve()}")
    return run_id


def _finish(study: StudyPlan, run, progress: Progress, code: int) -> int:
    """The study run's tags and status, and the closing lines: each experiment, where it is, how to analyse it."""
    from synthaug.study.experiments import SWEEPS_TAG
    from synthaug.sweep.interrupt import INTERRUPTED

    run.set_tags({SWEEPS_TAG: study.sweeps_tag(progress.fidelity_run)})
    fidelity_due = study.fidelity is not None and progress.fidelity_run is None
    failed = code not in (0, INTERRUPTED) or any(progress.codes.values())
    complete = (not failed and code == 0 and not fidelity_due
                and len(progress.codes) == len(running_plans(study)))
    run.finish("FINISHED" if complete else "KILLED" if code == INTERRUPTED else "FAILED")
    print(f"\nstudy {study.id} ({study.run_name}): {'FINISHED' if complete else 'not finished'}; "
          f"MLflow experiment study, run {run.run_id} ({study.tracking_uri})")
    for item, plan in running_plans(study):
        state = {None: "not run", 0: "finished"}.get(progress.codes.get(plan.name), "unfinished")
        print(f"  {item.id:7} {plan.experiment.name}: sweep {plan.name}, {state}; analyse: python "
              f"{plan.experiment.analysis} --experiment {plan.experiment.name} --sweep {plan.name} "
              f"--mlflow-uri {plan.tracking_uri}")
    if progress.fidelity_run:
        print(f"  E5      fidelity: run {progress.fidelity_run} (experiment fidelity)")
    print(f"The report of the study's claims: python analysis/study_report.py --study {run.run_id} "
          f"--mlflow-uri {study.tracking_uri}")
    if not complete and code != INTERRUPTED:
        print("rerun the same command to resume: finished sweeps are skipped")
    return code if code else (0 if complete else 1)
