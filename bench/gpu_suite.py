"""Everything that decides a sweep's speed, measured on one device in one command, written to BENCHMARKS.md.

    python bench/gpu_suite.py                          # on a GPU: the study's models, in under 10 minutes
    python bench/gpu_suite.py --size tiny --out F.md   # on a CPU, in about a minute: every part's code path
    python bench/gpu_suite.py --parts sampling,ddpm    # some parts only

Each figure is a median of --reps repetitions after a warm-up, and a ratio against the usual way
timed in the same run:

- classifier: ResNet18 training images/s at batch 256 on CIFAR-sized data. synthaug's Trainer (uint8
  data and augmentation on the device, channels_last, bf16 autocast), with and without torch.compile,
  and in float32, against torchvision's way (a Dataset of PIL images, per-image transforms, a
  DataLoader, float32). Then evaluation images/s, and the projected time of one paper trial (50
  epochs over 50,000 images, 10,000 test images evaluated after each epoch).
- idle: the share of a training epoch the GPU is idle (torch.profiler: the epoch's span less the union
  of its kernels), for the training step before ebc0dad (four host-to-device copies a step) and now.
  On a CPU it is the host's time outside aten operators.
- sampling: images/s of the paper preset's UNet at DDIM 20 and 50 steps and DPM-Solver++ (2M) 20 steps,
  batched, against diffusers' own pipeline call on the same model (float32, and under bf16 autocast).
- ddpm: DDPM training optimizer steps/s at the paper batch (128), bf16 against float32.
- warmup: pool warm-up images/s through synthaug's DDPM server (the class of the sweep's server actors),
  1 server against N side by side on one device, one process each.
- sharing: two trials sharing one GPU as the paper preset's fractions do (0.45 GPU a classifier trial,
  0.5 a DDPM training), one process each, their summed throughput against one alone.

Nothing here needs Ray or MLflow (a GPU machine may lack them): the processes stand in for Ray's.

Peak GPU memory is given for each. A part that fails is reported as failed and the others still run;
the section of BENCHMARKS.md is rewritten after every part, so a run cut short keeps what it measured.
At the end the device's row of the throughput table (what --dry-run divides by) is replaced.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import queue
import datetime
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from baselines import LoaderTraining, PerStepCopies, PILImages
from measure import (device_name, device_type, idle_share, median_time, peak, random_images, reset_peak,
                     synchronize, versions)
from synthaug.cli import OneLineParser
from synthaug.report import markdown_table
from synthaug.benchmarks import Throughput, default_path, write_run, write_throughput
from synthaug.classifier import TrainConfig, Trainer, evaluate
from synthaug.config import TINY_DDPM
from synthaug.diffusion.ddpm import IMPROVED_DDPM, DDPMConfig, build_unet
from synthaug.diffusion.sampling import SamplerConfig, image_seed, sample

PAPER_EPOCHS, PAPER_TRAIN, PAPER_TEST = 50, 50_000, 10_000     # one E4 trial of the paper preset
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Size:
    """How big each part's work is."""

    name: str = "full"
    width: int = 64                     # the study's ResNet18
    images: int = 16_384                # classifier training images an epoch (64 batches)
    batch: int = 256                    # the study's batch
    loader_workers: int = 8             # the torchvision baseline's DataLoader processes
    compile_backend: str = "inductor"
    unet: DDPMConfig = IMPROVED_DDPM    # the paper preset's generators
    samplers: tuple = (("ddim", 20), ("ddim", 50), ("dpmpp-2m", 20))
    sample_images: int = 768
    sample_batch: int = 256             # GeneratorSpec.sample_batch_size
    ddpm_batch: int = 128               # the paper batch
    ddpm_steps: int = 20                # timed optimizer steps a repetition
    warmup_images: int = 64             # a class, 10 classes
    warmup_steps: int = 100             # DDIM steps: the paper preset's sampler
    replicas: int = 4
    reps: int = 3


