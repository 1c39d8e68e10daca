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

import argparse
import itertools
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from synthaug.cli import OneLineParser, add_gpu_flags, add_run_flags
from synthaug.config import (PRESETS, ConfigError, Preset, TrialConfig, digest, from_flat, preset,
                             recipe_conflict, to_flat, with_recipe)
from synthaug.data import DataError, Dataset, data_outline, load_dataset, resolve_source
from synthaug.sweep_inputs import (UsageError, check_counts, check_generators, class_aliases, resolve_value,
                                   with_checkpoints, with_resources)

LOST_CHECKPOINT = "does not exist on storage anymore"     # Ray Tune's words for a checkpoint gone (Trainable.restore)
QUIET = {   # Tune's status table and our own lines are the progress; these only repeat themselves
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


@dataclass(frozen=True)
class Experiment:
    """What a sweep script declares: its grid and the TrialConfig fields it fixes."""

    name: str                                   # MLflow experiment and Tune run prefix
    grid: Mapping[str, Sequence[Any]]           # TrialConfig field -> values, one Tune grid axis each
    # named variants that set several TrialConfig fields together (E3: none, conditional,
    # unconditional): one more grid axis, "arm", crossed with the grid; applied over fixed
    arms: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)         # TrialConfig fields, every preset
    paper_fixed: Mapping[str, Any] = field(default_factory=dict)   # TrialConfig fields, paper preset only
    paper_grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)  # grid axes the paper preset replaces
    description: str = ""


@dataclass
class Session:
    """One command's run of a sweep: what it must end when it stops (synthaug.interrupt)."""

    id: str                                     # tagged on the generator runs its tasks (re)open
    interrupts: Any                             # synthaug.interrupt.Interrupts
    parent: Any = None                          # the sweep's RunLogger, once opened or reopened
    error: str = ""                             # why it failed (exit 1 or 2 after the parent run opened)


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: every trial's configuration and where everything goes."""

    experiment: Experiment
    preset: Preset
    seeds: tuple[int, ...]
    grid: Mapping[str, list]                    # the experiment's grid (arm first), class names resolved
    arms: Mapping[str, dict]                    # arm -> its TrialConfig fields, class names resolved
    base: TrialConfig
    configs: tuple[TrialConfig, ...]
    cache_dir: Path
    storage: str                                # a folder (absolute) or a file-system URI (s3://...)
    tracking_uri: str
    address: str | None
    name: str                                   # the Tune run and the MLflow parent run's name

    @property
    def generators(self) -> tuple[str, ...]:
        return tuple(sorted({c.generator for c in self.configs if c.uses_synthetic}))


def parse_args(experiment: Experiment, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=f"sweeps/{experiment.name}.py", description=experiment.description)
    parser.add_argument("--preset", default="smoke", help=f"one of {', '.join(PRESETS)} (default smoke)")
    parser.add_argument("--seeds", default=None, help="N (seeds 0..N-1) or a list like 0,3,7 (default: the preset's, "
                                                      "3; paper 8)")
    add_run_flags(parser)
    parser.add_argument("--storage", default="ray_results", help="Tune results folder (default ./ray_results)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=FOLDER",
                        help="serve generator NAME from a local diffusers UNet2DModel folder (e.g. a copy of "
                             "google/ddpm-cifar10-32 for ddpm-uncond) instead of training it; repeatable")
    add_gpu_flags(parser, "sweep")
    parser.add_argument("--gpus-per-trial", default=None, help="a trial's GPU share (default: the preset's)")
    parser.add_argument("--cpus-per-trial", default=None, help="a trial's CPUs (default: the preset's)")
    parser.add_argument("--class-map", default=None, metavar="NAME=CLASS,...",
                        help="the data's class for each class name the sweep targets, when its names differ "
                             "(e.g. truck=lorry); the built-in shapes map CIFAR-10's names by index")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any trial field (train.epochs=1), preset field (preset.gpus_per_trial=0.25) or "
                             "generator field (generators.ddpm-cond.train_on=trial); repeatable")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="replace or add a grid axis (replace_pct=0,2,4; arm=none,conditional; tuples as "
                             "truck+ship); repeatable")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the trials, the resource plan and a GPU-hour estimate; start and write nothing")
    parser.add_argument("--gpu-model", default="H100", help="with --dry-run: the device of BENCHMARKS.md's "
                        "throughput table the estimate divides by (default H100)")
    parser.add_argument("--benchmarks", default=None, metavar="FILE",
                        help="with --dry-run: the file holding that table (default: the repository's BENCHMARKS.md)")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming a matching sweep")
    return parser.parse_args(argv)


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        if "," in text:
            seeds = tuple(int(s) for s in text.split(",") if s.strip())
        else:
            seeds = tuple(range(int(text)))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds: a count >= 1 or a list of distinct integers >= 0 like 0,3,7; got {text!r}")
    return seeds


