"""The suite's parts that decide a sweep's plan, in the order bench/on_device.sh runs them on a first GPU:

- cuda: what needs real CUDA to check: a data-parallel DDPM training on the process group a GPU run makes
  (synthaug.diffusion.training.process_group_backend), the NCCL-only group of 41ad95a refusing the CPU
  tensor that crashed it, and the device a process with a zero GPU share and one with a GPU sees.
- trials: a trial's loop (train an epoch, evaluate the test split, write the checkpoint) for the study
  recipe (torchvision's stem, the paper preset's trials) and the strong one (CIFAR stem), one process
  alone, then 2 and 4 a GPU (each its own process, released together), cudnn.benchmark off and on.
- ddpm: the paper UNet's optimizer steps/s at batch 128 (float32; bf16; bf16 with channels_last, fused
  AdamW, both) and at 16, one worker's share of an 8-way data-parallel batch.
- evals: sampling throughput (UNet evaluations of one image a second) at two batch sizes.
- labeller: the pseudo-labeller's recipe (config.PAPER_LABELLER), cudnn.benchmark off and on.

Each sets the figures of the device's throughput row (synthaug.training.benchmarks.Throughput) it measures.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from measure import device_type, median_time, peak, random_images, reset_peak
from suite import Row, Suite, side_by_side
from synthaug.config import PAPER_LABELLER, RECIPES
from synthaug.diffusion.ddpm import build_unet
from synthaug.diffusion.sampling import SamplerConfig, image_seed, sample
from synthaug.models.classifier import TrainConfig, Trainer, evaluate


# ------------------------------------------------------------------------------------------------ cuda


def cuda(suite: Suite) -> None:
    gpu = device_type(suite.device) == "cuda"
    from synthaug.diffusion.training import process_group_backend

    backend = process_group_backend(use_gpu=gpu)
    [(steps, saved_at)] = side_by_side(_ddp_rank, [(suite.size, suite.device, backend)])
    suite.add(Row("cuda", f"DDP DDPM training, process group {backend!r}, 1 rank, a checkpoint due by the clock",
                  steps, "steps trained", "41ad95a: crashed at step 1 on NCCL", None,
                  f"checkpoint written at step {saved_at}"))
    if gpu:
        try:
            [refusal] = side_by_side(_nccl_only_refuses_cpu, [()])
        except RuntimeError as err:         # refused as early as the group's making
            refusal = str(err)
        suite.add(Row("cuda", "41ad95a's group ('nccl' only): broadcasting a CPU tensor", float(bool(refusal)),
                      "refused (1 = yes)", "", None, refusal[:160]))
    seen = side_by_side(_device_seen, [(), ()], env=[{"CUDA_VISIBLE_DEVICES": ""}, {}])
    for (label, (chosen, count, name)) in zip(("CUDA_VISIBLE_DEVICES='' (a zero GPU share)", "the GPU left visible"),
                                             seen):
        suite.add(Row("cuda", f"a process under {label}: devices it sees", count, "GPUs", "", None,
                      f"synthaug.core.devices.default_device() = {chosen}; {name}"))


def _ddp_rank(size, device: str, backend: str, barrier):
    import numpy as np
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from synthaug.diffusion.training import Checkpointing, DDPMTraining, gather_rng_states

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group(backend, rank=0, world_size=1)
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
    try:
        cfg = dataclasses.replace(size.unet, train_steps=6, batch_size=8)
        x = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
        training = DDPMTraining(cfg, x, None, seed=0, device=device, world_size=1, wrap=lambda m: DistributedDataParallel(
            m, device_ids=[device.index or 0] if device.type == "cuda" else None))

        barrier.wait()
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = Path(folder) / "ckpt.pt"
            training.run(checkpoint, Checkpointing(every_steps=1000, every_seconds=1e-9, log_every=2),
                         gather_rng=gather_rng_states)
            saved = torch.load(checkpoint, weights_only=True)["step"] if checkpoint.exists() else None
        return float(training.step), saved
    finally:
        dist.destroy_process_group()


def _nccl_only_refuses_cpu(barrier) -> str:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1)
    barrier.wait()
    try:
        dist.broadcast(torch.tensor([1]), src=0)
        return ""
    except Exception as err:                # noqa: BLE001 - the refusal is the figure
        return f"{type(err).__name__}: {err}"
    finally:
        dist.destroy_process_group()


def _device_seen(barrier):
    from synthaug.core.devices import default_device

    chosen = default_device()
    count = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0) if count else "no CUDA device"
    if chosen == "cuda":
        torch.zeros(1, device=chosen)
        name += f", initialised cuda:{torch.cuda.current_device()}"
    barrier.wait()
    return chosen, float(count), name


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- trials


def recipe_config(recipe: str, size, epochs: int) -> TrainConfig:
    """A trial's TrainConfig at the suite's size with a recipe's fields (config.RECIPES)."""
    return dataclasses.replace(TrainConfig(epochs=epochs, batch_size=size.batch, width=size.width), **RECIPES[recipe])