SIZES = {
    "full": Size(),
    "tiny": Size(name="tiny", width=4, images=256, batch=64, loader_workers=0, compile_backend="eager",
                 unet=TINY_DDPM, samplers=(("ddim", 2), ("ddim", 5), ("dpmpp-2m", 2)), sample_images=8,
                 sample_batch=8, ddpm_batch=16, ddpm_steps=2, warmup_images=4, warmup_steps=2, replicas=2, reps=2),
}


@dataclass
class Row:
    part: str
    what: str
    value: float | None                 # None: failed, or not measurable here
    unit: str
    vs: str = ""                        # the ratio against the baseline named
    peak_gib: float | None = None
    note: str = ""


@dataclass
class Suite:
    size: Size
    device: str
    reps: int
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)     # what the throughput row is made of

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)
        for row in rows:
            print(f"  {row.what}: {figure(row.value, '-')} {row.unit}" + (f"  ({row.vs})" if row.vs else "")
                  + (f"  peak {row.peak_gib:.2f} GiB" if row.peak_gib is not None else "")
                  + (f"  [{row.note}]" if row.note else ""), flush=True)


# ------------------------------------------------------------------------------------------------ parts


def classifier(suite: Suite) -> None:
    size, device, reps = suite.size, suite.device, suite.reps
    x, y = random_images(size.images)
    cfg = TrainConfig(epochs=reps + 1, batch_size=size.batch, width=size.width)

    def trainer_rate(**options) -> tuple[float, float, float | None, Trainer]:
        reset_peak(device)
        rate, compile_s, trainer = training_rate(cfg, x, y, device, reps, **options)
        return rate, compile_s, peak(device), trainer

    loader = LoaderTraining(PILImages(x, y), cfg, device, size.loader_workers)
    reset_peak(device)
    theirs = size.images / median_time(loader.train_epoch, reps, device)
    their_peak = peak(device)
    del loader
    bf16, _, bf16_peak, trainer = trainer_rate(autocast=True)
    try:            # a compiler missing on the machine loses this row only
        compiled, compile_s, compiled_peak, _ = trainer_rate(autocast=True, compile_backend=size.compile_backend)
        compiled_note = f"compiling took {compile_s:.0f} s"
    except Exception as err:                    # noqa: BLE001
        compiled = compiled_peak = None
        compiled_note = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    fp32, _, fp32_peak, _ = trainer_rate(autocast=False)
    baseline = f"torchvision {size.loader_workers}-worker DataLoader"
    suite.add(
        Row("classifier", f"torchvision: PIL transforms + DataLoader ({size.loader_workers} workers), float32",
            theirs, "images/s", "baseline", their_peak),
        Row("classifier", "synthaug Trainer, bf16 autocast (channels_last on a GPU)", bf16, "images/s",
            f"{bf16 / theirs:.2f}x {baseline}", bf16_peak),
        Row("classifier", f"synthaug Trainer, bf16, torch.compile ({size.compile_backend})", compiled, "images/s",
            f"{compiled / theirs:.2f}x {baseline}" if compiled else "", compiled_peak, compiled_note),
        Row("classifier", "synthaug Trainer, float32", fp32, "images/s", f"{fp32 / theirs:.2f}x {baseline}", fp32_peak))
    test_x, test_y = random_images(min(size.images, PAPER_TEST), seed=1)
    reset_peak(device)
    evaluating = len(test_y) / median_time(lambda: evaluate(trainer.model, test_x, test_y, 10, device), reps, device)
    trial_s = PAPER_EPOCHS * (PAPER_TRAIN / bf16 + PAPER_TEST / evaluating)
    suite.add(Row("classifier", "evaluation (synthaug, batch 1024)", evaluating, "images/s", "", peak(device)),
              Row("classifier", "one paper trial: 50 epochs x 50,000 images + 10,000 test images an epoch",
                  trial_s / 60, "min (projected)", "target < 3 min on an H100", None,
                  "from the bf16 row; the study recipe trains without augmentation, so a little faster"))
    suite.figures["classifier_images"] = bf16


