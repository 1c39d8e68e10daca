"""Resumable DDPM training: one process or data-parallel ranks, checkpointed atomically.

A DDPMTraining owns the network, its EMA, the optimiser, the data on the device and one
torch.Generator that draws every batch, flip, timestep and noise. The generator draws the
*global* batch (cfg.batch_size images) on every rank and each rank takes its slice, so N
data-parallel ranks see exactly the batches, flips, timesteps and noise one process would: the
effective batch and the learning rate stay the recipe's. Dropout is not shared: each rank draws
its masks from its own global torch RNG, so with dropout > 0 (the paper UNet's 0.3) a 2-rank run
is statistically equivalent to the 1-rank run, not equal to it, on any device; with dropout 0 it
is the 1-rank run up to the order of float additions in the gradient all-reduce.

Resuming. `state_dict()` holds the weights, the EMA, the optimiser, the step, the batch
generator and the global torch RNG of every rank (dropout draws from it); `run()` writes it
atomically every `every_steps` optimiser steps and at least every `every_seconds`, and a
new DDPMTraining that loads it continues at that step: on the CPU the final weights are
bitwise those of an uninterrupted run (tests/test_generator_training.py). On CUDA they are
statistically equivalent: cuDNN and cuBLAS choose kernels per shape and GPU model and some
backward kernels add in no fixed order (SYNTHAUG_DETERMINISTIC=1 asks for deterministic ones,
synthaug/core/devices.py, "What is bitwise where").

Precision. float32 unless `autocast` is True (bf16 autocast, on the CPU too, so the tests run that
path here). On an H200 the paper UNet trained 1.15x faster in float32 (TF32 convolutions, cuDNN's
default) than under bf16 autocast at batch 128 (BENCHMARKS.md): its step is bound by kernel launches
(about 3,700 a step, the GPU busy 64 ms of 150), and autocast adds a cast of every weight a step.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from synthaug.core.devices import bf16_autocast, cpu_copy, host_tensor
from synthaug.core.files import atomic_torch_save
from synthaug.core.rules import Rule, check, is_int, is_number
from synthaug.diffusion.ddpm import (ADAMW_WEIGHT_DECAY, GRAD_CLIP_NORM, IMAGE_SHAPE, DDPMConfig, build_unet,
                                     noise_scheduler)

if TYPE_CHECKING:
    from diffusers import UNet2DModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpointing:
    """When a training job writes its checkpoint and tells its logger. Not part of what a
    generator is: changing these never changes its weights."""

    every_steps: int = 1000         # a checkpoint every N optimiser steps...
    every_seconds: float = 600.0    # ...and at least every 10 minutes, whatever N is
    log_every: int = 50             # loss and images/s every N steps
    grid_every: int = 5000          # a sample grid every N steps (and always at the end)

    def validate(self, prefix: str = "checkpointing") -> None:
        """Raise ConfigError("<prefix>.<field>: <what is allowed>, got <value>") on the first bad field."""
        check(self, prefix, [
            Rule("every_steps", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
            Rule("every_seconds", lambda v: is_number(v) and v > 0, "a number of seconds > 0"),
            Rule("log_every", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
            Rule("grid_every", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        ])


class DDPMTraining:
    """One rank's share of a DDPM training run; world_size 1 is a plain single-process run."""

    def __init__(self, cfg: DDPMConfig, images: np.ndarray, labels: np.ndarray | None, seed: int,
                 device: torch.device | str, rank: int = 0, world_size: int = 1, autocast: bool | None = None,
                 wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None, channels_last: bool = False,
                 fused_adamw: bool = False):
        cfg.validate()
        if cfg.batch_size % world_size:
            raise ValueError(f"ddpm.batch_size: a multiple of the {world_size} data-parallel workers, "
                             f"got {cfg.batch_size}")
        self.cfg, self.seed, self.rank, self.world_size = cfg, seed, rank, world_size
        self.device = torch.device(device)
        self.autocast = bool(autocast)
        self.x, self.y = _training_tensors(cfg, images, labels, self.device)
        with torch.random.fork_rng(devices=[]):  # the initial weights, without touching the caller's RNG
            torch.manual_seed(seed)
            self.model = build_unet(cfg).to(self.device)
        # speed options the GPU suite times (bench/gpu_suite.py, part ddpm): neither changes the recipe
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.network = wrap(self.model) if wrap else self.model     # DDP's wrapper, when data-parallel
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=ADAMW_WEIGHT_DECAY,
                                           fused=fused_adamw or None)
        self.scheduler = noise_scheduler(cfg.num_train_timesteps, cfg.beta_schedule)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.step = 0

    @property
    def local_batch(self) -> int:
        return self.cfg.batch_size // self.world_size

    def train_step(self) -> torch.Tensor:
        """One optimiser step on this rank's slice of the global batch; the (detached) local loss."""
        cfg, gen, n = self.cfg, self.gen, self.cfg.batch_size
        idx = torch.randint(0, self.x.shape[0], (n,), device=self.device, generator=gen)
        x0 = _to_model_range(self.x[idx], flip=cfg.horizontal_flip, generator=gen)
        noise = torch.randn(x0.shape, device=self.device, generator=gen)
        t = torch.randint(0, cfg.num_train_timesteps, (n,), device=self.device, generator=gen)
        mine = slice(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)
        x0, noise, t = x0[mine], noise[mine], t[mine]
        y = self.y[idx][mine] if self.y is not None else None
        self.model.train()
        xt = self.scheduler.add_noise(x0, noise, t).contiguous(memory_format=self.memory_format)
        with bf16_autocast(self.device, self.autocast):
            pred = self.network(xt, t, class_labels=y).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP_NORM)
        self.optimizer.step()
        _ema_update(self.ema, self.model, ema_decay_at(self.step, cfg.ema_decay))
        self.step += 1
        return loss.detach()

    def state_dict(self, rng_states: list[dict] | None = None) -> dict:
        """Everything a resume needs, as CPU tensors. rng_states: every rank's global RNG, in rank
        order (data-parallel); by default this process's."""
        return {
            "model": cpu_copy(self.model.state_dict()),
            "ema": cpu_copy(self.ema.state_dict()),
            "optimizer": cpu_copy(self.optimizer.state_dict()),
            "generator": self.gen.get_state(),
            "rng": rng_states if rng_states is not None else [rng_state()],
            "step": self.step,
            "seed": self.seed,
            "world_size": self.world_size,
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != self.cfg.to_dict() or state["seed"] != self.seed:
            raise ValueError("checkpoint: made for another DDPM recipe or seed")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        if len(state["rng"]) == self.world_size:      # the same ranks: each takes its own RNG back
            set_rng_state(state["rng"][self.rank])
        self.step = state["step"]

    def run(self, checkpoint: Path | None, policy: Checkpointing,
            on_log: Callable[[int, dict], None] | None = None,
            on_grid: Callable[[int, UNet2DModel], None] | None = None,
            gather_rng: Callable[[], list[dict]] | None = None,
            progress: bool = False) -> UNet2DModel:
        """Train from the checkpoint (if any) to cfg.train_steps; return the EMA network in eval mode.

        Only rank 0 writes the checkpoint and calls on_log and on_grid; gather_rng (every rank calls
        it, collectively) returns every rank's RNG state for the checkpoint."""
        from tqdm.auto import tqdm

        leader = self.rank == 0
        # Dropout draws from the global RNG: inside the fork it is a function of the seed and the rank
        # (and, resumed, of the checkpoint), and the caller's RNG is left as it was.
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed * 1_000 + self.rank)
            if checkpoint is not None and checkpoint.exists():
                self.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
                if leader:
                    print(f"ddpm: resuming at step {self.step} of {self.cfg.train_steps} from {checkpoint}", flush=True)
            total = self.cfg.train_steps
            bar = tqdm(total=total, initial=self.step, desc="ddpm train", disable=not (progress and leader))
            last_save, losses, since = time.monotonic(), [], time.perf_counter()
            while self.step < total:
                losses.append(self.train_step())
                bar.update(1)
                at = self.step
                if at % policy.log_every == 0 or at == total:
                    mean = torch.stack(losses).mean().item()
                    seconds = time.perf_counter() - since
                    if leader and on_log:
                        on_log(at, {"loss": mean, "images_per_s": len(losses) * self.cfg.batch_size / seconds,
                                    "steps_per_s": len(losses) / seconds})
                    bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
                    losses, since = [], time.perf_counter()
                if leader and on_grid and at % policy.grid_every == 0 and at < total:
                    on_grid(at, self.ema)
                # The step rule is the same on every rank; the wall-clock rule is rank 0's, agreed at log
                # steps only (one small collective every log_every steps, not one a step).
                due = at % policy.every_steps == 0 or (at % policy.log_every == 0 and _agree(
                    time.monotonic() - last_save >= policy.every_seconds, self.world_size))
                if checkpoint is not None and at < total and due:
                    states = gather_rng() if gather_rng else None
                    if leader:
                        atomic_torch_save(self.state_dict(states), checkpoint)
                    last_save = time.monotonic()
            bar.close()
        return self.ema.eval()


