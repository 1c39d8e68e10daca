"""Shared fixtures: a small class-folder .tar.gz made from the procedural shapes."""

import os
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from synthaug.data.shapes import SHAPE_CLASSES, make_shapes

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def shapes_tar(tmp_path_factory) -> Path:
    """train/ and test/ class folders of 3 shape classes as PNGs, packed as a .tar.gz."""
    return _shapes_tar(tmp_path_factory.mktemp("shapes3"), SHAPE_CLASSES[:3], "shapes3")


def _shapes_tar(root: Path, names, stem: str) -> Path:
    train_x, train_y, test_x, test_y = make_shapes(seed=5, train_per_class=30, test_per_class=20)
    for split, xs, ys in (("train", train_x, train_y), ("test", test_x, test_y)):
        for i, (x, y) in enumerate(zip(xs, ys)):
            if y < 3:
                folder = root / "data" / split / names[y]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(x).save(folder / f"{i:05d}.png")
    path = root / f"{stem}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(root / "data" / split, arcname=split)
    return path


@pytest.fixture(scope="session")
def tiny_dit(tmp_path_factory):
    """A DiTPipeline folder with random weights: 4x4 latents, a VAE that doubles them to 8x8."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                        num_layers=1, sample_size=4, patch_size=2, num_embeds_ada_norm=1000)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                        norm_num_groups=4, sample_size=8)
    folder = tmp_path_factory.mktemp("dit")
    DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler()).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def cifar_named_tar(tmp_path_factory) -> Path:
    """Like shapes_tar, with three of CIFAR-10's class names (cat, ship, truck): what the sweeps that
    target truck and ship, and the ImageNet label map, need."""
    return _shapes_tar(tmp_path_factory.mktemp("cifar3"), ("cat", "ship", "truck"), "cifar3")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread in the test process: beside Ray workers on 2 cores, two threads stalled
    small models by 10-25x here (train_ddpm: 0.26 s a step on one thread, 6.3 s on two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