def idle(suite: Suite) -> None:
    size, device = suite.size, suite.device
    x, y = random_images(size.images)
    cfg = TrainConfig(epochs=2, batch_size=size.batch, width=size.width)
    what = "GPU idle share of a training epoch" if device_type(device) == "cuda" else \
        "host time outside aten operators in a training epoch (CPU: no GPU to idle)"
    shares = {}
    for label, cls in (("before ebc0dad: 4 host-to-device copies a step", PerStepCopies),
                       ("now: an epoch's draws in one copy", Trainer)):
        trainer = cls(cfg, x, y, 10, seed=0, device=device, progress=False, autocast=True)
        trainer.train_epoch()                                   # warm-up
        shares[label] = idle_share(trainer.train_epoch, device)
    (before, after) = shares
    suite.add(Row("idle", f"{what}, {before}", 100 * shares[before], "%", "torch.profiler"),
              Row("idle", f"{what}, {after}", 100 * shares[after], "%",
                  f"{100 * (shares[before] - shares[after]):+.1f} points less idle" if shares[after] <= shares[before]
                  else f"{100 * (shares[after] - shares[before]):.1f} points more idle"))


def sampling(suite: Suite) -> None:
    size, device, reps = suite.size, suite.device, suite.reps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = build_unet(size.unet).to(device).eval()
    schedule = {"num_train_timesteps": size.unet.num_train_timesteps, "beta_schedule": size.unet.beta_schedule}
    seeds = [image_seed("gpu-suite", k) for k in range(size.sample_images)]
    params = sum(p.numel() for p in unet.parameters())
    for name, steps in size.samplers:
        label = f"{'DPM-Solver++ (2M)' if name == 'dpmpp-2m' else name.upper()} {steps} steps"
        sampler = SamplerConfig(name=name, steps=steps)
        reset_peak(device)
        ours = size.sample_images / median_time(
            lambda: sample(unet, sampler, seeds, None, device, batch_size=size.sample_batch, progress=False,
                           scheduler_config=schedule), reps, device)
        our_peak = peak(device)
        pipe = diffusers_pipeline(name, unet, schedule)
        rates = {}
        for autocast in (False, True):
            reset_peak(device)
            with torch.autocast(device_type(device), torch.bfloat16, enabled=autocast):
                rates[autocast] = size.sample_images / median_time(
                    lambda: run_pipeline(pipe, size.sample_images, size.sample_batch, steps), reps, device)
            rates[autocast, "peak"] = peak(device)
        suite.add(
            Row("sampling", f"{label}: diffusers pipeline call, float32", rates[False], "images/s", "baseline",
                rates[False, "peak"]),
            Row("sampling", f"{label}: diffusers pipeline call, bf16 autocast", rates[True], "images/s",
                f"{rates[True] / rates[False]:.2f}x the float32 pipeline", rates[True, "peak"]),
            Row("sampling", f"{label}: synthaug sample(), one seed an image, bf16 on a GPU", ours, "images/s",
                f"{ours / rates[False]:.2f}x the pipeline, {ours / rates[True]:.2f}x the bf16 pipeline", our_peak,
                f"UNet {params / 1e6:.1f}M parameters, batch {size.sample_batch}"))
        if (name, steps) == size.samplers[0]:
            suite.figures["unet_image_evals"] = ours * steps


def ddpm(suite: Suite) -> None:
    size, device, reps = suite.size, suite.device, suite.reps
    cfg = dataclasses.replace(size.unet, batch_size=size.ddpm_batch)
    rates = {}
    for autocast in (False, True):
        reset_peak(device)
        rates[autocast] = ddpm_rate(cfg, size.ddpm_steps, reps, device, autocast)
        rates[autocast, "peak"] = peak(device)
    suite.add(Row("ddpm", f"DDPM training at batch {size.ddpm_batch}, float32", rates[False], "steps/s", "baseline",
                  rates[False, "peak"]),
              Row("ddpm", f"DDPM training at batch {size.ddpm_batch}, bf16 autocast", rates[True], "steps/s",
                  f"{rates[True] / rates[False]:.2f}x float32", rates[True, "peak"],
                  f"100,000 paper steps: {100_000 / rates[True] / 3600:.2f} h"))
    suite.figures["ddpm_steps"] = rates[True]


