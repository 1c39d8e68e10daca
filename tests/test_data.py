"""Tests for synthaug.data.sources: class-folder sources (folder, .tar, .tar.gz), the npz cache,
source validation, the offline cifar10 failure, the procedural shapes set, the long-tail
profile and nested per-class selection. All offline; the real CIFAR tar is loaded when
../shared/data/cifar10-jpeg.tar.gz exists (about 10-20 s)."""

import hashlib
import math
import os
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthaug.data.shapes import SHAPE_CLASSES, make_shapes
from synthaug.data.sources import (DataError, Dataset, class_permutations, load_dataset, long_tail_counts,
                                   resolve_source)

CIFAR_TAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CIFAR_TAR_SHA256 = "0493b9c94c62a5e8a6b98a28016b4eebed4fa9aac8154143eead5d26fc94fabb"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ---------------------------------------------------------------- a tiny class-folder data set


def write_tiny(root: Path) -> dict[str, tuple[np.ndarray, bool]]:
    """Write 3 classes x 4 train x 2 test images under root; return {relative path: (RGB pixels, exact)}.

    Mostly random RGB PNGs (exact), plus a grayscale PNG (becomes RGB) and a flat-colour JPEG
    (lossy, so compared with a tolerance), and files that must be ignored.
    """
    rng = np.random.default_rng(0)
    expected = {}
    for split, count in (("train", 4), ("test", 2)):
        for label in ("cat", "ant", "bee"):  # class order must come out sorted: ant, bee, cat
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
                expected[f"{split}/{label}/{i}.png"] = (pixels, True)
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(root / "test/ant/gray.png")
    expected["test/ant/gray.png"] = (np.repeat(gray[..., None], 3, axis=2), True)
    flat = np.full((32, 32, 3), (200, 40, 90), dtype=np.uint8)
    Image.fromarray(flat).save(root / "train/bee/flat.jpeg", quality=95)
    expected["train/bee/flat.jpeg"] = (flat, False)
    (root / "train/cat/._0.png").write_bytes(b"macOS resource fork, not an image")
    (root / "README.txt").write_text("not an image")
    return expected


def pack(folder: Path, kind: str) -> Path:
    """The tiny data set as a folder, a .tar (./ member names) or a .tar.gz (one leading folder)."""
    if kind == "folder":
        return folder
    archive = folder.parent / f"tiny.{kind}"
    with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as tar:
        tar.add(folder, arcname="tiny" if kind == "tar.gz" else ".")
    return archive


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "tiny"
    return folder, write_tiny(folder)


def assert_matches(dataset: Dataset, expected: dict) -> None:
    """The dataset holds exactly the expected images, in sorted-path order, with sorted classes."""
    assert dataset.classes == ("ant", "bee", "cat") and dataset.num_classes == 3
    for split, x, y in (("train", dataset.train_x, dataset.train_y), ("test", dataset.test_x, dataset.test_y)):
        paths = sorted(p for p in expected if p.startswith(split + "/"))
        assert x.dtype == np.uint8 and x.shape == (len(paths), 32, 32, 3)
        assert y.dtype == np.int64 and y.tolist() == [dataset.classes.index(p.split("/")[1]) for p in paths]
        for image, path in zip(x, paths):
            pixels, exact = expected[path]
            diff = np.abs(image.astype(int) - pixels.astype(int)).max()
            assert diff == 0 if exact else diff <= 3, path


# ---------------------------------------------------------------- class-folder sources and cache


@pytest.mark.parametrize("kind", ["folder", "tar", "tar.gz"])
def test_class_folder_sources_load_exact_pixels(tiny, tmp_path, kind):
    folder, expected = tiny
    source = pack(folder, kind)
    dataset = load_dataset(str(source), tmp_path / "cache")
    assert dataset.name == "tiny"
    assert_matches(dataset, expected)
    if kind != "folder":
        assert dataset.digest == hashlib.sha256(source.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["tar", "tar.gz"])
def test_archive_second_load_is_served_from_cache(tiny, tmp_path, kind):
    folder, expected = tiny
    source, cache = pack(folder, kind), tmp_path / "cache"
    first = load_dataset(str(source), cache)
    (npz,) = (cache / "datasets").iterdir()
    assert npz.name == f"tiny-{first.digest[:16]}.npz"
    stamp = npz.stat().st_mtime_ns
    second = load_dataset(str(source), cache)
    assert npz.stat().st_mtime_ns == stamp and len(list((cache / "datasets").iterdir())) == 1
    assert second.digest == first.digest
    assert_matches(second, expected)


