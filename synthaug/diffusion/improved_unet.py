"""improved-diffusion's UNetModel (Nichol & Dhariwal), module for module, so its released `.pt` files load.

    shape = unet_shape(state_dict)          # the architecture the file holds, or ValueError naming what is off
    model = build_unet(shape)               # a UNetModel whose state_dict keys and shapes are the file's
    model.load_state_dict(state_dict)
    out = model(x, timesteps, y)            # (N, 3 or 6, H, W): epsilon, and the variance fraction (learn_sigma)

Mirrors openai/improved-diffusion (commit 1bc7bbb): the network of improved_diffusion/unet.py
(TimestepEmbedSequential, Upsample, Downsample, ResBlock, AttentionBlock, QKVAttention, UNetModel)
and its helpers in nn.py (GroupNorm32, timestep_embedding); the channel multipliers a size takes and
the attention resolutions, from script_util.create_model. Only what sampling needs: 2-D, no gradient
checkpointing, no fp16 conversion, the learned (conv) resampling every released model uses. Attribute
names are upstream's, since they are the state-dict keys (time_embed.0, input_blocks.N.0.in_layers.2,
...); tests/data/improved_diffusion_keys.json lists upstream's keys for the two released models the
study used, and tests/test_released.py holds this module to them.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

# script_util.create_model: the channel multipliers of each image size (the file's widths give them back)
CHANNEL_MULT = {32: (1, 2, 2, 2), 64: (1, 2, 3, 4)}
NORM_GROUPS = 32            # nn.normalization: GroupNorm32(32, channels)


@dataclass(frozen=True)
class UNetShape:
    """What a state_dict says about its UNetModel (image_size from its channel multipliers)."""

    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_ds: tuple[int, ...]       # downsample rates with attention (16x16 and 8x8 at 32: 2, 4; at 64: 4, 8)
    out_channels: int                   # 3, or 6 with learned variances (learn_sigma)
    num_classes: int | None             # class-conditional (label_emb): ImageNet's 1000
    use_scale_shift_norm: bool
    num_heads: int = 4                  # not in the file: every released 32/64 model has 4

    @property
    def image_size(self) -> int:
        return next(size for size, mult in CHANNEL_MULT.items() if mult == self.channel_mult)

    @property
    def learn_sigma(self) -> bool:
        return self.out_channels == 6


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> nn.Module:
    return GroupNorm32(NORM_GROUPS, channels)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embeddings of (possibly fractional) timesteps: [cos | sin], as nn.timestep_embedding."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class TimestepBlock(nn.Module):
    """A module whose forward also takes the timestep embedding."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class ResBlock(TimestepBlock):
    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, self.out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels))
        self.out_layers = nn.Sequential(normalization(self.out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if self.out_channels == channels
                                else nn.Conv2d(channels, self.out_channels, 1))

    def forward(self, x, emb):
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        self.num_heads = num_heads
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        qkv = qkv.reshape(b * self.num_heads, -1, qkv.shape[2])
        h = qkv_attention(qkv).reshape(b, -1, qkv.shape[-1])
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


def qkv_attention(qkv: torch.Tensor) -> torch.Tensor:
    """QKVAttention: [N x 3C x T] -> [N x C x T], the scale split between q and k as upstream does."""
    ch = qkv.shape[1] // 3
    q, k, v = torch.split(qkv, ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v)


class UNetModel(nn.Module):
    """unet.UNetModel for 2-D images, conv resampling, no checkpointing."""

    def __init__(self, shape: UNetShape, in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        mc, heads, ssn = shape.model_channels, shape.num_heads, shape.use_scale_shift_norm
        self.model_channels, self.num_classes = mc, shape.num_classes
        emb = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        if shape.num_classes is not None:       # nn.Embedding's own init costs seconds on the meta device, once
            self.label_emb = nn.Embedding(shape.num_classes, emb, _weight=torch.empty(shape.num_classes, emb))
            if self.label_emb.weight.device.type != "meta":
                nn.init.normal_(self.label_emb.weight)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, mc, 3, padding=1))])
        chans, ch, ds = [mc], mc, 1
        for level, mult in enumerate(shape.channel_mult):
            for _ in range(shape.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb, dropout, mult * mc, ssn)]
                ch = mult * mc
                if ds in shape.attention_ds:
                    layers.append(AttentionBlock(ch, heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(shape.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb, dropout, use_scale_shift_norm=ssn),
                                                    AttentionBlock(ch, heads),
                                                    ResBlock(ch, emb, dropout, use_scale_shift_norm=ssn))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(shape.channel_mult))[::-1]:
            for i in range(shape.num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb, dropout, mc * mult, ssn)]
                ch = mc * mult
                if ds in shape.attention_ds:
                    layers.append(AttentionBlock(ch, heads))
                if level and i == shape.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(mc, shape.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if (y is None) != (self.num_classes is None):
            raise ValueError("y: class labels exactly when the model is class-conditional")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)
        hs, h = [], x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def build_unet(shape: UNetShape, device: str | torch.device = "cpu") -> UNetModel:
    """A UNetModel of `shape` in eval mode; on the "meta" device it costs nothing (a 270M model's keys)."""
    with torch.device(device):
        return UNetModel(shape).eval()