def warmup(suite: Suite) -> None:
    from synthaug.config import GeneratorSpec
    from synthaug.diffusion.ddpm import save_generator
    from synthaug.generators import PreparedGenerator
    from synthaug.serving import replica_for

    size, cuda = suite.size, device_type(suite.device) == "cuda"
    cfg = dataclasses.replace(size.unet, conditional=True, num_classes=len(CLASSES))
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            digest = save_generator(build_unet(cfg), cfg, Path(folder) / "generator")
        spec = GeneratorSpec(name="gpu-suite", ddpm=cfg, sample_batch_size=size.sample_batch,
                             sampler=SamplerConfig(name="ddim", steps=size.warmup_steps))
        prepared = PreparedGenerator(spec.name, str(Path(folder) / "generator"), digest, conditional=True)
        for replicas in (1, size.replicas):
            mine = [[c for c in range(len(CLASSES)) if replica_for(c, 0, replicas, True) == r] for r in range(replicas)]
            done = side_by_side(_serve_pools, [(prepared, spec, str(Path(folder) / f"pools-{replicas}"), classes,
                                                size.warmup_images, suite.device) for classes in mine])
            rates[replicas] = sum(made for made, _, _ in done) / (max(e for _, _, e in done) - min(s for _, s, _ in done))
    n = size.replicas
    suite.add(Row("warmup", f"pool warm-up, 1 DDPM server ({len(CLASSES)} classes x {size.warmup_images}, "
                            f"DDIM {size.warmup_steps})", rates[1], "images/s", "baseline"),
              Row("warmup", f"pool warm-up, {n} DDPM servers side by side on one {'GPU' if cuda else 'machine'}",
                  rates[n], "images/s", f"{rates[n] / rates[1]:.2f}x 1 server", None,
                  "synthaug.server.DDPMServer, the class of the sweep's server actors, one a process; one timing "
                  "each (a pool is written once), shards written included"))


def sharing(suite: Suite) -> None:
    size, cuda = suite.size, device_type(suite.device) == "cuda"
    classifier_cfg = TrainConfig(epochs=suite.reps + 1, batch_size=size.batch, width=size.width)
    ddpm_cfg = dataclasses.replace(size.unet, batch_size=size.ddpm_batch)
    for label, task, args in (("classifier trials", _classifier_task, (classifier_cfg, size.images, suite.reps)),
                              ("DDPM trainings", _ddpm_task, (ddpm_cfg, size.ddpm_steps, suite.reps))):
        args = (*args, suite.device)
        [alone] = side_by_side(task, [args])
        together = side_by_side(task, [args, args])
        summed = sum(rate for rate, _ in together)
        unit = "images/s" if task is _classifier_task else "steps/s"
        suite.add(Row("sharing", f"1 of the {label} alone", alone[0], unit, "baseline", alone[1]),
                  Row("sharing", f"2 {label} at once on one {'GPU' if cuda else 'machine'}, summed", summed, unit,
                      f"{summed / alone[0]:.2f}x one alone", max((p or 0) for _, p in together) or None,
                      "each its own process, as Ray runs two trials of 0.45 GPU (0.5 for DDPM trainings)"))


