"""The shared sweep runner: CLI, validation, ray.init, generators and servers, Tuner (fresh or restored).

A sweep script declares an Experiment (its grid, its named arms, what it fixes) and calls main(). The
runner checks every configuration before Ray starts, prepares the generators the grid
needs, creates one named DDPM server a generator on the driver, warms the pools every
trial will read, and runs the grid x seeds through Tune. The Tune run is named after a
digest of the sweep's settings, so rerunning the same command after an interruption
restores it (Tuner.restore) and finishes only what is left, logging into the same MLflow
parent run.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from synthaug.config import ConfigError, to_flat, trial_values
from synthaug.data.sources import DataError, Dataset, load_dataset
from synthaug.sweep.sweep_inputs import UsageError
from synthaug.sweep.sweep_plan import (CONTROL_ARMS, NO_AUGMENTATION, Experiment, SweepPlan, parse_args, plan_sweep,
                                       seed_major)
from synthaug.sweep.sweep_runs import (Session, close_runs, experiment_description, log_results, mark_restarted,
                                       parent_run, print_summary, result_table)

__all__ = ["CONTROL_ARMS", "NO_AUGMENTATION", "Experiment", "main", "run_sweep", "sweep_on_ray"]       # a sweep script's imports

@dataclass
class SharedServers:
    """The generator servers of one Ray session shared by several sweeps (sweeps/study.py): named in `scope`
    (synthaug.generation.server.server_name), their handles held in `servers` (instance name -> actor) until Ray goes down."""

    scope: str
    servers: dict = field(default_factory=dict)
    # instance name -> (spec, trial or None): what the study's sweeps will use, prepared with the first sweep's
    # generators in one batch (synthaug.generation.serving.start_servers), then emptied
    ahead: dict = field(default_factory=dict)

    def keep(self, servers: dict) -> None:
        """Hold each server's first handle: the one its creating sweep got owns the actor. A later sweep's handle
        to the same server (found by its name: get_if_exists) does not keep it alive; had it replaced the first,
        Ray would have ended the server the moment the later sweep started."""
        for name, handle in servers.items():
            self.servers.setdefault(name, handle)


LOST_CHECKPOINT = "does not exist on storage anymore"     # Ray Tune's words for a checkpoint gone (Trainable.restore)


def preflight(plan: SweepPlan) -> None:
    """What can be checked before Ray starts: the tracking URI does what trials will ask of it, the Ray
    address answers, and an object-store --storage takes a test object (written, read back, deleted)."""
    from synthaug.core.storage import is_uri, object_store_problem
    from synthaug.sweep.preflight import address_problem, tracking_problem

    problem = tracking_problem(plan.tracking_uri)
    if problem:
        raise UsageError(f"--mlflow-uri {problem}")
    problem = address_problem(plan.address)
    if problem:
        raise UsageError(f"--address {problem}")
    problem = object_store_problem(plan.storage) if is_uri(plan.storage) else None
    if problem:
        raise UsageError(f"--storage {problem}")


def cluster_preflight(plan: SweepPlan) -> str | None:
    """With Ray up and nothing written yet: the tracking store and the folders suit this cluster.
    Prints the resource plan; returns the one-line problem, or None."""
    import ray

    from synthaug.core.storage import is_uri
    from synthaug.sweep.preflight import cluster_problem

    folders = [("--cache", str(plan.cache_dir))] + ([] if is_uri(plan.storage) else [("--storage", plan.storage)])
    problem = cluster_problem(plan.tracking_uri, folders)
    if problem:
        return problem
    addresses = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
    others = len(set(addresses) - {ray.util.get_node_ip_address()})
    resources = ray.cluster_resources()
    print(f"cluster: {len(addresses)} node(s), {others} on other machines; {resources.get('CPU', 0):g} CPUs, "
          f"{resources.get('GPU', 0):g} GPUs; tracking {plan.tracking_uri}; storage {plan.storage}; "
          f"cache {plan.cache_dir}{' (each seen by every node)' if len(addresses) > 1 else ''}")
    return None


def tune_param_space(plan: SweepPlan) -> dict:
    """Tune's param space: one grid axis of every trial's configuration (arm and grid values, each once: an arm
    crossed with the grid, its baseline once) and seed, seed-major (sweep_plan.seed_major). One axis, so the
    order is the list's: Tune crosses several axes with the first in sorted key order varying fastest. What
    every trial shares goes with the trainable (SweepConstants), not here."""
    from ray import tune

    return {"trial": tune.grid_search(seed_major(plan.cells, plan.seeds))}


def placement_problem(plan: SweepPlan, use_gpus: bool) -> str | None:
    """With Ray up (and --gpus joined): the generator servers, a trial beside them and the warm-up replicas
    the preset asks for can each be placed on the cluster's nodes as they are (synthaug.generation.placement), or
    the one-line problem; Ray would otherwise leave what fits nowhere pending forever. On CPUs, the warm-up
    replicas (a CPU each)."""
    import ray

    from synthaug.generation.placement import cluster_gpus, gpu_problem, warmup_problem

    if use_gpus:
        return gpu_problem(plan.preset, len(plan.generators), cluster_gpus())
    return warmup_problem(plan.preset.warmup_replicas, int(ray.cluster_resources().get("CPU", 0)), "a CPU")


def main(experiment: Experiment, argv: Sequence[str] | None = None) -> int:
    """Parse, validate, run; the exit code: 0 done, 1 trials failed, 2 bad input, 130 interrupted."""
    from synthaug.sweep.interrupt import INTERRUPTED, resume_line

    try:
        return _main(experiment, argv)
    except KeyboardInterrupt:               # before Ray started (once it has, _run_sweep handles it)
        print(resume_line("nothing started yet"), flush=True)
        return INTERRUPTED


def _main(experiment: Experiment, argv: Sequence[str] | None) -> int:
    try:
        args = parse_args(experiment, argv)
    except SystemExit as stop:              # --help, or a bad flag: OneLineParser printed its one line
        return stop.code if isinstance(stop.code, int) else 2
    try:
        plan, outline = plan_sweep(experiment, args, allow_unavailable=args.dry_run)
        if args.dry_run:
            from synthaug.sweep.dry_run import print_dry_run
            from synthaug.training.benchmarks import default_path, find_throughput, read_throughputs

            benchmarks = args.benchmarks or default_path()
            measured = tuple(r.device for r in read_throughputs(benchmarks) if not r.assumed and r.size == "full")
            print_dry_run(plan, outline, find_throughput(benchmarks, args.gpu_model), measured)
            return 0
        preflight(plan)
        # decoded (and cached) once all is checked; an outline read from the cache is the data set already
        dataset = load_dataset(plan.base.data, plan.cache_dir) if outline.blank else outline
    except (UsageError, ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run_sweep(plan, dataset, fresh=args.fresh, wait_s=float(args.wait_for_gpus))


def run_sweep(plan: SweepPlan, dataset: Dataset, fresh: bool = False, wait_s: float = 900.0) -> int:
    """Run the plan, one process at a time for a given sweep over a given cache (a lock in it): a second
    copy of the same sweep started meanwhile stops in one line instead of training the same trials into
    the same runs. Different sweeps over one cache run side by side (a pool is written by one at a time)."""
    return run_locked(plan.cache_dir, plan.name, "sweep", lambda: _run_sweep(plan, dataset, fresh, wait_s))


def run_locked(cache_dir: Path, name: str, what: str, work) -> int:
    """work()'s exit code while holding the lock of sweep (or study) `name` over `cache_dir`; 1 after one line
    where another process holds it."""
    lock = sweep_lock(cache_dir, name, what)
    if lock is None:
        return 1
    try:
        return work()
    finally:
        lock.release()


def sweep_lock(cache_dir: Path, name: str, what: str):
    """The held lock of sweep (or study) `name` over `cache_dir`, or None after printing the one line saying that
    another process holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(cache_dir / "sweeps" / f"{name}.lock"))
    Path(lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"error: {what} {name} is already running over the cache {cache_dir} (lock {lock.lock_file}); "
              f"let it finish (rerun afterwards to resume), or give this one other seeds or settings", file=sys.stderr)
        return None
    return lock