def unet_shape(state: Mapping[str, torch.Tensor], num_heads: int = 4) -> UNetShape:
    """The architecture a state_dict holds, read from its keys and shapes; ValueError (one line, what is off)
    when it is not a UNetModel of 32x32 or 64x64 RGB images with conv resampling, key for key."""
    def get(key: str) -> torch.Tensor:
        if key not in state:
            raise ValueError(f"no key {key!r} (improved-diffusion's UNetModel has one)")
        return state[key]

    mc = get("time_embed.0.weight").shape[1]
    if get("input_blocks.0.0.weight").shape[1] != 3:
        raise ValueError(f"input_blocks.0.0.weight takes {state['input_blocks.0.0.weight'].shape[1]} channels, "
                         f"not RGB's 3")
    widths, counts, attention, ds, index = [], [0], set(), 1, 1
    while f"input_blocks.{index}.0.op.weight" in state or f"input_blocks.{index}.0.in_layers.2.weight" in state:
        if f"input_blocks.{index}.0.op.weight" in state:        # a Downsample ends a level
            counts.append(0)
            ds *= 2
        else:
            if counts[-1] == 0:
                widths.append(state[f"input_blocks.{index}.0.in_layers.2.weight"].shape[0])
            if f"input_blocks.{index}.1.qkv.weight" in state:
                attention.add(ds)
            counts[-1] += 1
        index += 1
    if not widths or len(widths) != len(counts) or len(set(counts)) != 1 or any(w % mc for w in widths):
        raise ValueError(f"input_blocks hold no UNetModel's levels (widths {widths}, res blocks a level {counts})")
    emb_out = get("input_blocks.1.0.emb_layers.1.weight").shape[0]
    shape = UNetShape(model_channels=mc, channel_mult=tuple(w // mc for w in widths), num_res_blocks=counts[0],
                      attention_ds=tuple(sorted(attention)), out_channels=get("out.2.weight").shape[0],
                      num_classes=state["label_emb.weight"].shape[0] if "label_emb.weight" in state else None,
                      use_scale_shift_norm=emb_out == 2 * widths[0], num_heads=num_heads)
    if shape.channel_mult not in CHANNEL_MULT.values():
        raise ValueError(f"channel multipliers {shape.channel_mult}: improved-diffusion's 32x32 model has "
                         f"{CHANNEL_MULT[32]}, its 64x64 one {CHANNEL_MULT[64]}")
    if shape.out_channels not in (3, 6):
        raise ValueError(f"out.2.weight makes {shape.out_channels} channels: 3, or 6 with learned variances")
    if any(w % NORM_GROUPS or w % num_heads for w in (mc, *widths)):
        raise ValueError(f"widths {(mc, *widths)}: GroupNorm's {NORM_GROUPS} groups and {num_heads} heads need "
                         f"multiples of both")
    expected = build_unet(shape, "meta").state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise ValueError(f"no key {key!r}, which a UNetModel of this shape has")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(f"{key} has shape {tuple(state[key].shape)}, a UNetModel of this shape "
                             f"{tuple(tensor.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ValueError(f"key {extra[0]!r} is not in a UNetModel of this shape ({len(extra)} such keys)")
    return shape


# ---------------------------------------------------------------------------- files


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A released file's tensors (torch.load, weights only, memory-mapped where the format allows);
    ValueError when it is not a torch file holding a plain state_dict."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:            # the legacy (pre-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:            # pickle, zip and format errors alike: not a torch file of tensors
        raise ValueError(f"not a torch file of tensors ({str(err).strip().splitlines()[0][:160]})") from None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"not a plain state_dict (a dict of tensors): it holds a {type(state).__name__}"
                         + (f" with keys {', '.join(map(str, list(state)[:3]))}" if isinstance(state, dict) else ""))
    return state


@functools.lru_cache(maxsize=8)
def _file_shape(path: str, stamp: tuple[int, int], num_heads: int) -> UNetShape:
    return unet_shape(read_state_dict(path), num_heads)


def released_shape(path: str | os.PathLike, num_heads: int = 4) -> UNetShape:
    """The UNetShape of an improved-diffusion file (read once per file version); ValueError as unet_shape."""
    stat = Path(path).stat()
    return _file_shape(str(path), (stat.st_mtime_ns, stat.st_size), num_heads)


def load_released(path: str | os.PathLike, device: str | torch.device, num_heads: int = 4) -> tuple[UNetModel, UNetShape]:
    """The file's UNetModel in eval mode on `device`, and its shape."""
    state = read_state_dict(path)
    shape = unet_shape(state, num_heads)
    model = build_unet(shape)
    model.load_state_dict(state)
    return model.to(device), shape