def side_by_side(task, arguments: list[tuple]) -> list:
    """task(*args, barrier) in one spawned process each, all released at once when every one is ready (its
    model built, warmed up); their results in order. An error in one is raised here."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(arguments)), ctx.Queue()
    workers = [ctx.Process(target=_run_task, args=(task, args, barrier, results, i)) for i, args in enumerate(arguments)]
    for worker in workers:
        worker.start()
    found: dict = {}
    try:
        while len(found) < len(workers):
            try:
                index, value = results.get(timeout=5)
                found[index] = value
            except queue.Empty:
                if not any(w.is_alive() for w in workers) and results.empty():
                    raise RuntimeError(f"a worker process died (exit codes {[w.exitcode for w in workers]})") from None
    finally:
        for worker in workers:
            worker.join(timeout=60)
    errors = [v for v in found.values() if isinstance(v, str)]
    if errors:
        raise RuntimeError(errors[0])
    return [found[i] for i in range(len(arguments))]


def _run_task(task, args, barrier, results, index) -> None:
    try:
        results.put((index, task(*args, barrier)))
    except BaseException as err:                    # noqa: BLE001 - reported to the parent, which raises it
        barrier.abort()
        results.put((index, f"{type(err).__name__}: {err}"))


def _serve_pools(prepared, spec, store: str, classes: list[int], n: int, device: str, barrier):
    """In a process: one DDPM server makes its classes' pools; (images made, start, end)."""
    from synthaug.server import DDPMServer

    server = DDPMServer(prepared, spec, store, CLASSES, device=device, progress=False)
    barrier.wait()
    start = time.time()
    made = sum(server.ensure(c, n, 0) for c in classes)
    synchronize(device)
    return made, start, time.time()


def training_rate(cfg: TrainConfig, x, y, device: str, reps: int, barrier=None,
                  **options) -> tuple[float, float, Trainer]:
    """(images/s, seconds the warm-up epoch took beyond a timed one, the trainer): a median of `reps` epochs
    after a warm-up epoch (and, with a barrier, after every process sharing the device has warmed up)."""
    trainer = Trainer(cfg, x, y, 10, seed=0, device=device, progress=False, **options)
    first = trainer.train_epoch()["epoch_time_s"]           # warm-up (and compilation)
    if barrier is not None:
        barrier.wait()
    seconds = statistics.median(trainer.train_epoch()["epoch_time_s"] for _ in range(reps))
    return len(y) / seconds, first - seconds, trainer


def ddpm_rate(cfg: DDPMConfig, steps: int, reps: int, device: str, autocast: bool, barrier=None) -> float:
    """Optimizer steps/s of a DDPM training: a median of `reps` runs of `steps` steps after a warm-up."""
    from synthaug.diffusion.training import DDPMTraining

    training = DDPMTraining(cfg, random_images(1024)[0], None, seed=0, device=device, autocast=autocast)
    training.train_step()
    if barrier is not None:
        barrier.wait()
    return steps / median_time(lambda: [training.train_step() for _ in range(steps)], reps, device)


def _classifier_task(cfg: TrainConfig, n: int, reps: int, device: str, barrier) -> tuple[float, float | None]:
    """In a process: a classifier trial's epochs; (images/s, peak GiB)."""
    torch.set_num_threads(1)
    return training_rate(cfg, *random_images(n), device, reps, barrier, autocast=True)[0], peak(device)


def _ddpm_task(cfg: DDPMConfig, steps: int, reps: int, device: str, barrier) -> tuple[float, float | None]:
    """In a process: a DDPM training's steps; (steps/s, peak GiB)."""
    torch.set_num_threads(1)
    return ddpm_rate(cfg, steps, reps, device, True, barrier), peak(device)


def plans(benchmarks: str, device: str, size: str) -> list[Row]:
    """Each sweep's paper-preset GPU-hours on one such device, from the row just written (its --dry-run)."""
    import re
    import subprocess

    rows = []
    for script in sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.py")):
        with tempfile.TemporaryDirectory() as folder:      # a dry run writes nothing; a folder to be sure
            out = subprocess.run([sys.executable, str(script), "--preset", "paper", "--dry-run", "--gpus", "1",
                                  "--benchmarks", benchmarks, "--gpu-model", device],
                                 cwd=folder, capture_output=True, text=True, timeout=300)
        found = re.search(r"total ([0-9.]+) GPU-h", out.stdout)
        trials = re.search(r"^(\d+) trials = ", out.stdout, re.MULTILINE)
        if "unrecognized arguments" in out.stderr:
            continue                                    # a script without a dry run (train_generators.py)
        rows.append(Row("plan", f"sweeps/{script.name} --preset paper ({trials.group(1) if trials else '?'} trials)",
                        float(found.group(1)) if found else None, "GPU-h", "its --dry-run on this device's row",
                        note=(out.stderr.strip().splitlines() or ["no estimate"])[-1][:200] if not found else
                        "" if size == "full" else f"--size {size} figures: checks the arithmetic, plans nothing"))
    return rows