def trials(suite: Suite) -> None:
    size, gpu = suite.size, device_type(suite.device) == "cuda"
    where = "GPU" if gpu else "machine"
    alone = {}
    for recipe in ("strong", "study"):
        alone[recipe] = _trial_rates(suite, recipe_config(recipe, size, suite.reps + 1), 1, False)[0]
        rate, eval_s, ckpt_s, ckpt_bytes, peak_gib = alone[recipe]
        stem = RECIPES[recipe]["stem"]
        suite.figure(f"{stem}_images", rate)
        if recipe == "study":       # the paper preset's trials: their evaluation, checkpoint, and sharing
            suite.figure("eval_images", size.test_images / eval_s)
            suite.figure("checkpoint_mib_s", ckpt_bytes / 2**20 / ckpt_s)
            suite.figure("trials_per_gpu", 1.0)
            suite.figure("sharing_speedup", 1.0)
        suite.add(Row("trials", f"recipe {recipe} ({stem} stem), 1 trial alone: training", rate, "images/s",
                      "baseline", peak_gib, f"batch {size.batch}, {size.trial_images:,} images an epoch"),
                  Row("trials", f"recipe {recipe}: evaluating {size.test_images:,} test images an epoch", eval_s, "s",
                      f"{size.test_images / eval_s:,.0f} images/s"),
                  Row("trials", f"recipe {recipe}: writing the epoch's checkpoint", ckpt_s, "s",
                      f"{ckpt_bytes / 2**20:.1f} MiB, {ckpt_bytes / 2**20 / ckpt_s:,.0f} MiB/s", None,
                      "Trainer.state_dict() to the host, torch.save to a local file"))
    study = recipe_config("study", size, suite.reps + 1)
    if gpu:                 # cuDNN's autotuner: nothing to turn on on a CPU
        benchmarked = _trial_rates(suite, study, 1, True)[0][0]
        suite.add(Row("trials", "recipe study, 1 trial alone, cudnn.benchmark on", benchmarked, "images/s",
                      f"{benchmarked / alone['study'][0]:.2f}x off"))
    summed = {1: alone["study"][0]}
    for count in size.shares[1:]:
        results = _trial_rates(suite, study, count, False)
        summed[count] = sum(r[0] for r in results)
        suite.add(Row("trials", f"recipe study, {count} trials at once on one {where}, summed", summed[count],
                      "images/s", f"{summed[count] / summed[1]:.2f}x one alone", max((r[4] or 0) for r in results) or None,
                      "each its own process, as Ray runs trials of 1/N GPU; epochs with evaluation and checkpoint"))
        best = max(summed, key=summed.get)
        suite.figure("trials_per_gpu", float(best))
        suite.figure("sharing_speedup", summed[best] / summed[1])


def _trial_rates(suite: Suite, cfg: TrainConfig, count: int, cudnn_benchmark: bool, images: int = 0) -> list[tuple]:
    args = (cfg, images or suite.size.trial_images, suite.size.test_images, suite.reps, suite.device, cudnn_benchmark)
    return side_by_side(_trial_task, [args] * count)


def _trial_task(cfg: TrainConfig, n: int, test_n: int, reps: int, device: str, cudnn_benchmark: bool, barrier):
    """In a process: a trial's epochs as trial.py runs them; (training images/s, evaluation s, checkpoint s,
    checkpoint bytes, peak GiB), each a median over `reps` epochs after a warm-up epoch."""
    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    x, y = random_images(n)
    test_x, test_y = random_images(test_n, seed=1)
    trainer = Trainer(cfg, x, y, 10, seed=0, device=device, progress=False)
    trainer.train_epoch()
    evaluate(trainer.model, test_x, test_y, 10, device)
    barrier.wait()
    train_s, eval_s, ckpt_s = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(reps):
            train_s.append(trainer.train_epoch()["epoch_time_s"])
            start = time.perf_counter()
            evaluate(trainer.model, test_x, test_y, 10, device)
            eval_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            torch.save(trainer.state_dict(), Path(folder) / "trainer.pt")
            ckpt_s.append(time.perf_counter() - start)
        ckpt_bytes = (Path(folder) / "trainer.pt").stat().st_size
    return (n / statistics.median(train_s), statistics.median(eval_s), statistics.median(ckpt_s), ckpt_bytes,
            peak(device))


def labeller(suite: Suite) -> None:
    cfg = dataclasses.replace(PAPER_LABELLER, epochs=suite.reps + 1, width=suite.size.width,
                              batch_size=suite.size.batch)
    settings = (False, True) if device_type(suite.device) == "cuda" else (False,)     # no cuDNN on a CPU
    rates = {on: _trial_rates(suite, cfg, 1, on, suite.size.images)[0][0] for on in settings}
    suite.add(Row("labeller", "the labeller's recipe (CIFAR stem, crop and flip), cudnn.benchmark off", rates[False],
                  "images/s", "baseline"))
    if True in rates:
        suite.add(Row("labeller", "the labeller's recipe, cudnn.benchmark on", rates[True], "images/s",
                      f"{rates[True] / rates[False]:.2f}x off"))