def test_folder_cache_is_keyed_by_paths_sizes_and_mtimes(tiny, tmp_path):
    folder, expected = tiny
    cache = tmp_path / "cache"
    first = load_dataset(str(folder), cache)
    # Same size and mtime, unreadable content: the digest cannot tell, so the cache answers,
    # which shows the second load does not decode the folder again.
    target = folder / "train/ant/0.png"
    stat = target.stat()
    target.write_bytes(b"\0" * stat.st_size)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cached = load_dataset(str(folder), cache)
    assert cached.digest == first.digest
    assert_matches(cached, expected)
    # A new image changes the digest: a fresh decode, a second cache file.
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "train/cat/new.png")
    with pytest.raises(DataError, match=r"train/ant/0\.png: unreadable image"):  # decoded now
        load_dataset(str(folder), cache)


def test_wrong_image_size_names_the_file(tiny, tmp_path):
    folder, _ = tiny
    Image.fromarray(np.zeros((32, 33, 3), np.uint8)).save(folder / "train/bee/wide.png")
    with pytest.raises(DataError, match=r"train/bee/wide\.png: image is 33x32, expected 32x32"):
        load_dataset(str(pack(folder, "tar")), tmp_path / "cache")


def test_bad_layouts_and_archives_raise_data_error(tiny, tmp_path):
    folder, _ = tiny
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "train/stray.png")
    with pytest.raises(DataError, match=r"train/stray\.png is not in train/<class>/"):
        load_dataset(str(folder), tmp_path / "cache")
    truncated = tmp_path / "broken.tar.gz"
    truncated.write_bytes(pack(folder, "tar.gz").read_bytes()[:300])
    with pytest.raises(DataError, match="unreadable archive"):
        load_dataset(str(truncated), tmp_path / "cache")


def test_resolve_source(tiny, tmp_path, monkeypatch):
    folder, _ = tiny
    assert resolve_source("shapes") == "shapes" and resolve_source("cifar10") == "cifar10"
    monkeypatch.chdir(tmp_path)
    assert resolve_source("tiny") == str(folder.resolve())
    archive = pack(folder, "tar.gz")
    assert resolve_source(archive.name) == str(archive.resolve())
    for bad, problem in (
        ("missing.tar.gz", "does not exist"),
        ("tiny/README.txt", "is not a folder, .tar or .tar.gz"),
        ("tiny/train", "no train/ or test/"),
    ):
        with pytest.raises(DataError) as info:
            resolve_source(bad)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"--data {bad!r}") and problem in message
        assert "shapes, cifar10, a folder" in message


