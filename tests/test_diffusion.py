"""synthaug.diffusion: the DDPM network, its training, its files and per-image-seeded sampling.

Real diffusers models on CPU, tiny widths (16, 32) and a handful of steps; offline.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from synthaug.diffusion.ddpm import (DDPMConfig, build_unet, is_conditional, load_generator, load_scheduler_config,
                                     save_generator, weights_digest)
from synthaug.diffusion.sampling import SamplerConfig, image_seed, sample
from synthaug.diffusion.training import train_ddpm

TINY = DDPMConfig(
    block_out_channels=(16, 32), layers_per_block=1, attention=False,
    num_train_timesteps=100, train_steps=30, batch_size=8, lr=2e-3,
)
DDIM8 = SamplerConfig(name="ddim", steps=8)
SCHEDULE = {"num_train_timesteps": TINY.num_train_timesteps, "beta_schedule": TINY.beta_schedule}


def _shapes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n images of a coloured square on a flat background; label 0 red, 1 blue."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, 32, 32, 3), np.uint8)
    labels = rng.integers(0, 2, n)
    for i in range(n):
        images[i] = rng.integers(0, 80, 3)
        x, y = rng.integers(4, 18, 2)
        images[i, y:y + 10, x:x + 10] = (220, 40, 40) if labels[i] == 0 else (40, 40, 220)
    return images, labels


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from intra-op threads, and on a shared 2-core machine
    OpenMP threads waiting on each other make them 10-50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained():
    """A tiny unconditional DDPM trained on shapes, and its per-step losses."""
    images, _ = _shapes(64)
    losses: list[float] = []
    model = train_ddpm(TINY, images, None, seed=0, device="cpu", progress=False,
                       on_step=lambda step, loss: losses.append(loss))
    return model, losses


@pytest.fixture(scope="module")
def conditional_unet():
    torch.manual_seed(0)
    return build_unet(dataclasses.replace(TINY, conditional=True, num_classes=3)).eval()


# ---------------------------------------------------------------------------- network and config


def test_build_unet_forward_shapes():
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([3, 70])
    uncond = build_unet(TINY)
    assert not is_conditional(uncond)
    assert uncond(x, t).sample.shape == (2, 3, 32, 32)
    cond = build_unet(dataclasses.replace(TINY, conditional=True, num_classes=5, attention=True))
    assert is_conditional(cond) and cond.config.num_class_embeds == 5
    assert cond(x, t, class_labels=torch.tensor([0, 4])).sample.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("field, value", [
    ("num_classes", 1), ("block_out_channels", (16,)), ("block_out_channels", [16, 32]),
    ("layers_per_block", 0), ("beta_schedule", "cosine"), ("train_steps", 0),
    ("lr", 0.0), ("ema_decay", 1.0), ("conditional", "yes"),
])
def test_ddpm_validate_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^ddpm\.{field}: .*, got ") as err:
        dataclasses.replace(TINY, **{field: value}).validate()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, field", [
    ({"name": "euler"}, "name"), ({"steps": 0}, "steps"), ({"eta": 1.5}, "eta"),
    ({"name": "ddpm", "eta": 0.5}, "eta"), ({"name": "dpmpp-2m", "eta": 0.5}, "eta"),
])
def test_sampler_validate_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^sampler\.{field}: "):
        SamplerConfig(**kwargs).validate()


def test_sampler_resolved_steps():
    assert SamplerConfig().resolved(1000).steps == 100
    assert SamplerConfig(name="ddpm").resolved(1000).steps == 1000
    assert SamplerConfig(name="ddpm", steps=50).resolved(1000).steps == 50
    assert SamplerConfig(name="dpmpp-2m").resolved(4000).steps == 20


# ---------------------------------------------------------------------------- training


def test_train_ddpm_loss_decreases(trained):
    model, losses = trained
    assert len(losses) == TINY.train_steps
    assert not model.training
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.7 * first, (first, last)


def test_train_ddpm_is_deterministic_for_a_seed():
    images, _ = _shapes(32)
    short = dataclasses.replace(TINY, train_steps=4)
    digests = [weights_digest(train_ddpm(short, images, None, seed=s, device="cpu", progress=False)) for s in (1, 1, 2)]
    assert digests[0] == digests[1] != digests[2]


def test_train_ddpm_conditional_needs_labels():
    images, labels = _shapes(16)
    cfg = dataclasses.replace(TINY, conditional=True, num_classes=2, train_steps=2)
    with pytest.raises(ValueError, match="^labels: "):
        train_ddpm(cfg, images, None, seed=0, device="cpu", progress=False)
    model = train_ddpm(cfg, images, labels, seed=0, device="cpu", progress=False)
    assert is_conditional(model)


# ---------------------------------------------------------------------------- files


def test_save_load_round_trip_keeps_digest(trained, tmp_path):
    model, _ = trained
    directory = tmp_path / "gen"
    digest = save_generator(model, TINY, directory)
    assert digest == weights_digest(model)
    assert not [p for p in tmp_path.iterdir() if p.name != "gen"]  # no temporary left behind
    loaded, cfg = load_generator(directory, "cpu")
    assert cfg == TINY
    assert weights_digest(loaded) == digest
    stored = load_scheduler_config(directory)
    assert stored["num_train_timesteps"] == TINY.num_train_timesteps
    assert np.array_equal(sample(loaded, DDIM8, [3], None, "cpu", progress=False, scheduler_config=stored),
                          sample(model, DDIM8, [3], None, "cpu", progress=False, **SCHEDULE))
    # Saving again over it replaces it.
    assert save_generator(model, TINY, directory) == digest


def test_load_plain_diffusers_directory(tmp_path):
    """A diffusers pipeline layout (unet/ and scheduler/, as google/ddpm-cifar10-32)."""
    unet = build_unet(dataclasses.replace(TINY, conditional=True, num_classes=4))
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    loaded, cfg = load_generator(tmp_path / "pipe", "cpu")
    assert cfg is None and is_conditional(loaded)
    assert weights_digest(loaded) == weights_digest(unet)
    unet.save_pretrained(tmp_path / "flat")
    assert load_generator(tmp_path / "flat", "cpu")[1] is None
    assert load_scheduler_config(tmp_path / "flat") is None
    with pytest.raises(FileNotFoundError):
        load_generator(tmp_path / "nothing", "cpu")


def test_weights_digest_changes_with_a_weight(trained):
    model, _ = trained
    before = weights_digest(model)
    param = next(model.parameters())
    with torch.no_grad():
        param.view(-1)[0] += 1e-3
        assert weights_digest(model) != before
        param.view(-1)[0] -= 1e-3


# ---------------------------------------------------------------------------- sampling


def test_image_seed_deterministic_and_distinct():
    assert image_seed("pool", 3) == image_seed("pool", 3)
    seeds = {image_seed(p, k) for p in ("a", "b") for k in range(100)}
    assert len(seeds) == 200
    assert all(0 <= s < 2**63 for s in seeds)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def test_sample_is_batch_independent_and_seed_determined(trained):
    model, _ = trained
    seeds = [image_seed("p", k) for k in range(4)]
    batch = sample(model, DDIM8, seeds, None, "cpu", batch_size=4, progress=False, **SCHEDULE)
    assert batch.shape == (4, 32, 32, 3) and batch.dtype == np.uint8
    alone = sample(model, DDIM8, seeds[2:3], None, "cpu", batch_size=1, progress=False, **SCHEDULE)
    assert _max_diff(batch[2], alone[0]) <= 1
    chunked = sample(model, DDIM8, seeds, None, "cpu", batch_size=3, progress=False, **SCHEDULE)
    assert _max_diff(batch, chunked) <= 1
    again = sample(model, DDIM8, seeds, None, "cpu", batch_size=4, progress=False, **SCHEDULE)
    assert np.array_equal(batch, again)
    assert _max_diff(batch[0], batch[1]) > 10  # different seeds, different images


@pytest.mark.parametrize("sampler", [SamplerConfig(name="ddpm", steps=8), SamplerConfig(name="ddim", steps=8, eta=1.0)])
def test_stochastic_samplers_are_batch_independent(trained, sampler):
    model, _ = trained
    seeds = [11, 22, 33, 44]
    batch = sample(model, sampler, seeds, None, "cpu", batch_size=4, progress=False, **SCHEDULE)
    alone = sample(model, sampler, [33], None, "cpu", batch_size=1, progress=False, **SCHEDULE)
    assert _max_diff(batch[2], alone[0]) <= 1
    deterministic = sample(model, DDIM8, [33], None, "cpu", progress=False, **SCHEDULE)
    assert _max_diff(alone[0], deterministic[0]) > 1  # the step noise really was drawn


def test_conditional_sampling(conditional_unet):
    seeds = [5, 5, 6]
    images = sample(conditional_unet, DDIM8, seeds, [0, 2, 1], "cpu", batch_size=2, progress=False,
                    scheduler_config={"num_train_timesteps": 100, "beta_schedule": "linear"})
    assert images.shape == (3, 32, 32, 3)
    assert _max_diff(images[0], images[1]) > 0  # same noise, different class
    alone = sample(conditional_unet, DDIM8, [5], [2], "cpu", progress=False, **SCHEDULE)
    assert _max_diff(images[1], alone[0]) <= 1
    with pytest.raises(ValueError, match="^class_labels: "):
        sample(conditional_unet, DDIM8, seeds, None, "cpu", progress=False, **SCHEDULE)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmpp-2m"])
def test_sample_matches_the_diffusers_pipeline(trained, name):
    """One image from our sampler equals diffusers' own pipeline with the same seed and scheduler; a
    multistep solver (dpmpp-2m) gives the same image again in a later batch (its state is reset a chain)."""
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler

    model, _ = trained
    pipeline, scheduler = {"ddim": (DDIMPipeline, DDIMScheduler), "ddpm": (DDPMPipeline, DDPMScheduler),
                           "dpmpp-2m": (DDPMPipeline, DPMSolverMultistepScheduler)}[name]
    eta = {"ddim": {"eta": 0.5}}.get(name, {})
    pipe = pipeline(unet=model, scheduler=scheduler(**SCHEDULE))
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(batch_size=1, generator=torch.Generator().manual_seed(7), num_inference_steps=6,
               output_type="np", **eta).images
    ours = sample(model, SamplerConfig(name=name, steps=6, **eta), [7, 8, 7], None, "cpu", batch_size=1,
                  progress=False, **SCHEDULE)
    assert _max_diff((ref * 255).round().astype(np.uint8), ours[:1]) <= 1
    assert np.array_equal(ours[0], ours[2]) and _max_diff(ours[0], ours[1]) > 10


def test_unconditional_refuses_labels_and_too_many_steps(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="^class_labels: "):
        sample(model, DDIM8, [1], [0], "cpu", progress=False, **SCHEDULE)
    with pytest.raises(ValueError, match="^sampler.steps: "):
        sample(model, SamplerConfig(steps=101), [1], None, "cpu", progress=False, **SCHEDULE)
    assert sample(model, DDIM8, [], None, "cpu", progress=False, **SCHEDULE).shape == (0, 32, 32, 3)
