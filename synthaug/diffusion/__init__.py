"""Diffusion generators: the DDPM network and files (ddpm), its resumable training (training),
per-image-seeded sampling (sampling)."""

from synthaug.diffusion.ddpm import (
    DDPMConfig,
    build_unet,
    is_conditional,
    load_generator,
    load_scheduler_config,
    save_generator,
    weights_digest,
)
from synthaug.diffusion.training import train_ddpm
from synthaug.diffusion.sampling import SamplerConfig, build_scheduler, image_seed, sample

__all__ = [
    "DDPMConfig",
    "SamplerConfig",
    "build_scheduler",
    "build_unet",
    "image_seed",
    "is_conditional",
    "load_generator",
    "load_scheduler_config",
    "sample",
    "save_generator",
    "train_ddpm",
    "weights_digest",
]
