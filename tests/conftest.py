"""Shared fixtures: a small class-folder .tar.gz made from the procedural shapes."""

import os
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from synthaug.data import SHAPE_CLASSES, make_shapes

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def shapes_tar(tmp_path_factory) -> Path:
    """train/ and test/ class folders of 3 shape classes as PNGs, packed as a .tar.gz."""
    root = tmp_path_factory.mktemp("shapes3")
    train_x, train_y, test_x, test_y = make_shapes(seed=5, train_per_class=30, test_per_class=20)
    for split, xs, ys in (("train", train_x, train_y), ("test", test_x, test_y)):
        for i, (x, y) in enumerate(zip(xs, ys)):
            if y < 3:
                folder = root / "data" / split / SHAPE_CLASSES[y]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(x).save(folder / f"{i:05d}.png")
    path = root / "shapes3.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(root / "data" / split, arcname=split)
    return path


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread in the test process: beside Ray workers on 2 cores, two threads stalled
    small models by 10-25x here (train_ddpm: 0.26 s a step on one thread, 6.3 s on two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
