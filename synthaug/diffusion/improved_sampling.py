"""Sampling improved-diffusion's released models: their noise schedule, learned variances and respacing.

    flags = ReleasedFlags()                                 # what the .pt file does not hold (its README's flags)
    model, shape = load_released("cifar10_uncond_50M_500K.pt", "cuda")   # synthaug.diffusion.improved_unet
    images = sample_released(model, shape, flags, SamplerConfig("ddpm", steps=250), seeds, None, "cuda")

Mirrors openai/improved-diffusion (commit 1bc7bbb): the beta schedules of gaussian_diffusion.py
(get_named_beta_schedule, betas_for_alpha_bar), its p_mean_variance and p_sample for an epsilon model
with LEARNED_RANGE variances (FIXED_LARGE for a file without learn_sigma) and clipped x_0, and
respace.py's space_timesteps / SpacedDiffusion (the chain's betas recomputed over the kept steps, the
model shown the original step, rescaled to 0..1000 when the file was trained with rescale_timesteps).
The sampler "ddpm" is that ancestral chain, respaced to sampler.steps; "ddim" and "dpmpp-2m" are the
project's diffusers schedulers (synthaug.diffusion.sampling) on the same betas and the model's epsilon.
Every noise draw comes from the image's own generator, as in synthaug.diffusion.sampling, so an image
does not depend on its batch. A 64x64 model's images are averaged down to 32x32 (area: 2x2 boxes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synthaug.core.devices import bf16_autocast
from synthaug.core.rules import Rule, check, is_int
from synthaug.diffusion.sampling import SamplerConfig, build_scheduler, reverse_chain, to_uint8

NOISE_SCHEDULES = ("cosine", "linear")     # gaussian_diffusion.get_named_beta_schedule's
SIZE = 32


@dataclass(frozen=True)
class ReleasedFlags:
    """What an improved-diffusion file was trained with that its state_dict does not hold: the README's
    DIFFUSION_FLAGS (and num_heads of MODEL_FLAGS). Defaults: the CIFAR-10 file's (cifar10_uncond_50M_500K.pt)."""

    diffusion_steps: int = 4000         # every released 32x32 and 64x64 model
    noise_schedule: str = "cosine"      # the released CIFAR-10 and ImageNet-64 files; "linear" is scaled to the steps
    # the model sees t x 1000 / diffusion_steps (script_util's default, the CIFAR-10 file); the ImageNet-64
    # class-conditional file was trained with --rescale_timesteps False: it sees t itself
    rescale_timesteps: bool = True
    num_heads: int = 4                  # attention heads (not visible in the weights); 4 in every 32/64 model

    def validate(self, prefix: str = "released") -> None:
        check(self, prefix, [
            Rule("diffusion_steps", lambda v: is_int(v) and v >= 2, "an int >= 2"),
            Rule("noise_schedule", lambda v: v in NOISE_SCHEDULES, f"one of {', '.join(NOISE_SCHEDULES)}"),
            Rule("rescale_timesteps", lambda v: isinstance(v, bool), "a bool"),
            Rule("num_heads", lambda v: is_int(v) and v >= 1, "an int >= 1"),
        ])


def named_betas(schedule: str, steps: int) -> np.ndarray:
    """gaussian_diffusion.get_named_beta_schedule: Ho et al.'s linear one scaled to `steps`, or the cosine one."""
    if schedule == "linear":
        scale = 1000 / steps
        return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)
    if schedule == "cosine":
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)])
    raise ValueError(f"noise_schedule: one of {', '.join(NOISE_SCHEDULES)}, got {schedule!r}")


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """respace.space_timesteps with one section: `count` of the steps, evenly strided, first and last kept."""
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"sampler.steps: 1 to the file's {num_timesteps} diffusion steps, got {count}")
    stride, at, kept = 1 if count <= 1 else (num_timesteps - 1) / (count - 1), 0.0, set()
    for _ in range(count):          # upstream's accumulation, so its rounding too
        kept.add(round(at))
        at += stride
    return sorted(kept)


