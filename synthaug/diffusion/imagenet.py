"""Pretrained ImageNet class-conditional generators (the study's E2a) and CIFAR -> ImageNet label maps.

    pipe = load_pipeline("facebook/DiT-XL-2-256", "cuda")     # a diffusers DiTPipeline folder or hub id
    labels = source_labels("study-table3", "truck", pool_id, range(0, 64))
    images = sample_pipeline(pipe, sampler, seeds, labels, "cuda", guidance_scale=4.0)  # uint8 (64, 32, 32, 3)

The model generates one of a CIFAR class's ImageNet fine classes; image k of a pool takes
its fine class from its own seed (image_seed(pool_id, k) modulo the class's list), so a pool
is as deterministic and nested as any other. The default map is the study's Table 3 (truck and
ship only); "cifar10-wide" maps every CIFAR-10 class (ImageNet-1k has no deer: it takes the
three antelopes it has, hartebeest, impala, gazelle, the nearest it offers).

Sampling runs the pipeline's own parts (transformer, VAE, the generator's noise schedule)
under our sampler, with classifier-free guidance against DiT's null class, drawing every
noise term from the image's own torch.Generator, so an image does not depend on its batch
(beyond float rounding, synthaug/diffusion/sampling.py).
Decoded images are resized to 32x32 with antialiasing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synthaug.diffusion.sampling import SamplerConfig, build_scheduler, image_seed, reverse_chain, to_uint8

# The study's Table 3: the ImageNet-1k fine classes of the two CIFAR classes it augmented from ImageNet;
# it maps no other class.
STUDY_TABLE3: dict[str, tuple[int, ...]] = {
    "ship": (510, 724),                                             # container ship, pirate ship
    "truck": (555, 569, 717, 864, 867),                             # fire engine, garbage truck, pickup,
                                                                    # tow truck, trailer truck
}
# A wider map of every CIFAR-10 class (not the study's: it adds moving van and five ship classes),
# ImageNet-1k class indices (the torchvision / Keras class index).
CIFAR10_TO_IMAGENET: dict[str, tuple[int, ...]] = {
    "airplane": (404, 895),                                         # airliner, warplane
    "automobile": (436, 468, 511, 609, 627, 656, 661, 751, 817),    # beach wagon, cab, convertible, jeep,
                                                                    # limousine, minivan, Model T, racer, sports car
    "bird": tuple(range(7, 25)) + tuple(range(80, 101)) + tuple(range(127, 147)),   # cock ... albatross
    "cat": (281, 282, 283, 284, 285),                               # tabby, tiger, Persian, Siamese, Egyptian
    "deer": (351, 352, 353),                                        # hartebeest, impala, gazelle (no deer)
    "dog": tuple(range(151, 269)),                                  # the dog breeds
    "frog": (30, 31, 32),                                           # bullfrog, tree frog, tailed frog
    "horse": (339,),                                                # sorrel
    "ship": (484, 510, 554, 628, 724, 780, 871),                    # catamaran, container ship, fireboat,
                                                                    # liner, pirate, schooner, trimaran
    "truck": (555, 569, 675, 717, 864, 867),                        # fire engine, garbage truck, moving van,
                                                                    # pickup, tow truck, trailer truck
}
# Not ImageNet: the smoke preset's E2a stand-in, a class-conditional DDPM trained on the built-in outside set
# shapes-fine (synthaug.data.sources: shape i small is class 2i, large 2i + 1), asked for a shape of the
# built-in shapes through this map as the ImageNet model is asked for a CIFAR class through Table 3.
SHAPES_TO_FINE: dict[str, tuple[int, ...]] = {shape: (2 * i, 2 * i + 1) for i, shape in enumerate((
    "circle", "square", "triangle", "diamond", "cross", "ring", "hbar", "vbar", "plus", "frame"))}
LABEL_MAPS: dict[str, dict[str, tuple[int, ...]]] = {"study-table3": STUDY_TABLE3, "cifar10-wide": CIFAR10_TO_IMAGENET,
                                                     "shapes-fine": SHAPES_TO_FINE}
NULL_CLASS = 1000           # DiT's unconditional ("null") class, for classifier-free guidance
SIZE = 32
VAE_DECODE_CHUNK = 16       # latents a VAE decode: ~16 x 256x256 activations at once, whatever the sampling batch


def label_map(name: str) -> dict[str, tuple[int, ...]]:
    if name not in LABEL_MAPS:
        raise ValueError(f"label_map: one of {', '.join(LABEL_MAPS)}, got {name!r}")
    return LABEL_MAPS[name]


def source_labels(map_name: str, class_name: str, pool_id: str, indices: Sequence[int]) -> list[int]:
    """The ImageNet class of each image k of the pool: its seed picks one of the CIFAR class's."""
    choices = label_map(map_name).get(class_name)
    if not choices:
        raise ValueError(f"label_map: {map_name} has no source classes for {class_name!r}")
    return [choices[image_seed(pool_id, k) % len(choices)] for k in indices]