def plan_sweep(experiment: Experiment, args: argparse.Namespace) -> tuple[SweepPlan, Dataset]:
    """Resolve and validate everything; touches no Ray, no GPU, no MLflow, and writes nothing: the data
    source is only outlined (classes and labels, blank images; synthaug.data.data_outline), so bad input
    leaves no cache behind. Returns the plan and that outline."""
    from synthaug.overrides import apply_grids, apply_sets, check_experiment
    from synthaug.storage import folder_problem
    from synthaug.tracking import resolve_tracking_uri

    check_experiment(experiment)
    chosen = preset(args.preset)
    experiment = apply_grids(experiment, args.grid)
    experiment, chosen = apply_sets(experiment, chosen, args.set)
    seeds = parse_seeds(args.seeds or str(chosen.seeds))
    data = resolve_source(args.data or chosen.data)
    # absolute as written, symlinks not followed: a path that is each node's own folder stays one (the checks)
    cache_dir = Path(os.path.abspath(args.cache))
    problem = folder_problem(cache_dir)
    if problem:
        raise UsageError(f"--cache {problem}")
    dataset = data_outline(data, cache_dir)
    chosen = with_checkpoints(with_resources(chosen, args), args.checkpoint, dataset)
    aliases = class_aliases(args.class_map, dataset)
    fixed = {key: resolve_value(key, v, dataset, aliases) for key, v in
             {**experiment.fixed, **(experiment.paper_fixed if chosen.name == "paper" else {})}.items()}
    base = with_recipe(from_flat(TrialConfig, {**to_flat(TrialConfig(
        experiment=experiment.name, data=data, real_per_class=chosen.real_per_class,
        test_per_class=chosen.test_per_class, train=chosen.train, recipe=chosen.recipe)), **fixed}))
    chosen.validate()
    arms = {arm: {key: resolve_value(key, v, dataset, aliases) for key, v in fields.items()}
            for arm, fields in experiment.arms.items()}
    axes = {**experiment.grid, **(experiment.paper_grid if chosen.name == "paper" else {})}
    grid = {**({"arm": list(arms)} if arms else {}),
            **{key: [resolve_value(key, v, dataset, aliases) for v in values] for key, values in axes.items()}}
    explicit = {*fixed, *grid, *(key for fields in arms.values() for key in fields)}   # not the preset's train
    configs = []
    for values in itertools.product(*grid.values(), seeds):
        axes = dict(zip([*grid, "seed"], values))
        cfg = from_flat(TrialConfig, {**to_flat(base), **arms.get(axes.get("arm"), {}), **axes})
        conflict = recipe_conflict(cfg, explicit)
        if conflict:
            raise ConfigError(conflict)
        cfg = with_recipe(cfg)
        cfg.validate(classes=dataset.classes, generators={g.name: g for g in chosen.generators})
        configs.append(cfg)
    used = sorted({c.generator for c in configs if c.uses_synthetic})   # a preset that gains one keeps its sweeps
    check_counts(configs, dataset)
    check_generators(chosen, used, configs, dataset)
    name = f"{experiment.name}-{chosen.name}-" + digest({
        "base": to_flat(base), "grid": grid, **({"arms": arms} if arms else {}), "seeds": seeds,
        "data": dataset.digest, "generators": [to_flat(chosen.generator(g)) for g in used]})[:8]
    plan = SweepPlan(experiment, chosen, seeds, grid, arms, base, tuple(configs), cache_dir,
                     storage_location(args.storage), resolve_tracking_uri(args.mlflow_uri), args.address, name)
    return plan, dataset