def _run_sweep(plan: SweepPlan, dataset: Dataset, fresh: bool, wait_s: float) -> int:
    """Ray up, the sweep, Ray down; then, Ray's workers gone, the runs it leaves are ended (close_runs). A SIGINT
    (Ctrl-C) at any moment ends it with exit 130 and one line (synthaug.sweep.interrupt)."""
    from synthaug.generation.server import NAMESPACE
    from synthaug.sweep.console import CONSOLE, QUIET, plain_when_redirected, quiet_restore_advice
    from synthaug.sweep.interrupt import INTERRUPTED, Interrupts, new_session

    print(f"sweep {plan.name}: {len(plan.configs)} trials "
          f"({len(plan.configs) // len(plan.seeds)} configurations x {len(plan.seeds)} seeds), "
          f"preset {plan.preset.name}, data {dataset.name}")
    for key, value in {**QUIET, **CONSOLE}.items():
        os.environ.setdefault(key, value)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)    # not "wrote the result files", "total run time"
    plain_when_redirected()
    quiet_restore_advice()
    with Interrupts() as interrupts:
        session = Session(new_session(), interrupts)
        try:
            code = interrupts.on_ray(plan.address, NAMESPACE, plan.preset.gpus or 0, lambda: sweep_on_ray(
                plan, dataset, fresh, wait_s if plan.address else 0, session))
        except Exception as err:        # a bug: its traceback, and no run left RUNNING
            interrupts.shield()
            session.error = f"{type(err).__name__}: {err}"
            close_runs(plan, session, 1, fresh)
            raise
        return close_runs(plan, session, INTERRUPTED if interrupts.received and code else code, fresh)