def train_ddpm(cfg: DDPMConfig, images: np.ndarray, labels: np.ndarray | None, seed: int,
               device: torch.device | str, progress: bool = True,
               on_step: Callable[[int, float], None] | None = None, autocast: bool | None = None) -> UNet2DModel:
    """Train a DDPM on uint8 NHWC images in one go, no checkpoint; return its EMA weights in eval mode.

    labels (ints in [0, num_classes)) are required when cfg.conditional and ignored otherwise.
    The seed fixes the initial weights, the batches, flips, timesteps and noise, so two runs on
    CPU give the same weights. on_step(step, loss) is called after every optimiser step."""
    training = DDPMTraining(cfg, images, labels, seed, device, autocast=autocast)
    policy = Checkpointing(log_every=1) if on_step else Checkpointing(log_every=50)
    hook = (lambda step, m: on_step(step - 1, m["loss"])) if on_step else None
    return training.run(None, policy, on_log=hook, progress=progress)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay warmed up from 0.1, so a few hundred steps already give a usable average."""
    return min(decay, (1 + step) / (10 + step))


def rng_state() -> dict:
    """This process's global torch RNG (CPU, and CUDA when there is one): dropout draws from it."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def gather_rng_states() -> list[dict]:
    """Every rank's rng_state(), in rank order (a collective of the default process group: every rank calls
    it); what DDPMTraining.run's gather_rng gives a data-parallel checkpoint."""
    import torch.distributed as dist

    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, rng_state())
    return states


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def process_group_backend(use_gpu: bool) -> str:
    """The torch.distributed backend of a data-parallel generator training. On GPUs NCCL carries the
    gradients and gloo the few host-side collectives (the checkpoint agreement, every rank's RNG state
    for the checkpoint): an NCCL-only group refuses a CPU tensor ("No backend type associated with
    device type cpu")."""
    return "cpu:gloo,cuda:nccl" if use_gpu else "gloo"