def storage_location(flag: str) -> str:
    """--storage as Tune takes it: a URI (s3://, gs://, ...) as it is, a folder made absolute (and writable).
    A URI is only probed in the preflight: --dry-run stays offline."""
    from synthaug.storage import is_uri, storage_problem

    problem = storage_problem(flag)
    if problem:
        raise UsageError(f"--storage {problem}")
    return flag if is_uri(flag) else os.path.abspath(flag)


def preflight(plan: SweepPlan) -> None:
    """What can be checked before Ray starts: the tracking URI does what trials will ask of it, the Ray
    address answers, and an object-store --storage takes a test object (written, read back, deleted)."""
    from synthaug.preflight import address_problem, tracking_problem
    from synthaug.storage import is_uri, object_store_problem

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

    from synthaug.preflight import cluster_problem
    from synthaug.storage import is_uri

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


def placement_problem(plan: SweepPlan, use_gpus: bool) -> str | None:
    """With Ray up (and --gpus joined): the generator servers, a trial beside them and the warm-up replicas
    the preset asks for can each be placed on the cluster's nodes as they are (synthaug.placement), or
    the one-line problem; Ray would otherwise leave what fits nowhere pending forever. On CPUs, the warm-up
    replicas (a CPU each)."""
    import ray

    from synthaug.placement import cluster_gpus, gpu_problem, warmup_problem

    if use_gpus:
        return gpu_problem(plan.preset, len(plan.generators), cluster_gpus())
    return warmup_problem(plan.preset.warmup_replicas, int(ray.cluster_resources().get("CPU", 0)), "a CPU")


def main(experiment: Experiment, argv: Sequence[str] | None = None) -> int:
    """Parse, validate, run; the exit code: 0 done, 1 trials failed, 2 bad input, 130 interrupted."""
    from synthaug.interrupt import INTERRUPTED, resume_line

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
        plan, outline = plan_sweep(experiment, args)
        if args.dry_run:
            from synthaug.benchmarks import default_path, find_throughput, read_throughputs
            from synthaug.dry_run import print_dry_run

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
    from filelock import FileLock, Timeout

    lock = FileLock(str(plan.cache_dir / "sweeps" / f"{plan.name}.lock"))
    Path(lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"error: sweep {plan.name} is already running over the cache {plan.cache_dir} (lock {lock.lock_file}); "
              f"let it finish (rerun afterwards to resume), or give this one other seeds or settings", file=sys.stderr)
        return 1
    try:
        return _run_sweep(plan, dataset, fresh, wait_s)
    finally:
        lock.release()


def _run_sweep(plan: SweepPlan, dataset: Dataset, fresh: bool, wait_s: float) -> int:
    """Ray up, the sweep, Ray down; then, Ray's workers gone, the runs it leaves are ended (_close). A SIGINT
    (Ctrl-C) at any moment ends it with exit 130 and one line (synthaug.interrupt)."""
    import ray

    from synthaug.cli import start_ray
    from synthaug.console import CONSOLE, quiet_restore_advice
    from synthaug.gpu_nodes import gpu_request
    from synthaug.interrupt import INTERRUPTED, Interrupts, new_session
    from synthaug.server import NAMESPACE

    print(f"sweep {plan.name}: {len(plan.configs)} trials "
          f"({len(plan.configs) // len(plan.seeds)} configurations x {len(plan.seeds)} seeds), "
          f"preset {plan.preset.name}, data {dataset.name}")
    for key, value in {**QUIET, **CONSOLE}.items():
        os.environ.setdefault(key, value)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)    # not "wrote the result files", "total run time"
    quiet_restore_advice()
    with Interrupts() as interrupts:
        session, code = Session(new_session(), interrupts), INTERRUPTED
        try:
            start_ray(plan.address, NAMESPACE)
            try:
                # a local Ray gains no GPUs by waiting: only a cluster's autoscaler can bring them
                with gpu_request((plan.preset.gpus or 0) if plan.address else 0):
                    code = _sweep_on_ray(plan, dataset, fresh, wait_s if plan.address else 0, session)
            finally:
                interrupted = interrupts.received
                interrupts.shield()
                ray.shutdown()
        except KeyboardInterrupt:
            interrupted = True
        except Exception as err:        # a bug: its traceback, and no run left RUNNING
            interrupts.shield()
            session.error = f"{type(err).__name__}: {err}"
            _close(plan, session, 1, fresh)
            raise
        return _close(plan, session, INTERRUPTED if interrupted and code else code, fresh)