# ------------------------------------------------------------------------------------------------ ddpm

FLOAT32 = "float32 (TF32 convolutions on a GPU, cuDNN's default)"


def ddpm(suite: Suite) -> None:
    size, device, reps = suite.size, suite.device, suite.reps
    variants = {FLOAT32: dict(autocast=False), "bf16 autocast": dict(autocast=True),
                "bf16, channels_last": dict(autocast=True, channels_last=True),
                "bf16, fused AdamW": dict(autocast=True, fused_adamw=True),
                "bf16, channels_last, fused AdamW": dict(autocast=True, channels_last=True, fused_adamw=True)}
    if device_type(device) == "cpu":       # a sweep on CPUs trains float32 (DDPMTraining's default): only that
        variants = {FLOAT32: variants[FLOAT32]}
    big = dataclasses.replace(size.unet, batch_size=size.ddpm_batch)
    rates = {}
    for label, options in variants.items():
        reset_peak(device)
        rates[label] = ddpm_rate(big, size.ddpm_steps, reps, device, **options)
        against = "baseline" if label == FLOAT32 else f"{rates[label] / rates[FLOAT32]:.2f}x float32" + (
            "" if label == "bf16 autocast" else f", {rates[label] / rates['bf16 autocast']:.2f}x bf16")
        suite.add(Row("ddpm", f"DDPM training at batch {size.ddpm_batch}, {label}", rates[label], "steps/s", against,
                      peak(device), f"100,000 paper steps: {100_000 / rates[label] / 3600:.2f} h"))
        best = max(rates, key=rates.get)        # the training's default follows this (float32 on an H200)
        suite.figure("ddpm_steps", rates[best])
    small = dataclasses.replace(size.unet, batch_size=size.ddpm_small_batch)
    reset_peak(device)
    small_rate = ddpm_rate(small, size.ddpm_steps, reps, device, **variants[best])
    speedup = small_rate / rates[best]
    suite.add(Row("ddpm", f"DDPM training at batch {size.ddpm_small_batch} ({best}): one worker of "
                          f"{size.ddpm_batch // size.ddpm_small_batch}-way DDP", small_rate, "steps/s",
                  f"{speedup:.2f}x the steps/s at {size.ddpm_batch}", peak(device),
                  f"{size.ddpm_batch // size.ddpm_small_batch} GPUs at most {speedup:.1f}x one (all-reduce not counted)"))
    suite.figure("ddpm_small_steps", small_rate)


def ddpm_rate(cfg, steps: int, reps: int, device: str, autocast: bool, barrier=None, **options) -> float:
    """Optimizer steps/s of a DDPM training: a median of `reps` runs of `steps` steps after a warm-up."""
    from synthaug.diffusion.training import DDPMTraining

    training = DDPMTraining(cfg, random_images(1024)[0], None, seed=0, device=device, autocast=autocast, **options)
    training.train_step()
    if barrier is not None:
        barrier.wait()
    return steps / median_time(lambda: [training.train_step() for _ in range(steps)], reps, device)


# ----------------------------------------------------------------------------------------------- evals


def paper_unet(size, device: str):
    """The size's UNet with fixed random weights in eval mode, and its noise schedule (sampling speed does not
    depend on the weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = build_unet(size.unet).to(device).eval()
    return unet, {"num_train_timesteps": size.unet.num_train_timesteps, "beta_schedule": size.unet.beta_schedule}


def evals(suite: Suite) -> None:
    size, device, reps = suite.size, suite.device, suite.reps
    unet, schedule = paper_unet(size, device)
    name, steps = size.samplers[0]
    images = max(size.sample_batches)
    seeds = [image_seed("gpu-suite", k) for k in range(images)]
    rates = {}
    for batch in size.sample_batches:
        reset_peak(device)
        seconds = median_time(lambda: sample(unet, SamplerConfig(name=name, steps=steps), seeds, None, device,
                                             batch_size=batch, progress=False, scheduler_config=schedule), reps, device)
        rates[batch] = images * steps / seconds
        first = size.sample_batches[0]
        suite.add(Row("evals", f"sampling {name.upper()} {steps} steps at batch {batch}, bf16 on a GPU", rates[batch],
                      "UNet image evals/s", "baseline" if batch == first else f"{rates[batch] / rates[first]:.2f}x "
                      f"batch {first}", peak(device), f"{images} images, {images * steps / seconds / steps:,.0f} images/s"))
    suite.figure("unet_image_evals", rates[size.sample_batch] if size.sample_batch in rates else rates[first])