class SpacedChain:
    """The reverse chain over the kept steps of the file's schedule (respace.SpacedDiffusion + p_mean_variance)."""

    def __init__(self, flags: ReleasedFlags, steps: int, learned_variance: bool):
        base = np.cumprod(1.0 - named_betas(flags.noise_schedule, flags.diffusion_steps))
        self.timestep_map = space_timesteps(flags.diffusion_steps, steps)
        kept = base[self.timestep_map]
        betas = 1 - kept / np.append(1.0, kept[:-1])
        cumprod, prev = kept, np.append(1.0, kept[:-1])
        posterior_variance = betas * (1.0 - prev) / (1.0 - cumprod)
        self.min_log = np.log(np.append(posterior_variance[1], posterior_variance[1:]))   # posterior, clipped
        # LEARNED_RANGE interpolates between the posterior's and beta's log variance; FIXED_LARGE takes beta's
        self.max_log = np.log(betas) if learned_variance else np.log(np.append(posterior_variance[1], betas[1:]))
        self.learned_variance = learned_variance
        self.recip = np.sqrt(1.0 / cumprod)
        self.recipm1 = np.sqrt(1.0 / cumprod - 1)
        self.coef1 = betas * np.sqrt(prev) / (1.0 - cumprod)
        self.coef2 = (1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - cumprod)
        self.scale = 1000.0 / flags.diffusion_steps if flags.rescale_timesteps else None

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """What the model is shown for original steps t: t, or t x 1000 / steps (rescale_timesteps)."""
        return t.float() * self.scale if self.scale else t

    def step(self, i: int, x: torch.Tensor, output: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x at kept step i -> a draw of x at step i - 1 (p_sample): the mean from the clipped x_0 the
        epsilon implies, the log variance from the model's second half (or fixed), no noise at i = 0."""
        channels = x.shape[1]
        eps, values = output[:, :channels], output[:, channels:]
        x0 = (float(self.recip[i]) * x - float(self.recipm1[i]) * eps).clamp(-1, 1)
        mean = float(self.coef1[i]) * x0 + float(self.coef2[i]) * x
        if self.learned_variance:
            frac = (values + 1) / 2
            log_variance = frac * float(self.max_log[i]) + (1 - frac) * float(self.min_log[i])
        else:
            log_variance = torch.full_like(x, float(self.max_log[i]))
        return mean if i == 0 else mean + torch.exp(0.5 * log_variance) * noise


def scheduler_config(flags: ReleasedFlags) -> dict:
    """The file's schedule for a diffusers scheduler (the fast samplers): its betas as trained_betas."""
    return {"num_train_timesteps": flags.diffusion_steps,
            "trained_betas": named_betas(flags.noise_schedule, flags.diffusion_steps).tolist()}


@torch.inference_mode()
def sample_released(model: torch.nn.Module, image_size: int, learned_variance: bool, flags: ReleasedFlags,
                    sampler: SamplerConfig, seeds: Sequence[int], labels: Sequence[int] | None,
                    device: str | torch.device, batch_size: int = 256, autocast: bool | None = None) -> np.ndarray:
    """One 32x32 uint8 image (NHWC) a seed, conditioned on labels (one a seed; None: unconditional); a 64x64
    model's images averaged down. sampler "ddpm": the learned-variance ancestral chain over sampler.steps
    respaced steps (all of them when None); "ddim", "dpmpp-2m": diffusers' on the model's epsilon."""
    if labels is not None and len(labels) != len(seeds):
        raise ValueError(f"labels: one per seed ({len(seeds)}), got {len(labels)}")
    device = torch.device(device)
    steps = sampler.resolved(flags.diffusion_steps).steps
    chain = SpacedChain(flags, steps, learned_variance)
    out = []
    for start in range(0, len(seeds), batch_size):
        chunk = list(seeds[start:start + batch_size])
        y = None if labels is None else torch.as_tensor(list(labels[start:start + batch_size]), device=device)
        shape = (3, image_size, image_size)

        def predict(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = y) -> torch.Tensor:
            with bf16_autocast(device, autocast):
                return model(x, chain.model_timesteps(t.expand(len(x))), y).float()

        if sampler.name == "ddpm":
            x = _ancestral(chain, chunk, shape, device, predict)
        else:
            scheduler = build_scheduler(sampler, scheduler_config=scheduler_config(flags))
            x = reverse_chain(scheduler, sampler.eta, chunk, shape, device, lambda x, t: predict(x, t)[:, :3],
                              autocast=False)
        if image_size != SIZE:
            x = F.interpolate(x.clamp(-1, 1), size=(SIZE, SIZE), mode="area")
        out.append(to_uint8(x))
    return np.concatenate(out) if out else np.zeros((0, SIZE, SIZE, 3), np.uint8)


def _ancestral(chain: SpacedChain, seeds: Sequence[int], shape: tuple[int, int, int], device: torch.device,
               predict) -> torch.Tensor:
    """p_sample_loop from each seed's own noise, every later draw from the same generator."""
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    x = torch.cat([torch.randn((1, *shape), generator=g) for g in generators]).to(device)
    for i in reversed(range(len(chain.timestep_map))):
        t = torch.tensor([chain.timestep_map[i]], device=device)
        output = predict(x, t)
        noise = torch.cat([torch.randn((1, *shape), generator=g) for g in generators]).to(device)
        x = chain.step(i, x, output, noise)
    return x