def _close(plan: SweepPlan, session: Session, code: int, fresh: bool) -> int:
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
        parent_id = parent.run_id if parent is not None else (None if fresh else _newest_parent_id(plan))
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


def _sweep_on_ray(plan: SweepPlan, dataset: Dataset, fresh: bool, wait_s: float, session: Session) -> int:
    """With Ray up: the GPUs first, then the checks on the nodes that joined, the servers, the trials."""
    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from synthaug import tracking
    from synthaug.console import VERBOSE, TrialLines, status_reporter
    from synthaug.gpu_nodes import gpu_node_problem, wait_for_gpus
    from synthaug.instances import per_trial_generators
    from synthaug.interrupt import INTERRUPTED
    from synthaug.placement import PlacementError
    from synthaug.serving import start_servers
    from synthaug.trial import SweepConstants, TrialContext, run_trial

    problem = wait_for_gpus(plan.preset.gpus or 0, wait_s) or cluster_preflight(plan)
    # --gpus 0 (or a preset's 0): CPUs, whatever joined; --gpus N: the N it waited for; else what is there
    use_gpus = plan.preset.gpus > 0 if plan.preset.gpus is not None else bool(ray.cluster_resources().get("GPU"))
    problem = problem or (gpu_node_problem() if use_gpus else None) or placement_problem(plan, use_gpus)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    experiment_id = tracking.ensure_experiment(plan.tracking_uri, plan.experiment.name)
    sweep_dir = f"{plan.storage.rstrip('/')}/{plan.name}"
    restoring = not fresh and tune.Tuner.can_restore(sweep_dir)
    parent = session.parent = _parent_run(plan, experiment_id, dataset.digest, reuse=not fresh)

    try:
        servers, warmed = start_servers(plan, dataset, parent, use_gpus, session.id)
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
                           plan.preset.trial_checkpoint_s)
    param_space = {**{k: tune.grid_search(list(v)) for k, v in plan.grid.items()},
                   "seed": tune.grid_search(list(plan.seeds))}       # the grid only: constants go with the trainable
    gpus = plan.preset.gpus_per_trial if use_gpus else 0
    # the data set travels through the object store: --data need exist on the driver's machine only
    constants = SweepConstants(to_flat(plan.base), {k: dict(v) for k, v in plan.arms.items()}, context)
    trainable = tune.with_resources(tune.with_parameters(run_trial, dataset=dataset, constants=constants),
                                    {"cpu": plan.preset.cpus_per_trial, "gpu": gpus})
    if restoring:
        print(f"resuming {sweep_dir} (rerun with --fresh to start over)")
        tuner = tune.Tuner.restore(sweep_dir, trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space)
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(
                name=plan.name, storage_path=plan.storage,
                failure_config=tune.FailureConfig(max_failures=2),
                # result.json and progress.csv a trial (the results table reads them); not TensorBoard's
                callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), TrialLines([*plan.grid, "seed"])],
                # the newest two: Tune's experiment snapshot can lag a checkpoint behind, and with one kept a
                # kill -9 in that gap left a trial restoring from a deleted checkpoint (Ray issue 27790)
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                progress_reporter=status_reporter([*plan.grid, "seed"]), verbose=VERBOSE))
    with session.interrupts.tune():                 # a Ctrl-C: Tune saves its state, stops the trials, returns
        results = tuner.fit()
    lost = [r for r in results if r.error and LOST_CHECKPOINT in str(r.error)]
    if lost and not session.interrupts.received:
        # Tune restores a trial only from the checkpoint its snapshot names; one the storage no longer holds
        # (a kill -9 between deleting the old and snapshotting the new: Ray issue 27790) fails every attempt
        print(f"{len(lost)} trial(s) had a checkpoint the storage no longer holds (Ray issue 27790): "
              f"training them again from scratch, each in its own MLflow run")
        _mark_restarted(plan, lost, parent.run_id, experiment_id)
        tuner = tune.Tuner.restore(sweep_dir, trainable, resume_unfinished=True, restart_errored=True,
                                   param_space=param_space)
        with session.interrupts.tune():
            results = tuner.fit()

    counters = {g: ray.get(s.counters.remote()) for g, s in servers.items()}
    for generator, count in counters.items():
        count["generated"] += warmed.get(generator, 0)     # by the warm-up replicas, gone by now
        kept = (f"; its confidence filter kept {count['acceptance']:.1%} of the samples it labelled"
                if "acceptance" in count else "")
        print(f"DDPM server {generator}: generated {count['generated']} images this sweep, "
              f"served {count['served']} to trials{kept}")
    parent.log_metrics({f"pool_acceptance.{g}": c["acceptance"] for g, c in counters.items() if "acceptance" in c})
    parent.log_metrics({"pool_images_generated": sum(c["generated"] for c in counters.values()),
                        "pool_images_served": sum(c["served"] for c in counters.values())})
    rows = [{**{k: (r.config or {}).get(k) for k in [*plan.grid, "seed"]}, **r.metrics}
            for r in results if r.metrics]
    finished = sum(1 for r in rows if r.get("done"))
    print_summary(plan, rows)
    for r in results:
        if r.error:                     # after its retries (max_failures); its MLflow run is FAILED with the error
            where = ", ".join(f"{k}={(r.config or {}).get(k)}" for k in [*plan.grid, "seed"])
            print(f"failed: {where}: {str(r.error).strip().splitlines()[-1][:300]}")
    if finished == len(plan.configs):
        parent.finish("FINISHED")
    print(f"\n{finished}/{len(plan.configs)} trials finished.")
    print(f"Browse:   {tracking.browse_hint(plan.tracking_uri)}")
    print(f"Analyse:  python analysis/significance.py --experiment {plan.experiment.name} "
          f"--sweep {plan.name} --mlflow-uri {plan.tracking_uri}")
    if finished < len(plan.configs):
        if session.interrupts.received:
            return INTERRUPTED                      # _close says what was kept
        errors = sum(1 for r in results if r.error)
        print(f"{len(plan.configs) - finished} trials unfinished ({errors} errored): "
              f"rerun the same command to resume.")
        session.error = f"{errors} of {len(plan.configs)} trials failed"
        return 1 if errors else INTERRUPTED
    return 0