PARTS = {"classifier": classifier, "idle": idle, "sampling": sampling, "ddpm": ddpm, "warmup": warmup,
         "sharing": sharing}


# ---------------------------------------------------------------------------------------------- helpers


def diffusers_pipeline(name: str, unet, schedule: dict):
    """diffusers' own pipeline for a sampler, over the same UNet and noise schedule."""
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DPMSolverMultistepScheduler

    if name == "ddim":
        pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(**schedule))
    else:
        pipe = DDPMPipeline(unet=unet, scheduler=DPMSolverMultistepScheduler(**schedule, algorithm_type="dpmsolver++"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipeline(pipe, n: int, batch: int, steps: int) -> None:
    for start in range(0, n, batch):
        pipe(batch_size=min(batch, n - start), generator=torch.Generator().manual_seed(start),
             num_inference_steps=steps, output_type="np")


def figure(value: float | None, missing: str = "failed") -> str:
    return missing if value is None else f"{value:,.3g}" if value < 100 else f"{value:,.0f}"


def render(suite: Suite, started: str, commit: str, finished: bool) -> str:
    table = markdown_table(["part", "what", "figure", "against", "peak GPU memory", "note"], [
        [row.part, row.what, f"{figure(row.value)} {row.unit}", row.vs,
         "-" if row.peak_gib is None else f"{row.peak_gib:.2f} GiB", row.note] for row in suite.rows])
    return (f"### {device_name(suite.device)}, --size {suite.size.name}, {started}\n\n"
            f"{versions()}; commit {commit}; medians of {suite.reps} repetitions after a warm-up"
            + ("" if finished else "; **cut short: the parts below are all it measured**") + f"\n\n{table}\n")


def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="full", help="full: the study's models (a GPU); tiny: seconds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"a comma list of {', '.join(PARTS)} (default all)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default: the size's)")
    parser.add_argument("--out", default=str(default_path()), help="the BENCHMARKS.md to write (default the repo's)")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts: names from {', '.join(PARTS)}, got {args.parts!r}")
    if args.size == "full" and device_type(args.device) != "cuda":
        parser.error("--size full: the study's models need a GPU (hours on a CPU); --size tiny checks every part "
                     "here in about a minute")
    size = SIZES[args.size]
    suite = Suite(size, args.device, args.reps or size.reps)
    torch.set_num_threads(1 if device_type(args.device) == "cpu" else torch.get_num_threads())
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from synthaug.provenance import code_commit

    commit, key = code_commit(), f"{device_name(args.device)} --size {size.name} {started}"
    print(f"{device_name(args.device)}, --size {size.name}: {', '.join(parts)}; writing {args.out}", flush=True)
    failed = 0
    try:
        for name in parts:
            print(f"{name}:", flush=True)
            start = time.perf_counter()
            try:
                PARTS[name](suite)
            except Exception as err:             # noqa: BLE001 - one part's failure must not lose the others
                traceback.print_exc()
                failed += 1
                suite.add(Row(name, f"failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}", None, ""))
            print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
            write_run(args.out, key, render(suite, started, commit, finished=name == parts[-1]))
    except KeyboardInterrupt:
        print("interrupted: the table keeps the parts measured so far")
        return 130
    if {"classifier_images", "ddpm_steps", "unet_image_evals"} <= set(suite.figures):
        write_throughput(args.out, Throughput(
            device=device_name(args.device), size=size.name, **{k: round(v, 4) for k, v in suite.figures.items()},
            source=f"measured by bench/gpu_suite.py --size {size.name}, {started}, commit {commit[:12]}"))
        print(f"throughput row for {device_name(args.device)} ({size.name}) written to {args.out}")
        suite.add(*plans(args.out, device_name(args.device), size.name))
        write_run(args.out, key, render(suite, started, commit, finished=True))
    print(f"{len(parts) - failed}/{len(parts)} parts measured; the table is in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