def unavailable(pretrained: str, map_name: str, classes: Sequence[str]) -> str | None:
    """Why a pretrained generator cannot serve these classes on this machine, or None when it can.
    Cheap: looks for the files (a folder, or the local hub cache) and at the label map only."""
    if Path(pretrained).is_dir():
        if not (Path(pretrained) / "model_index.json").is_file():
            return f"{pretrained} has no model_index.json (a diffusers DiTPipeline folder is expected)"
    else:
        from huggingface_hub import snapshot_download
        try:
            snapshot_download(pretrained, local_files_only=True)
        except Exception:                   # not cached: LocalEntryNotFoundError, or a malformed id
            return (f"{pretrained} is not on this machine; download it once (huggingface-cli download "
                    f"{pretrained}), or point HF_HOME at a hub cache that has it")
    return unmapped(map_name, classes)


def unmapped(map_name: str, classes: Sequence[str], source: str = "ImageNet") -> str | None:
    """"label map M has no <source> classes for ..." when the map gives some of `classes` none, else None."""
    missing = [c for c in classes if not label_map(map_name).get(c)]
    return f"label map {map_name} has no {source} classes for {', '.join(missing)}" if missing else None


def load_pipeline(path: str, device: str | torch.device):
    """A diffusers DiTPipeline (transformer, VAE, scheduler) from a folder or the local hub cache."""
    from diffusers import DiTPipeline

    try:
        pipe = DiTPipeline.from_pretrained(path, local_files_only=True)     # checked before Ray starts; never downloads
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"pretrained: cannot load a DiTPipeline from {path!r} ({str(err).splitlines()[0]}); "
                                f"download it once (huggingface-cli download {path})") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def pipeline_digest(pipe, label_map_name: str, guidance_scale: float) -> str:
    """What makes the generator's images what they are: its weights, label map and guidance."""
    h = hashlib.sha256()
    for part in (pipe.transformer, pipe.vae):
        for name, tensor in sorted(part.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    h.update(repr(sorted(label_map(label_map_name).items())).encode())
    h.update(f"guidance={guidance_scale}".encode())
    return h.hexdigest()


@torch.inference_mode()
def sample_pipeline(pipe, sampler: SamplerConfig, seeds: Sequence[int], labels: Sequence[int],
                    device: str | torch.device, guidance_scale: float = 4.0, batch_size: int = 64,
                    autocast: bool | None = None) -> np.ndarray:
    """One 32x32 uint8 image per (seed, ImageNet label); autocast: the transformer's bf16 (None: on CUDA
    only, synthaug.core.devices)."""
    if len(seeds) != len(labels):
        raise ValueError(f"labels: one per seed ({len(seeds)}), got {len(labels)}")
    device = torch.device(device)
    scheduler = build_scheduler(sampler, scheduler_config=dict(pipe.scheduler.config))
    out = [_sample_batch(pipe, scheduler, sampler.eta, seeds[i:i + batch_size], labels[i:i + batch_size],
                         device, guidance_scale, autocast)
           for i in range(0, len(seeds), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, SIZE, SIZE, 3), np.uint8)


def _sample_batch(pipe, scheduler, eta: float, seeds: Sequence[int], labels: Sequence[int],
                  device: torch.device, guidance_scale: float, autocast: bool | None = None) -> np.ndarray:
    transformer, vae = pipe.transformer, pipe.vae
    channels, size = transformer.config.in_channels, transformer.config.sample_size
    y = torch.as_tensor(list(labels), device=device)
    guided = guidance_scale > 1
    y_in = torch.cat([y, torch.full_like(y, NULL_CLASS)]) if guided else y

    def predict_noise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_in = torch.cat([x, x]) if guided else x
        out = transformer(x_in, timestep=t.expand(len(x_in)), class_labels=y_in).sample.float()
        eps = out[:, :channels]                 # DiT also predicts a variance (learned sigma); unused here
        if guided:
            cond, uncond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        return eps

    latents = reverse_chain(scheduler, eta, seeds, (channels, size, size), device, predict_noise, autocast=autocast)
    return np.concatenate([_decode(vae, latents[i:i + VAE_DECODE_CHUNK])
                           for i in range(0, len(latents), VAE_DECODE_CHUNK)])


def _decode(vae, latents: torch.Tensor) -> np.ndarray:
    """At most VAE_DECODE_CHUNK latents through the VAE, resized to 32x32 at once: the decoder's
    256x256 activations are what bound a sampling batch's memory, not the batch size."""
    images = vae.decode(latents / vae.config.scaling_factor).sample.float()
    if images.shape[-1] != SIZE:
        images = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
    return to_uint8(images)