def _agree(flag: bool, world_size: int) -> bool:
    """True on every rank if it is True on rank 0 (the wall-clock rule differs between ranks); a CPU
    collective, served by process_group_backend's gloo half."""
    if world_size == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)])
    dist.broadcast(t, src=0)
    return bool(t.item())


def _training_tensors(cfg: DDPMConfig, images: np.ndarray, labels: np.ndarray | None,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images as uint8 NCHW on the device (augmentation happens there); labels as int64."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"images: uint8 array (N, 32, 32, 3), got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError("images: at least one image, got none")
    x = host_tensor(images).to(device).permute(0, 3, 1, 2).contiguous()
    if not cfg.conditional:
        return x, None
    if labels is None or len(labels) != len(images):
        raise ValueError(f"labels: one per image for a conditional DDPM, got {None if labels is None else len(labels)}")
    y = host_tensor(labels).to(device=device, dtype=torch.int64)     # a read-only array is copied, not warned about
    if y.min() < 0 or y.max() >= cfg.num_classes:
        raise ValueError(f"labels: ints in [0, {cfg.num_classes}), got range [{int(y.min())}, {int(y.max())}]")
    return x, y


def _to_model_range(x: torch.Tensor, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """uint8 NCHW -> float in [-1, 1], each image flipped left-right with probability 1/2."""
    x = x.float() / 127.5 - 1.0
    if flip:
        mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