def network_reachable() -> bool:
    try:
        socket.create_connection(("www.cs.toronto.edu", 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_cifar10_offline_fails_with_one_line_pointing_at_a_local_copy(tmp_path):
    if network_reachable():
        pytest.skip("network reachable: this would download CIFAR-10 instead of failing")
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tmp_path / "empty-cache")
    message = str(info.value)
    assert "\n" not in message and message.startswith("cifar10: cannot download")
    assert "--data /path/to/cifar10-jpeg.tar.gz or a class-folder directory" in message


# ---------------------------------------------------------------- shapes


def shape_features(x: np.ndarray, grid: int = 9) -> np.ndarray:
    """The shape's silhouette, centred and scaled to its bounding box, sampled on a grid x grid."""
    img = x.astype(np.float32)
    border = np.concatenate([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], axis=1)
    mask = np.abs(img - np.median(border, axis=1)[:, None, None]).max(-1) > 40
    features = []
    for m in mask:
        ys, xs = np.nonzero(m)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 + 0.5
        steps = np.linspace(-half, half, grid)
        rows = np.clip(np.rint(cy + steps), 0, 31).astype(int)
        cols = np.clip(np.rint(cx + steps), 0, 31).astype(int)
        features.append(m[np.ix_(rows, cols)].ravel())
    return np.array(features, dtype=np.float32)


def nearest_centroid_accuracy(train_f, train_y, test_f, test_y) -> float:
    centroids = np.stack([train_f[train_y == c].mean(0) for c in range(len(SHAPE_CLASSES))])
    predicted = ((test_f[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((predicted == test_y).mean())


def test_shapes_is_deterministic_balanced_and_seeded():
    a, b, other = make_shapes(3, 20, 10), make_shapes(3, 20, 10), make_shapes(4, 20, 10)
    train_x, train_y, test_x, test_y = a
    assert train_x.shape == (200, 32, 32, 3) and test_x.shape == (100, 32, 32, 3)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64
    assert np.bincount(train_y).tolist() == [20] * 10 and np.bincount(test_y).tolist() == [10] * 10
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(train_x, other[0]) and not np.array_equal(test_x, other[2])
    assert np.array_equal(make_shapes(3, 5, 10)[2], test_x)  # test split does not depend on train size
    assert train_x.std() > 40  # varied colours, not a blank canvas


def shape_hue(images: np.ndarray) -> np.ndarray:
    """The hue (as a unit vector) of each image's most saturated pixels: the shape's colour."""
    x = images.reshape(len(images), -1, 3).astype(np.float32) / 255
    saturation = x.max(-1) - x.min(-1)
    top = np.argsort(saturation, axis=1)[:, -20:]
    rgb = np.take_along_axis(x, top[..., None], axis=1).mean(1)
    r, g, b = rgb.T
    angle = np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)
    return np.stack([np.cos(angle), np.sin(angle)], 1)


def test_shapes_class_is_in_the_shape_and_in_the_shapes_hue():
    train_x, train_y, test_x, test_y = make_shapes(0, 100, 50)
    silhouette = nearest_centroid_accuracy(shape_features(train_x), train_y, shape_features(test_x), test_y)
    assert silhouette > 0.9
    hue = nearest_centroid_accuracy(shape_hue(train_x), train_y, shape_hue(test_x), test_y)
    assert hue > 0.8        # each class owns a hue band, so a minutes-trained DDPM draws classes
    mean_colour = nearest_centroid_accuracy(train_x.mean((1, 2)), train_y, test_x.mean((1, 2)), test_y)
    assert mean_colour < 0.5  # the background dominates the mean: the class is not a flat colour


def test_load_shapes_caches_the_default_set(tmp_path):
    dataset = load_dataset("shapes", tmp_path)
    assert dataset.name == "shapes" and dataset.classes == SHAPE_CLASSES and dataset.num_classes == 10
    assert all(np.array_equal(u, v) for u, v in zip(
        (dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y), make_shapes()))
    assert dataset.train_x.shape == (6000, 32, 32, 3) and dataset.test_x.shape == (1000, 32, 32, 3)
    assert (tmp_path / "datasets" / f"shapes-{dataset.digest[:16]}.npz").exists()
    assert load_dataset("shapes", tmp_path).digest == dataset.digest


# ---------------------------------------------------------------- long tail and selection


def test_long_tail_counts_match_the_study_profile():
    counts = long_tail_counts(5000, 0.1, 10)
    assert counts == [math.floor(5000 * 0.1 ** (i / 9)) for i in range(10)]
    assert counts == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert long_tail_counts(5000, 1.0, 10) == [5000] * 10 and long_tail_counts(7, 0.1, 1) == [7]
    with pytest.raises(ValueError):
        long_tail_counts(5000, 0.0, 10)


def test_class_permutations_are_seeded_nested_and_independent_per_class():
    labels = np.random.default_rng(1).integers(0, 4, 400)
    orders = class_permutations(labels, 4, seed=7)
    for c, order in enumerate(orders):
        assert sorted(order.tolist()) == np.flatnonzero(labels == c).tolist()
        assert set(order[:10].tolist()) <= set(order[:25].tolist())
    assert all(np.array_equal(a, b) for a, b in zip(orders, class_permutations(labels, 4, seed=7)))
    assert not np.array_equal(orders[0], class_permutations(labels, 4, seed=8)[0])
    relabelled = np.where(labels == 2, 3, labels)  # other classes change, class 0 and 1 do not
    again = class_permutations(relabelled, 4, seed=7)
    assert np.array_equal(again[0], orders[0]) and np.array_equal(again[1], orders[1])
    assert len(again[2]) == 0


# ---------------------------------------------------------------- the real CIFAR-10 JPEG tar


@pytest.mark.skipif(not CIFAR_TAR.exists(), reason=f"{CIFAR_TAR} not present")
def test_real_cifar10_jpeg_tar(tmp_path):
    dataset = load_dataset(str(CIFAR_TAR), tmp_path)
    assert dataset.name == "cifar10-jpeg" and dataset.digest == CIFAR_TAR_SHA256
    assert dataset.classes == CIFAR_CLASSES
    assert dataset.train_x.shape == (50000, 32, 32, 3) and dataset.test_x.shape == (10000, 32, 32, 3)
    assert np.bincount(dataset.train_y).tolist() == [5000] * 10
    assert np.bincount(dataset.test_y).tolist() == [1000] * 10
    assert 100 < dataset.train_x.mean() < 140  # natural images, not blank or saturated


def test_long_tail_counts_are_the_exact_floor_for_a_grid_of_n_max_and_lambda():
    """Reference: the largest m with m ** k <= n ** k * lambda ** i, found by bisection in rationals;
    the float formula misses some (0.29 * 100 is 28.999999999999996 in floating point)."""
    from fractions import Fraction

    def exact(n, lam, classes):
        k, ratio = classes - 1, Fraction(repr(lam))
        counts = []
        for i in range(classes):
            lo, hi = 0, n
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if Fraction(mid) ** k <= Fraction(n) ** k * ratio ** i else (lo, mid - 1)
            counts.append(lo)
        return counts

    assert long_tail_counts(100, 0.29, 2) == [100, 29]
    assert long_tail_counts(5000, 0.1, 10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    checked = 0
    for lam in (0.1, 0.01, 0.29, 0.5, 0.57, 0.07, 0.25):
        for classes in (2, 3, 10):
            for n in (1, 7, 20, 100, 200, 400, 500, 1000, 4096, 5000):
                assert long_tail_counts(n, lam, classes) == exact(n, lam, classes), (n, lam, classes)
                checked += 1
    assert checked == 210