def _mark_restarted(plan: SweepPlan, lost: list, parent_run_id: str, experiment_id: str) -> None:
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


def _parent_run(plan: SweepPlan, experiment_id: str, data_digest: str, reuse: bool):
    """The sweep's MLflow run: when resuming, the newest run of this sweep (tags synthaug.role = sweep,
    synthaug.sweep = its name), else a new one. Found in MLflow, so storage can be any URI."""
    from mlflow.tracking import MlflowClient

    from synthaug.tracking import ROLE, SWEEP, RunLogger

    if reuse:
        found = _newest_parent_id(plan, experiment_id)
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


def _newest_parent_id(plan: SweepPlan, experiment_id: str | None = None) -> str | None:
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

    done = [r for r in rows if r.get("done")]
    if not done:
        print("no finished trials yet")
        return
    frame = pd.DataFrame(done)
    keys = list(plan.grid)
    if not keys:                        # one configuration (no grid, no arms): one row
        frame["configuration"], keys = plan.experiment.name, ["configuration"]
    frame[keys] = frame[keys].map(lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
    table = frame.groupby(keys)["test_acc"].agg(n="count", mean="mean", std="std")
    table[["mean", "std"]] = table[["mean", "std"]] * 100
    print("\ntest accuracy (%) across seeds:")
    print(table.round(2).to_string())