def sweep_on_ray(plan: SweepPlan, dataset: Dataset, fresh: bool, wait_s: float, session: Session,
                 shared: SharedServers | None = None) -> int:
    """With Ray up: the GPUs first, then the checks on the nodes that joined, the servers, the trials. The caller
    ends the runs it leaves (close_runs) and takes Ray down. `shared`: servers kept alive across the sweeps of
    one Ray session (sweeps/study.py): a generator instance another sweep already serves is served by the same
    actor (found by its name in shared.scope), not started again."""
    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from synthaug.core import tracking
    from synthaug.data.instances import per_trial_generators
    from synthaug.generation.placement import PlacementError
    from synthaug.generation.serving import start_servers
    from synthaug.sweep.console import VERBOSE, StatusLine, TrialLines
    from synthaug.sweep.gpu_nodes import gpu_node_problem, wait_for_gpus
    from synthaug.sweep.interrupt import INTERRUPTED
    from synthaug.sweep.live_comparison import LiveComparison, baseline_cell
    from synthaug.sweep.tune_snapshot import COMPLETE, NONE, PARTIAL, snapshot_state
    from synthaug.training.caveats import print_caveat
    from synthaug.training.trial import SweepConstants, TrialContext, run_trial

    problem = wait_for_gpus(plan.preset.gpus or 0, wait_s) or cluster_preflight(plan)
    # --gpus 0 (or a preset's 0): CPUs, whatever joined; --gpus N: the N it waited for; else what is there
    use_gpus = plan.preset.gpus > 0 if plan.preset.gpus is not None else bool(ray.cluster_resources().get("GPU"))
    problem = problem or (gpu_node_problem() if use_gpus else None) or placement_problem(plan, use_gpus)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    experiment_id = tracking.ensure_experiment(plan.tracking_uri, plan.experiment.name, experiment_description(plan))
    sweep_dir = f"{plan.storage.rstrip('/')}/{plan.name}"
    snapshot = NONE if fresh else snapshot_state(sweep_dir)
    parent = session.parent = parent_run(plan, experiment_id, dataset.digest, reuse=not fresh)

    try:
        servers, warmed = start_servers(plan, dataset, parent, use_gpus, session.id,
                                        scope=shared.scope if shared else plan.name,
                                        ahead=shared.ahead if shared else None)
        if shared:
            shared.ahead = {}
        if shared:
            shared.keep(servers)                # a handle held: a named actor without one is garbage-collected
    except ray.exceptions.RayTaskError as err:      # a generator that cannot make a pool the grid needs
        session.error = str(err.cause).splitlines()[0] if err.cause else str(err)
        print(f"error: {session.error}", file=sys.stderr)
        return 1
    except PlacementError as err:                   # a server or warm-up replica the cluster did not place
        session.error = str(err)
        print(f"error: {err}", file=sys.stderr)
        return 2
    context = TrialContext(str(plan.cache_dir), plan.tracking_uri, experiment_id, parent.run_id, plan.name,
                           per_trial_generators(plan.preset),
                           {g: to_flat(plan.preset.generator(g)) for g in plan.generators},
                           plan.preset.trial_checkpoint_s, shared.scope if shared else "")
    gpus = plan.preset.gpus_per_trial if use_gpus else 0
    # the data set travels through the object store: --data need exist on the driver's machine only
    constants = SweepConstants(to_flat(plan.base), {k: dict(v) for k, v in plan.arms.items()}, context)
    trainable = tune.with_resources(tune.with_parameters(run_trial, dataset=dataset, constants=constants),
                                    {"cpu": plan.preset.cpus_per_trial, "gpu": gpus})
    if snapshot == PARTIAL:
        print(f"resuming {sweep_dir}: Tune's snapshot of its trials never reached the storage (stopped before it "
              f"was written): starting its trials again; a finished one reads its result from MLflow, none retrains")
    if snapshot == COMPLETE:
        print(f"resuming {sweep_dir} (rerun with --fresh to start over)")
        # its own trials, as first made (a param space re-specified here must match the first one's keys: a sweep
        # made before seed-major order restores as it was; trial_values reads both)
        tuner = tune.Tuner.restore(sweep_dir, trainable, resume_unfinished=True, resume_errored=True)
    else:
        baseline = baseline_cell(plan)
        live = [LiveComparison(list(plan.grid), baseline, plan.tracking_uri, parent.run_id)] if baseline else []
        tuner = tune.Tuner(
            trainable, param_space=tune_param_space(plan),
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(
                name=plan.name, storage_path=plan.storage,
                failure_config=tune.FailureConfig(max_failures=2),
                # result.json and progress.csv a trial (the results table reads them; not TensorBoard's), a line a
                # trial's start and end, the running comparison with the baseline (pickled with the Tuner: a
                # restored sweep keeps them)
                callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), TrialLines([*plan.grid, "seed"]), *live],
                # the newest two: Tune's experiment snapshot can lag a checkpoint behind, and with one kept a
                # kill -9 in that gap left a trial restoring from a deleted checkpoint (Ray issue 27790)
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                progress_reporter=StatusLine(), verbose=VERBOSE))
    with session.interrupts.tune():                 # a Ctrl-C: Tune saves its state, stops the trials, returns
        results = tuner.fit()
    lost = [r for r in results if r.error and LOST_CHECKPOINT in str(r.error)]
    if lost and not session.interrupts.received:
        # Tune restores a trial only from the checkpoint its snapshot names; one the storage no longer holds
        # (a kill -9 between deleting the old and snapshotting the new: Ray issue 27790) fails every attempt
        print(f"{len(lost)} trial(s) had a checkpoint the storage no longer holds (Ray issue 27790): "
              f"training them again from scratch, each in its own MLflow run")
        mark_restarted(plan, lost, parent.run_id, experiment_id)
        tuner = tune.Tuner.restore(sweep_dir, trainable, resume_unfinished=True, restart_errored=True)
        with session.interrupts.tune():
            results = tuner.fit()

    counters = {g: ray.get(s.counters.remote()) for g, s in servers.items()}
    since = "since it started (it serves other sweeps too)" if shared else "this sweep"
    for generator, count in counters.items():
        count["generated"] += warmed.get(generator, 0)     # by the warm-up replicas, gone by now
        kept = (f"; its confidence filter kept {count['acceptance']:.1%} of the samples it labelled"
                if "acceptance" in count else "")
        print(f"DDPM server {generator}: generated {count['generated']} images {since}, "
              f"served {count['served']} to trials{kept}")
    parent.log_metrics({f"pool_acceptance.{g}": c["acceptance"] for g, c in counters.items() if "acceptance" in c})
    parent.log_metrics({"pool_images_generated": sum(c["generated"] for c in counters.values()),
                        "pool_images_served": sum(c["served"] for c in counters.values())})
    rows = [{**{k: trial_values(r.config or {}).get(k) for k in [*plan.grid, "seed"]}, **r.metrics}
            for r in results if r.metrics]
    finished = sum(1 for r in rows if r.get("done"))
    table = result_table(plan, rows)
    print_summary(table)
    log_results(plan, parent, table, finished)
    for r in results:
        if r.error:                     # after its retries (max_failures); its MLflow run is FAILED with the error
            where = ", ".join(f"{k}={trial_values(r.config or {}).get(k)}" for k in [*plan.grid, "seed"])
            print(f"failed: {where}: {str(r.error).strip().splitlines()[-1][:300]}")
    if finished == len(plan.configs):
        parent.finish("FINISHED")
    print(f"\n{finished}/{len(plan.configs)} trials finished.")
    link = tracking.runs_link(plan.tracking_uri, experiment_id, plan.name)
    print(f"Browse:   {tracking.browse_hint(plan.tracking_uri, link)}")
    print(f"Analyse:  python {plan.experiment.analysis} --experiment {plan.experiment.name} "
          f"--sweep {plan.name} --mlflow-uri {plan.tracking_uri}")
    print_caveat(plan, rows, parent.run_id, dataset.num_classes)    # a baseline at the ceiling, chance-level samples
    if finished < len(plan.configs):
        if session.interrupts.received:
            return INTERRUPTED                      # close_runs says what was kept
        errors = sum(1 for r in results if r.error)
        print(f"{len(plan.configs) - finished} trials unfinished ({errors} errored): "
              f"rerun the same command to resume.")
        session.error = f"{errors} of {len(plan.configs)} trials failed"
        return 1 if errors else INTERRUPTED
    return 0
