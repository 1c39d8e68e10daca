"""Everything that decides a sweep's speed, measured on one device, written to BENCHMARKS.md as it goes.

    python bench/gpu_suite.py                          # on a GPU: the study's models, in under 10 minutes
    python bench/gpu_suite.py --size tiny --out F.md   # on a CPU, in about a minute: every part's code path
    python bench/gpu_suite.py --parts trials,ddpm      # some parts only
    bash bench/on_device.sh                            # a lent GPU: the parts as stages, each time-limited

Each figure is a median of --reps repetitions after a warm-up, and a ratio against a baseline timed in
the same run. First the parts that decide a sweep's plan (bench/plan_parts.py: cuda, trials, ddpm, evals,
labeller; their figures make the device's row of the throughput table), then:

- classifier: ResNet18 training images/s at batch 256 on CIFAR-sized data. synthaug's Trainer (uint8
  data and augmentation on the device, channels_last, bf16 autocast), with and without torch.compile,
  and in float32, against torchvision's way (a Dataset of PIL images, per-image transforms, a
  DataLoader, float32). Then evaluation images/s, and the projected time of one paper trial.
- idle: the share of a training epoch the GPU is idle (torch.profiler: the epoch's span less the union
  of its kernels), for the training step before ebc0dad (four host-to-device copies a step) and now.
  On a CPU it is the host's time outside aten operators.
- sampling: images/s of the paper preset's UNet at DDIM 20 and 50 steps and DPM-Solver++ (2M) 20 steps,
  batched, against diffusers' own pipeline call on the same model (float32, and under bf16 autocast).
- warmup: pool warm-up images/s through synthaug's DDPM server (the class of the sweep's server actors),
  1 server against N side by side on one device, one process each.
- sharing: two DDPM trainings sharing one GPU (0.5 GPU each), one process each, their summed throughput
  against one alone (classifier trials share in the trials part).

Nothing here needs Ray or MLflow (a GPU machine may lack them): the processes stand in for Ray's.

Peak GPU memory is given for each. A part that fails is reported as failed and the others still run;
every row is kept the moment it is measured (--rows) and the run's section of BENCHMARKS.md rewritten,
so a run cut short keeps what it measured. Once every figure of the throughput row is in, the device's
row of the throughput table (what --dry-run divides by) is replaced.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

import plan_parts
from measure import device_name, device_type, idle_share, median_time, peak, random_images, reset_peak, synchronize
from plan_parts import FLOAT32, ddpm_rate, paper_unet
from suite import SIZES, Row, Suite, render, side_by_side
from synthaug.diffusion.ddpm import build_unet
from synthaug.diffusion.sampling import SamplerConfig, image_seed, sample
from synthaug.models.classifier import TrainConfig, Trainer, evaluate
from synthaug.sweep.cli import OneLineParser
from synthaug.training.benchmarks import COLUMNS, Throughput, default_path, write_run, write_throughput

PAPER_EPOCHS, PAPER_TRAIN, PAPER_TEST = 50, 50_000, 10_000     # one E4 trial of the paper preset
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ------------------------------------------------------------------------------------------------ parts


def classifier(suite: Suite) -> None:
    from baselines import LoaderTraining, PILImages      # torchvision: imported by the parts that use it only

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
        Row("classifier", f"synthaug Trainer, {FLOAT32}", fp32, "images/s", f"{fp32 / theirs:.2f}x {baseline}", fp32_peak))
    test_x, test_y = random_images(min(size.images, PAPER_TEST), seed=1)
    reset_peak(device)
    evaluating = len(test_y) / median_time(lambda: evaluate(trainer.model, test_x, test_y, 10, device), reps, device)
    trial_s = PAPER_EPOCHS * (PAPER_TRAIN / bf16 + PAPER_TEST / evaluating)
    suite.add(Row("classifier", "evaluation (synthaug, batch 1024)", evaluating, "images/s", "", peak(device)),
              Row("classifier", "one paper trial: 50 epochs x 50,000 images + 10,000 test images an epoch",
                  trial_s / 60, "min (projected)", "target < 3 min on an H100", None,
                  "from the bf16 row; the study recipe trains without augmentation, so a little faster"))


def idle(suite: Suite) -> None:
    from baselines import PerStepCopies

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
    unet, schedule = paper_unet(size, device)
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


def warmup(suite: Suite) -> None:
    from synthaug.config import GeneratorSpec
    from synthaug.diffusion.ddpm import save_generator
    from synthaug.generation.generators import PreparedGenerator
    from synthaug.generation.serving import replica_for

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
                  "synthaug.generation.server.DDPMServer, the class of the sweep's server actors, one a process; one timing "
                  "each (a pool is written once), shards written included"))


def sharing(suite: Suite) -> None:
    size, cuda = suite.size, device_type(suite.device) == "cuda"
    args = (dataclasses.replace(size.unet, batch_size=size.ddpm_batch), size.ddpm_steps, suite.reps, suite.device)
    [alone] = side_by_side(_ddpm_task, [args])
    together = side_by_side(_ddpm_task, [args, args])
    summed = sum(rate for rate, _ in together)
    suite.add(Row("sharing", "1 DDPM training alone", alone[0], "steps/s", "baseline", alone[1]),
              Row("sharing", f"2 DDPM trainings at once on one {'GPU' if cuda else 'machine'}, summed", summed,
                  "steps/s", f"{summed / alone[0]:.2f}x one alone", max((p or 0) for _, p in together) or None,
                  "each its own process, as Ray runs two of 0.5 GPU"))


def _serve_pools(prepared, spec, store: str, classes: list[int], n: int, device: str, barrier):
    """In a process: one DDPM server makes its classes' pools; (images made, start, end)."""
    from synthaug.generation.server import DDPMServer

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


