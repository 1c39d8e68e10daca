"""A DDPM on 32x32x3 images: the diffusers UNet2DModel, its recipe and its files.

DDPMConfig's defaults are Ho et al.'s CIFAR-10 DDPM (widths 128-256-256-256, two residual
blocks a level, single-head self-attention at 16x16, dropout 0.1, linear schedule over 1000
steps); IMPROVED_DDPM is Nichol & Dhariwal's CIFAR-10 model, the one the study cites (three
blocks a level, 4-head attention at 16x16 and 8x8, dropout 0.3, scale-shift norm, cosine
schedule over 4000 steps, lr 1e-4), except for its learned variances (see README).
Either is unconditional or class-conditional through a learned class embedding
(`num_class_embeds`) added to the timestep embedding. Training is
epsilon prediction with an MSE loss, AdamW and an exponential moving average of the
weights; the EMA weights are what a generator is. The training loop (resumable,
data-parallel) is in diffusion/training.py.

Files. `save_generator` writes a directory that `UNet2DModel.from_pretrained` can read,
plus `scheduler_config.json` (the noise schedule it was trained with) and
`ddpm_config.json` (the DDPMConfig and the weights digest). `load_generator` also reads any
diffusers UNet2DModel directory, such as a local copy of google/ddpm-cifar10-32.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from synthaug.core.files import atomic_directory
from synthaug.core.rules import Rule, check, is_int, is_number

if TYPE_CHECKING:       # diffusers takes seconds to import: only what builds, loads or checks a network needs it
    from diffusers import DDPMScheduler, UNet2DModel

IMAGE_SHAPE = (32, 32, 3)  # CIFAR: height, width, channels (arrays are uint8 NHWC)
RESOLUTIONS = (32, 16, 8, 4)  # what each UNet level works at
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")  # what DDPMScheduler offers for images
GRAD_CLIP_NORM = 1.0  # Ho et al. clip the gradient norm at 1
ADAMW_WEIGHT_DECAY = 0.0  # Ho et al. used plain Adam; the EMA is the regulariser
CONFIG_FILE = "ddpm_config.json"  # our DDPMConfig + weights digest, beside the diffusers files
SCHEDULER_FILE = "scheduler_config.json"  # diffusers' name, so any scheduler can from_config it


@dataclass(frozen=True)
class DDPMConfig:
    """What a DDPM generator is and how it is trained. Defaults: Ho et al.'s CIFAR-10 run."""

    conditional: bool = False  # False: unconditional (E3b, E4); True: one embedding a class (E2b, E3a)
    num_classes: int = 10  # CIFAR-10
    block_out_channels: tuple[int, ...] = (128, 256, 256, 256)  # the DDPM CIFAR-10 widths; smoke narrows
    layers_per_block: int = 2  # residual blocks a resolution, as in DDPM
    attention: bool = True  # self-attention (at attention_resolutions and in the middle); smoke turns it off
    attention_resolutions: tuple[int, ...] = (16,)  # DDPM: 16x16; improved DDPM: 16x16 and 8x8
    attention_head_dim: int | None = None  # None: one head as wide as the block (DDPM); 64: 4 heads at 256
    dropout: float = 0.1  # DDPM's CIFAR-10 dropout; improved DDPM's is 0.3
    scale_shift_norm: bool = False  # improved DDPM's FiLM-style timestep conditioning of GroupNorm
    num_train_timesteps: int = 1000  # T in DDPM
    beta_schedule: str = "linear"  # DDPM's 1e-4 .. 0.02
    train_steps: int = 100_000  # enough for recognisable CIFAR samples (DDPM trained 800k)
    batch_size: int = 128  # DDPM's batch
    lr: float = 2e-4  # DDPM's CIFAR-10 learning rate
    ema_decay: float = 0.9999  # DDPM's EMA decay (warmed up, see ema_decay_at)
    horizontal_flip: bool = True  # DDPM's only augmentation

    def validate(self, prefix: str = "ddpm") -> None:
        """Raise ConfigError("<prefix>.<field>: <what is allowed>, got <value>") on the first bad field."""
        levels = RESOLUTIONS[: len(self.block_out_channels)] if isinstance(self.block_out_channels, tuple) else ()
        check(self, prefix, [
            Rule("conditional", lambda v: isinstance(v, bool), "a bool"),
            Rule("num_classes", lambda v: is_int(v) and v >= 2, "an int >= 2"),
            Rule("block_out_channels",
                 lambda v: isinstance(v, tuple) and 2 <= len(v) <= 4 and all(is_int(c) and c >= 1 for c in v),
                 "a tuple of 2 to 4 positive ints (one per resolution, 32x32 down to 4x4)"),
            Rule("layers_per_block", lambda v: is_int(v) and v >= 1, "an int >= 1"),
            Rule("attention", lambda v: isinstance(v, bool), "a bool"),
            Rule("attention_resolutions", lambda v: isinstance(v, tuple) and all(r in levels for r in v),
                 f"a tuple of resolutions from {levels} (one a level)"),
            Rule("attention_head_dim",
                 lambda v: v is None or (is_int(v) and v >= 1 and all(c % v == 0 for c in self.block_out_channels)),
                 "None or an int dividing every width"),
            Rule("dropout", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
            Rule("scale_shift_norm", lambda v: isinstance(v, bool), "a bool"),
            Rule("num_train_timesteps", lambda v: is_int(v) and v >= 2, "an int >= 2"),
            Rule("beta_schedule", lambda v: v in BETA_SCHEDULES, f"one of {', '.join(BETA_SCHEDULES)}"),
            Rule("train_steps", lambda v: is_int(v) and v >= 1, "an int >= 1"),
            Rule("batch_size", lambda v: is_int(v) and v >= 1, "an int >= 1"),
            Rule("lr", lambda v: is_number(v) and v > 0, "a number > 0"),
            Rule("ema_decay", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
            Rule("horizontal_flip", lambda v: isinstance(v, bool), "a bool"),
        ])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DDPMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ddpm: unknown fields {unknown}")
        d = dict(d)
        for name in ("block_out_channels", "attention_resolutions"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)


# Nichol & Dhariwal's CIFAR-10 model (improved-diffusion, "--num_channels 128 --num_res_blocks 3
# --dropout 0.3 --diffusion_steps 4000 --noise_schedule cosine --lr 1e-4 --batch_size 128"), as far
# as diffusers' UNet2DModel goes; 100k steps where they trained 500k.
IMPROVED_DDPM = DDPMConfig(layers_per_block=3, attention_resolutions=(16, 8), attention_head_dim=64, dropout=0.3,
                           scale_shift_norm=True, num_train_timesteps=4000, beta_schedule="squaredcos_cap_v2",
                           lr=1e-4)


# ---------------------------------------------------------------------------- network


def build_unet(cfg: DDPMConfig) -> UNet2DModel:
    """The DDPM UNet for cfg, freshly initialised from torch's global RNG."""
    from diffusers import UNet2DModel

    cfg.validate()
    levels = len(cfg.block_out_channels)
    # Level i works at RESOLUTIONS[i] (level 0 is 32x32 and ends by halving).
    attn = [cfg.attention and RESOLUTIONS[i] in cfg.attention_resolutions for i in range(levels)]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return UNet2DModel(
        sample_size=IMAGE_SHAPE[0],
        in_channels=IMAGE_SHAPE[2],
        out_channels=IMAGE_SHAPE[2],
        block_out_channels=cfg.block_out_channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,  # None: one head as wide as the block, like DDPM
        add_attention=cfg.attention,  # the middle block's attention (8x8 or lower), as in DDPM
        norm_num_groups=_norm_groups(cfg.block_out_channels),
        dropout=cfg.dropout,
        resnet_time_scale_shift="scale_shift" if cfg.scale_shift_norm else "default",
        num_class_embeds=cfg.num_classes if cfg.conditional else None,
    )


def _norm_groups(widths: tuple[int, ...]) -> int:
    """GroupNorm's 32 groups (DDPM) where every width allows it, else the largest that does."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if all(w % g == 0 for w in widths))


def is_conditional(unet: UNet2DModel) -> bool:
    """Whether the network takes class_labels (it has a learned class embedding)."""
    return unet.config.num_class_embeds is not None


def noise_scheduler(num_train_timesteps: int, beta_schedule: str) -> DDPMScheduler:
    """The forward (noising) process a generator is trained with; samplers reuse its config."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)


# ---------------------------------------------------------------------------- files


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the sorted state_dict: each name, dtype, shape and the tensor's bytes."""
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_generator(model: UNet2DModel, cfg: DDPMConfig, directory: str | os.PathLike) -> str:
    """Write the generator to `directory` whole (synthaug.core.files.atomic_directory); a directory already
    there is replaced. Returns the weights digest (also stored in ddpm_config.json)."""
    digest = weights_digest(model)
    with atomic_directory(directory) as tmp:
        model.save_pretrained(tmp)
        noise_scheduler(cfg.num_train_timesteps, cfg.beta_schedule).save_config(tmp)
        meta = {"ddpm": cfg.to_dict(), "weights_digest": digest}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return digest


def _unet_dir(directory: Path) -> Path:
    """Where the UNet's config.json is: the directory itself or a pipeline's unet/ folder."""
    for candidate in (directory, directory / "unet"):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no UNet2DModel in {directory}: neither config.json nor unet/config.json")


def load_generator(directory: str | os.PathLike, device: torch.device | str) -> tuple[UNet2DModel, DDPMConfig | None]:
    """Load a generator (eval mode, on `device`) and its DDPMConfig (None if not ours).

    Reads save_generator's output or any diffusers UNet2DModel directory, with its config
    at the top level or in a unet/ subfolder (a pipeline such as google/ddpm-cifar10-32).
    For a foreign network use is_conditional(unet) and load_scheduler_config(directory).
    Never downloads.
    """
    from diffusers import UNet2DModel

    directory = Path(directory)
    unet = UNet2DModel.from_pretrained(_unet_dir(directory), local_files_only=True, low_cpu_mem_usage=False)
    cfg = None
    meta_path = directory / CONFIG_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        cfg = DDPMConfig.from_dict(meta["ddpm"])
    return unet.to(device).eval(), cfg


def checkpoint_problem(directory: str | os.PathLike, conditional: bool, num_classes: int) -> str | None:
    """Why a diffusers UNet2DModel folder cannot serve as a generator of this role, or None.

    It must load from local files, make 32x32x3 images, and be class-conditional over
    num_classes classes exactly when `conditional` (else have no class embedding)."""
    from diffusers import UNet2DModel

    directory = Path(directory)
    if not directory.is_dir():
        return f"{str(directory)!r} is not a folder"
    try:
        config = UNet2DModel.load_config(_unet_dir(directory), local_files_only=True)
    except (OSError, ValueError) as err:
        return f"{str(directory)!r} holds no diffusers UNet2DModel ({str(err).splitlines()[0]})"
    size = config.get("sample_size")
    if size not in (32, [32, 32], (32, 32)) or config.get("in_channels") != 3 or config.get("out_channels") != 3:
        return (f"{str(directory)!r} makes {size}-pixel images with {config.get('in_channels')} channels in and "
                f"{config.get('out_channels')} out; a generator here makes 32x32x3")
    classes = config.get("num_class_embeds")
    if conditional and classes != num_classes:
        return f"{str(directory)!r} is {'unconditional' if classes is None else f'conditional on {classes} classes'}; " \
               f"this generator is class-conditional on the data's {num_classes} classes"
    if not conditional and classes is not None:
        return f"{str(directory)!r} is conditional on {classes} classes; this generator is unconditional"
    try:
        UNet2DModel.from_pretrained(_unet_dir(directory), local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as err:
        return f"{str(directory)!r}: its weights do not load ({str(err).splitlines()[0]})"
    return None


def load_scheduler_config(directory: str | os.PathLike) -> dict | None:
    """The noise schedule stored with a generator (scheduler_config.json, top level or in
    scheduler/), as a dict for sample(scheduler_config=...); None if there is none."""
    directory = Path(directory)
    for path in (directory / SCHEDULER_FILE, directory / "scheduler" / SCHEDULER_FILE):
        if path.is_file():
            return json.loads(path.read_text())
    return None
