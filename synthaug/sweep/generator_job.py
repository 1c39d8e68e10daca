"""The generator job: a preset's generators and their pseudo-labellers, trained before any sweep.

    python sweeps/train_generators.py --preset paper --data cifar10
    python sweeps/train_generators.py --preset paper --generators ddpm-cond --gpus-per-generator 4 --address auto

Each generator trains in a Ray task (one GPU when the cluster has one) or, with
`--gpus-per-generator N > 1`, as a data-parallel Ray Train run of N workers (DDP; NCCL on
GPUs, gloo on CPUs) whose global batch is the recipe's, split N ways, at the recipe's
learning rate. Everything is cached under the keys the sweeps use (synthaug.generation.generator_training),
so a sweep afterwards trains nothing. Interrupted and rerun (or retried by Ray), a training
continues from its last checkpoint.

On a cluster (--address) the job first asks the autoscaler for the GPUs it needs (--gpus, default
the preset's, at least --gpus-per-generator) and waits for them, then checks the tracking store,
the cache and every GPU node's driver on the nodes that joined; it never trains on CPUs when GPUs
were asked for, and it lets the GPUs go when it ends, fails or is interrupted (synthaug.sweep.gpu_nodes).
Without GPUs asked for it takes the cluster as it finds it: GPUs when any node has one (else CPU
workers), and N workers only when its live nodes hold N GPUs (else N CPUs), counted before anything
trains (Ray Train would wait forever for more); while others hold some of them it waits, saying so every
30 s, and Ctrl-C ends the wait. `--address auto` joins a Ray started with `ray start`, never another
command's own (synthaug.sweep.preflight).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from synthaug.config import PRESETS, ConfigError, GeneratorSpec, Preset, preset
from synthaug.data.sources import DataError, Dataset, load_dataset, resolve_source
from synthaug.sweep.cli import OneLineParser, add_gpu_flags, add_run_flags

WAIT_LINE_EVERY_S = 30.0        # a waiting line at most this often


@dataclass(frozen=True)
class JobPlan:
    """A validated job: which generators, on what data, where everything goes."""

    preset: Preset
    specs: tuple[GeneratorSpec, ...]
    data: str
    cache_dir: Path
    tracking_uri: str
    address: str | None
    workers: int                    # data-parallel workers a generator (--gpus-per-generator)
    gpus: int | None                # GPUs asked for and waited for (None: the cluster as it is; 0: CPUs)
    wait_s: float                   # --wait-for-gpus


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="sweeps/train_generators.py", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smoke", help=f"one of {', '.join(PRESETS)} (default smoke)")
    parser.add_argument("--generators", default=None,
                        help="a,b: which of the preset's generators (default: every one trained here but the named "
                             "alternatives)")
    add_run_flags(parser)
    parser.add_argument("--gpus-per-generator", default="1",
                        help="N >= 1: data-parallel workers a generator, one GPU each (CPU workers on a "
                             "cluster without GPUs); default 1")
    add_gpu_flags(parser, "job")
    return parser.parse_args(argv)


def plan_job(args: argparse.Namespace) -> JobPlan:
    """Resolve and validate everything; touches no Ray, no GPU, no MLflow, and writes nothing (the data is
    loaded, and cached, after the preflight)."""
    from synthaug.core.storage import folder_problem
    from synthaug.core.tracking import resolve_tracking_uri
    from synthaug.generation.generators import generator_kind
    from synthaug.sweep.sweep_inputs import with_resources

    chosen = preset(args.preset)
    # a generator with one instance a trial seed (train_on "trial", seed_per_trial) is trained by its sweep
    trainable = [g for g in chosen.generators if generator_kind(g).trains and g.train_on == "all"
                 and not g.seed_per_trial]
    if args.generators is None:
        specs = [g for g in trainable if g.name not in chosen.alternatives]
    else:
        names = [n.strip() for n in args.generators.split(",") if n.strip()]
        known = {g.name for g in trainable}
        unknown = [n for n in names if n not in known]
        if not names or unknown:
            raise ConfigError(f"--generators: names from {', '.join(sorted(known))} (the {chosen.name} preset's "
                              f"generators trained here); got {args.generators!r}")
        specs = [chosen.generator(n) for n in names]
    try:
        workers = int(args.gpus_per_generator)
    except ValueError:
        workers = 0
    if workers < 1:
        raise ConfigError(f"--gpus-per-generator: an integer >= 1, got {args.gpus_per_generator!r}")
    for spec in specs:
        spec.validate()
        if spec.ddpm.batch_size % workers:
            raise ConfigError(f"--gpus-per-generator: a divisor of {spec.name}'s batch of {spec.ddpm.batch_size} "
                              f"(each worker takes an equal share), got {workers}")
    gpus = with_resources(chosen, args).gpus
    if gpus:
        gpus = max(gpus, workers)           # one data-parallel group's GPUs at least
    data = resolve_source(args.data or chosen.data)
    cache_dir = Path(os.path.abspath(args.cache))      # as written (synthaug.sweep.sweep_plan.plan_sweep)
    problem = folder_problem(cache_dir)
    if problem:
        raise ConfigError(f"--cache {problem}")
    return JobPlan(chosen, tuple(specs), data, cache_dir, resolve_tracking_uri(args.mlflow_uri), args.address,
                   workers, gpus, float(args.wait_for_gpus))


def preflight_problem(plan: JobPlan) -> str | None:
    """Before anything is written or started: the tracking URI does what the job will ask of it (an mlflow
    server: its API and artifact proxy), the Ray address answers. The one-line problem, or None."""
    from synthaug.sweep.preflight import address_problem, tracking_problem

    problem = tracking_problem(plan.tracking_uri)
    if problem:
        return f"--mlflow-uri {problem}"
    problem = address_problem(plan.address)
    return f"--address {problem}" if problem else None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, validate, train; the exit code: 0 done, 2 bad input, 130 interrupted (Ctrl-C: one line)."""
    from synthaug.sweep.interrupt import INTERRUPTED, resume_line

    try:
        return _main(argv)
    except KeyboardInterrupt:               # before Ray started (once it has, run_job handles it)
        print(resume_line("nothing started yet"), flush=True)
        return INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    from synthaug.sweep.sweep_inputs import UsageError

    try:
        plan = plan_job(args)
        problem = preflight_problem(plan)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        dataset = load_dataset(plan.data, plan.cache_dir)
    except (ConfigError, DataError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run_job(plan, dataset)


def run_job(plan: JobPlan, dataset: Dataset) -> int:
    """Ray up, the training, Ray down; then (no worker writes a status any more) the training runs this
    command's tasks left RUNNING end KILLED. A SIGINT (Ctrl-C) at any moment: exit 130 and one line."""
    from synthaug.generation.generator_training import trained_generator
    from synthaug.sweep.console import QUIET, plain_when_redirected, quiet_restore_advice
    from synthaug.sweep.interrupt import INTERRUPTED, Interrupts, end_session_runs, new_session, resume_line

    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    quiet_restore_advice()
    plain_when_redirected()
    session = new_session()
    with Interrupts() as interrupts:
        try:
            code = interrupts.on_ray(plan.address, None, plan.gpus or 0, lambda: _train_on_ray(plan, dataset, session))
        finally:
            try:
                end_session_runs(plan.tracking_uri, session)
            except Exception as err:  # noqa: BLE001 - the store gone meanwhile: a line, the exit code kept
                print(f"warning: could not end this job's MLflow runs ({str(err).splitlines()[0][:200]})",
                      file=sys.stderr)
    if interrupts.received and code:
        trained = sum(1 for spec in plan.specs if trained_generator(spec, dataset, plan.cache_dir, verify=False))
        print(resume_line(f"{trained} of {len(plan.specs)} generators trained and kept"), flush=True)
        return INTERRUPTED
    return code


def _train_on_ray(plan: JobPlan, dataset: Dataset, session: str = "") -> int:
    """With Ray up: the GPUs first (on a cluster), then the checks on the nodes that joined, then training."""
    import ray

    from synthaug.core.devices import device_task
    from synthaug.core.tracking import browse_hint
    from synthaug.generation.generator_training import GENERATORS_EXPERIMENT
    from synthaug.generation.prepare import prepare_generator
    from synthaug.sweep.gpu_nodes import gpu_node_problem, wait_for_gpus
    from synthaug.sweep.preflight import cluster_problem

    problem = wait_for_gpus(plan.gpus or 0, plan.wait_s if plan.address else 0)
    problem = problem or cluster_problem(plan.tracking_uri, [("--cache", str(plan.cache_dir))])
    resources = ray.cluster_resources()
    # --gpus 0: CPUs, whatever joined; --gpus N: the N it waited for; else what is there
    gpus = bool(plan.gpus) if plan.gpus is not None else bool(resources.get("GPU"))
    problem = problem or (gpu_node_problem() if gpus else None) or workers_problem(plan.workers, resources, gpus)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    print(f"training {len(plan.specs)} generators of the {plan.preset.name} preset on {dataset.name} "
          f"({len(dataset.train_y)} training images): {', '.join(s.name for s in plan.specs)}; "
          f"{'GPU' if gpus else 'CPU'}, {plan.workers} worker(s) a generator; cache {plan.cache_dir}")
    shipped = ray.put(dataset)      # loaded once on the driver; workers need no --data of their own
    if plan.workers > 1:
        for spec in plan.specs:
            train_data_parallel(plan, spec, dataset, shipped, use_gpu=gpus, session=session)
    prepare = device_task(prepare_generator, num_gpus=1 if gpus else 0, num_cpus=1)
    prepared = ray.get([prepare.remote(spec, plan.data, str(plan.cache_dir), dataset=shipped,
                                       tracking_uri=plan.tracking_uri,
                                       policy=plan.preset.checkpointing,
                                       evaluation_per_class=plan.preset.evaluation_per_class, session=session)
                        for spec in plan.specs])
    print_summary(plan, prepared)
    print(f"\nBrowse:  {browse_hint(plan.tracking_uri)}   (experiment '{GENERATORS_EXPERIMENT}')")
    return 0


def workers_problem(workers: int, resources: dict, use_gpus: bool) -> str | None:
    """Why the cluster (its total `resources`) can never hold `workers` data-parallel workers of a generator,
    or None. Ray Train gives each worker a GPU when the job uses GPUs, else a CPU, and packs them on as few
    nodes as it can while letting them span nodes: the cluster's total is what counts."""
    unit = "GPU" if use_gpus else "CPU"
    have = int(resources.get(unit, 0))
    if workers <= have:
        return None
    return (f"--gpus-per-generator {workers}: each data-parallel worker takes a {unit}, and this cluster has {have}"
            f"{'' if use_gpus else ' (CPU workers: --gpus 0, or no GPU asked for or found)'}; "
            f"{f'pass at most {have}, or ' if have else ''}start more {unit} "
            f"nodes first")


def train_data_parallel(plan: JobPlan, spec: GeneratorSpec, dataset: Dataset, shipped, use_gpu: bool,
                        session: str = "") -> None:
    """spec's DDPM trained by plan.workers DDP workers through Ray Train (skipped when cached)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from synthaug.diffusion.training import process_group_backend
    from synthaug.generation.generator_training import generator_key, trained_generator

    if trained_generator(spec, dataset, plan.cache_dir, verify=False):     # its preparation checks the files
        return
    share = spec.ddpm.batch_size // plan.workers
    wait_until_free("GPU" if use_gpu else "CPU", plan.workers, f"{spec.name}'s {plan.workers} data-parallel workers")
    print(f"{spec.name}: {plan.workers} data-parallel workers ({'NCCL, GPUs' if use_gpu else 'gloo, CPUs'}), "
          f"effective batch {spec.ddpm.batch_size} ({share} a worker), lr {spec.ddpm.lr:g}", flush=True)
    trainer = TorchTrainer(
        _data_parallel_worker,
        train_loop_config={"spec": spec, "dataset": shipped, "cache_dir": str(plan.cache_dir),
                           "tracking_uri": plan.tracking_uri, "policy": plan.preset.checkpointing,
                           "session": session},
        torch_config=TorchConfig(backend=process_group_backend(use_gpu)),
        scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=use_gpu,
                                     resources_per_worker=None if use_gpu else {"CPU": 1}),
        # a lost worker or node: Ray Train restarts the group, which resumes from the last checkpoint
        run_config=RunConfig(name=f"train-{generator_key(spec, dataset)}", storage_path=str(plan.cache_dir / "ray_train"),
                             failure_config=FailureConfig(max_failures=3)))
    fit_keeping_ctrl_c(trainer)


def wait_until_free(unit: str, count: int, what: str, every_s: float = WAIT_LINE_EVERY_S) -> None:
    """Until `count` of `unit` are free on the cluster: a line now and every every_s seconds saying what waits
    for what, and what is free. The cluster holds them (workers_problem): others use them for now. Ctrl-C
    (the command's SIGINT handler) ends the wait."""
    import ray

    start, said = time.monotonic(), None
    while (free := ray.available_resources().get(unit, 0)) < count:
        now = time.monotonic()
        if said is None or now - said >= every_s:
            total = ray.cluster_resources().get(unit, 0)
            print(f"waiting {now - start:.0f} s: {what} need {count} free {unit}s; {free:g} of the cluster's "
                  f"{total:g} are free now (others hold the rest); Ctrl-C stops", flush=True)
            said = now
        time.sleep(1)


def fit_keeping_ctrl_c(trainer) -> None:
    """trainer.fit() from a thread of its own: Ray Train installs a SIGINT handler when fit runs on the main
    thread, which waits on a controller that cannot answer while it waits for workers (Ctrl-C then did
    nothing). Off the main thread the command's own handler stays, and its KeyboardInterrupt ends the wait
    here; Ray's shutdown then stops the run, which resumes from its last checkpoint."""
    import threading

    outcome: dict = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # noqa: BLE001 - raised again on the main thread
            outcome["error"] = err

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.5)
    if "error" in outcome:
        raise outcome["error"]


def _data_parallel_worker(config: dict) -> None:
    """One Ray Train worker: its rank's share of every global batch; rank 0 logs and saves."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from synthaug.core.devices import default_device
    from synthaug.diffusion.training import gather_rng_states
    from synthaug.generation.generator_training import Tracking, train_generator

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = torch.device(default_device())
    if device.type == "cuda":       # this worker's GPU among those Ray Train shows every worker of the node
        device = ray.train.torch.get_device()
    torch.set_num_threads(1)
    dataset = ray.get(config["dataset"])

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    tracking = Tracking.at(config["tracking_uri"], config.get("session", "")) if rank == 0 else None
    train_generator(config["spec"], dataset, Path(config["cache_dir"]), device, tracking, config["policy"],
                    rank=rank, world_size=world, wrap=wrap, gather_rng=gather_rng_states, progress=rank == 0)


def print_summary(plan: JobPlan, prepared) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(plan.tracking_uri)
    print("\ngenerator        weights       FID      KID      in features        labeller acc (%)  run")
    for p in prepared:
        metrics = client.get_run(p.run_id).data.metrics if p.run_id else {}
        # FID and KID are logged named by their feature space: fid_inception, fid_labeller_features
        fid_name = next((k for k in sorted(metrics) if k.startswith("fid_")), "fid_?")
        features = fid_name.removeprefix("fid_")
        print(f"{p.name:<16} {p.weights_digest[:12]}  {metrics.get(fid_name, float('nan')):7.2f}  "
              f"{metrics.get('kid_' + features, float('nan')):7.4f}  {features:<17}  "
              f"{100 * p.labeller_test_acc:16.1f}  {p.run_id}")