def _ddpm_task(cfg, steps: int, reps: int, device: str, barrier) -> tuple[float, float | None]:
    """In a process: a DDPM training's steps; (steps/s, peak GiB)."""
    torch.set_num_threads(1)
    return ddpm_rate(cfg, steps, reps, device, False, barrier), peak(device)


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


PARTS = {"cuda": plan_parts.cuda, "trials": plan_parts.trials, "ddpm": plan_parts.ddpm, "evals": plan_parts.evals,
         "labeller": plan_parts.labeller, "classifier": classifier, "idle": idle, "sampling": sampling,
         "warmup": warmup, "sharing": sharing}
FIGURES = set(COLUMNS) - {"device", "size", "source"}      # the throughput row's numbers


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


def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="full", help="full: the study's models (a GPU); tiny: seconds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"a comma list of {', '.join(PARTS)} (default all)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default: the size's)")
    parser.add_argument("--out", default=str(default_path()), help="the BENCHMARKS.md to write (default the repo's)")
    parser.add_argument("--rows", help="a JSON-lines file of the run's rows, kept across stages (default: a new "
                                       "temporary one)")
    parser.add_argument("--started", help="the run's start, naming its section (stages of one run pass the same)")
    parser.add_argument("--no-plans", action="store_true", help="no dry-run rows (they need MLflow)")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts: names from {', '.join(PARTS)}, got {args.parts!r}")
    if args.size == "full" and device_type(args.device) != "cuda":
        parser.error("--size full: the study's models need a GPU (hours on a CPU); --size tiny checks every part "
                     "here in about a minute")
    size = SIZES[args.size]
    started = args.started or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from synthaug.core.provenance import code_commit

    commit, key = code_commit(), f"{device_name(args.device)} --size {size.name} {started}"
    rows_file = Path(args.rows) if args.rows else Path(tempfile.mkdtemp()) / "rows.jsonl"
    suite = Suite(size, args.device, args.reps or size.reps, rows_file)
    suite.on_row = lambda: write_run(args.out, key, render(suite, started, commit, finished=False))
    torch.set_num_threads(1 if device_type(args.device) == "cpu" else torch.get_num_threads())
    if device_type(args.device) != "cuda":
        # torch.profiler (the idle part) in a CUDA build asks for GPUs even when it profiles the CPU only, and
        # logs "ERROR: ... gpuGetDeviceCount failed" where there is no driver: Kineto's level 5 keeps that out
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")
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
    except KeyboardInterrupt:
        print("interrupted: the table keeps the parts measured so far")
        return 130
    if FIGURES <= set(suite.figures):
        write_throughput(args.out, Throughput(
            device=device_name(args.device), size=size.name, **{k: round(suite.figures[k], 4) for k in FIGURES},
            source=f"measured by bench/gpu_suite.py --size {size.name}, {started}, commit {commit[:12]}"))
        print(f"throughput row for {device_name(args.device)} ({size.name}) written to {args.out}")
        if not args.no_plans:
            suite.add(*plans(args.out, device_name(args.device), size.name))
    else:
        print(f"throughput row not written: no figure yet for {', '.join(sorted(FIGURES - set(suite.figures)))}")
    write_run(args.out, key, render(suite, started, commit, finished=True))
    print(f"{len(parts) - failed}/{len(parts)} parts measured; the table is in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
