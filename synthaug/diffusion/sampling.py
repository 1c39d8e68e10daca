"""Sampling a DDPM with a diffusers scheduler, one seed per image.

Image k of a pool is drawn from its own seed, image_seed(pool_id, k): its initial noise
comes from a CPU torch.Generator seeded with it, and so does every later noise draw
(DDPM ancestral steps, DDIM with eta > 0), through the list-of-generators form of
scheduler.step. An image's draws therefore depend only on its seed, its class and the network,
not on the batch it was generated in or on the device, which is what lets a pool be an endless,
nested sequence (DESIGN.md, "Nested pools"). Its bytes depend on float rounding too: on the
CPU a batch of another size may move a pixel by one level (tests/test_diffusion.py); on CUDA,
kernels chosen per shape and GPU model and bf16 autocast round otherwise, so the device type and
precision are part of a pool's identity (synthaug/pools/store.py).

DDIM (eta = 0) is the default: deterministic given the initial noise and about ten times
fewer network calls than the 1000-step DDPM chain for similar CIFAR sample quality.
DPM-Solver++ (2M, diffusers' DPMSolverMultistepScheduler) is deterministic too and reaches
DDIM's quality in fewer steps (about 20); it keeps the previous step's output, so each chain
starts from a reset scheduler.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from synthaug.core.devices import bf16_autocast
from synthaug.core.rules import Rule, check, is_int, is_number

if TYPE_CHECKING:       # diffusers takes seconds to import: only sampling needs it, not a configuration
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

# name -> (diffusers scheduler class, the arguments that make it that sampler, its default steps: None = the
# generator's whole training chain). DDIM's CIFAR-10 quality is close to the full chain's at 100 steps;
# DPM-Solver++ reaches it in about 20.
SAMPLERS = {"ddim": ("DDIMScheduler", {}, 100), "ddpm": ("DDPMScheduler", {}, None),
            "dpmpp-2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, 20)}
SEED_BITS = 63  # seeds in [0, 2**63): any torch.Generator accepts them, and so does a signed int64


@dataclass(frozen=True)
class SamplerConfig:
    """How a pool's images are drawn from a generator."""

    name: str = "ddim"  # "ddim" (fast, deterministic at eta 0), "ddpm" (ancestral, as trained) or "dpmpp-2m"
    steps: int | None = None  # None: the sampler's default in SAMPLERS (ddim 100, dpmpp-2m 20, ddpm all)
    eta: float = 0.0  # DDIM's eta: 0 deterministic given the initial noise, 1 DDPM-like

    def validate(self, prefix: str = "sampler") -> None:
        """Raise ConfigError("<prefix>.<field>: <what is allowed>, got <value>") on the first bad field."""
        check(self, prefix, [
            Rule("name", lambda v: v in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
            Rule("steps", lambda v: v is None or (is_int(v) and v >= 1), "an int >= 1 or None"),
            Rule("eta", lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
            Rule("eta", lambda v: self.name == "ddim" or v == 0, f"0 for {self.name} (eta is DDIM's)"),
        ])

    def resolved(self, num_train_timesteps: int) -> "SamplerConfig":
        """The same sampler with steps filled in: what a pool's identity should hash."""
        self.validate()
        if self.steps is not None:
            return self
        return replace(self, steps=SAMPLERS[self.name][2] or num_train_timesteps)


def image_seed(pool_id: str, index: int) -> int:
    """The seed of image `index` of pool `pool_id`: sha256(f"{pool_id}:{index}") in [0, 2**63)."""
    digest = hashlib.sha256(f"{pool_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def build_scheduler(
    scheduler_cfg: SamplerConfig,
    num_train_timesteps: int = 1000,
    beta_schedule: str = "linear",
    scheduler_config: dict | None = None,
) -> DDIMScheduler | DDPMScheduler | DPMSolverMultistepScheduler:
    """The sampler's scheduler with its timesteps set.

    The noise schedule is the generator's: scheduler_config (a stored scheduler_config.json,
    see ddpm.load_scheduler_config) when given, else num_train_timesteps and beta_schedule.
    """
    import diffusers

    scheduler_cfg.validate()
    class_name, options, _ = SAMPLERS[scheduler_cfg.name]
    cls = getattr(diffusers, class_name)
    if scheduler_config is not None:
        scheduler = cls.from_config(scheduler_config, **options)
    else:
        scheduler = cls(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, **options)
    steps = scheduler_cfg.resolved(scheduler.config.num_train_timesteps).steps
    if steps > scheduler.config.num_train_timesteps:
        raise ValueError(
            f"sampler.steps: at most the generator's {scheduler.config.num_train_timesteps} timesteps, got {steps}"
        )
    scheduler.set_timesteps(steps)
    return scheduler


def sample(
    unet: UNet2DModel,
    scheduler_cfg: SamplerConfig,
    seeds: Sequence[int],
    class_labels: Sequence[int] | None,
    device: torch.device | str,
    batch_size: int = 256,
    progress: bool = True,
    num_train_timesteps: int = 1000,
    beta_schedule: str = "linear",
    scheduler_config: dict | None = None,
    autocast: bool | None = None,
) -> np.ndarray:
    """Draw one image per seed; return them as uint8 NHWC (len(seeds), 32, 32, 3).

    class_labels (one per seed) are required for a class-conditional network and refused
    for an unconditional one. Images are generated batch_size at a time; the result does
    not depend on batch_size beyond float rounding. The noise schedule: see build_scheduler. autocast: bf16 autocast
    (None: on CUDA only; synthaug.core.devices).
    """
    device = torch.device(device)
    labels = _check_labels(unet, seeds, class_labels)
    scheduler = build_scheduler(scheduler_cfg, num_train_timesteps, beta_schedule, scheduler_config)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size: an int >= 1, got {batch_size!r}")
    was_training = unet.training
    unet.eval()
    n_batches = -(-len(seeds) // batch_size)
    bar = tqdm(total=n_batches * len(scheduler.timesteps), desc="sample", disable=not progress)
    out = []
    try:
        for start in range(0, len(seeds), batch_size):
            chunk = slice(start, start + batch_size)
            y = labels[chunk].to(device) if labels is not None else None
            out.append(_sample_batch(unet, scheduler, scheduler_cfg.eta, seeds[chunk], y, device, bar, autocast))
    finally:
        bar.close()
        unet.train(was_training)
    if not out:
        return np.zeros((0, 32, 32, 3), dtype=np.uint8)
    return np.concatenate(out)


def _check_labels(unet: UNet2DModel, seeds: Sequence[int], class_labels: Sequence[int] | None) -> torch.Tensor | None:
    num_classes = unet.config.num_class_embeds
    if num_classes is None:
        if class_labels is not None:
            raise ValueError("class_labels: None for an unconditional generator, got labels")
        return None
    if class_labels is None or len(class_labels) != len(seeds):
        got = None if class_labels is None else f"{len(class_labels)} labels"
        raise ValueError(f"class_labels: one per seed ({len(seeds)}) for a conditional generator, got {got}")
    labels = torch.as_tensor(np.asarray(class_labels), dtype=torch.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"class_labels: ints in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    return labels


@torch.inference_mode()
def _sample_batch(
    unet: UNet2DModel,
    scheduler: DDIMScheduler | DDPMScheduler,
    eta: float,
    seeds: Sequence[int],
    y: torch.Tensor | None,
    device: torch.device,
    bar: tqdm,
    autocast: bool | None = None,
) -> np.ndarray:
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x = reverse_chain(scheduler, eta, seeds, shape, device, lambda x, t: unet(x, t, class_labels=y).sample, bar,
                      autocast)
    return to_uint8(x)


def reverse_chain(
    scheduler: DDIMScheduler | DDPMScheduler,
    eta: float,
    seeds: Sequence[int],
    shape: tuple[int, int, int],
    device: torch.device,
    predict_noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    bar: tqdm | None = None,
    autocast: bool | None = None,
) -> torch.Tensor:
    """Run the sampler from noise to x_0 for one batch, one image a seed. Every noise draw (the
    start and each stochastic step) comes from the image's own generator, so an image does not
    depend on its batch. predict_noise(x_t, t) is the model's epsilon, run under bf16 autocast on CUDA
    (or wherever `autocast` forces it)."""
    scheduler.set_timesteps(len(scheduler.timesteps))    # a multistep solver starts each chain afresh
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    x = torch.cat([torch.randn((1, *shape), generator=g) for g in generators]).to(device)
    x = x * scheduler.init_noise_sigma
    from diffusers import DDIMScheduler

    step_kwargs = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
    on_device = scheduler.timesteps.to(device)          # one copy for the chain, not one a step
    for t, t_device in zip(scheduler.timesteps, on_device):
        with bf16_autocast(device, autocast):
            eps = predict_noise(scheduler.scale_model_input(x, t), t_device)
        x = scheduler.step(eps.float(), t, x, generator=generators, **step_kwargs).prev_sample
        if bar is not None:
            bar.update()
    return x


class NonFiniteSamples(ValueError):
    """A generator produced NaN or infinite values (broken weights, an overflow): never made into images."""

    def __init__(self, count: int, total: int):
        super().__init__(f"{count} of {total} images have NaN or infinite values")
        self.count, self.total = count, total


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model-range NCHW floats in [-1, 1] -> uint8 NHWC; NonFiniteSamples when any value is NaN or
    infinite (clamping would turn NaN into black pixels and hide it)."""
    bad = int((~torch.isfinite(x.float())).flatten(1).any(1).sum())
    if bad:
        raise NonFiniteSamples(bad, len(x))
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
