"""Real data sources, their decode-once cache, the long-tail profile and seeded selection.

A source (the sweep's ``--data`` value) is one of:

- ``shapes``: a small procedural data set built in (10 shape classes, 32x32), offline;
- ``shapes-fine``: an outside set for the shapes, built in: each shape small or large (20 finer classes,
  sizes the shapes never have, twice the noise), what the smoke preset's E2a stand-in learns from, as the
  study's ImageNet model learnt from ImageNet, never from the data it augments;
- ``cifar10``: torchvision's CIFAR-10, downloaded into the cache folder when missing;
- a folder, ``.tar`` or ``.tar.gz`` in class-folder layout: ``train/<class>/*.png|jpg|jpeg``
  and ``test/<class>/*``, such as ``../shared/data/cifar10-jpeg.tar.gz``. Classes are the
  sorted folder names; archives are read in place (streamed), never extracted.

Every source becomes a :class:`Dataset` of uint8 arrays (N, 32, 32, 3) with int64 labels.
Decoded arrays are cached once per source in ``<cache_dir>/datasets/<name>-<digest16>.npz``
(written atomically), keyed by a digest of the source, so later sweeps skip decoding.
Measured on a 2-core CPU machine, one process: ``cifar10-jpeg.tar.gz`` (60,000 JPEGs)
streams and decodes in about 9 s idle (16-18 s with the cores shared), ``make_shapes()``
(7,000 images) takes 0.7-1 s, and a cached load of either takes under 0.5 s.
"""

from __future__ import annotations

import hashlib
import io
import math
from fractions import Fraction
import socket
import tarfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

import numpy as np

from synthaug.core.files import DamagedFile, load_checked_arrays, save_checked_arrays
from synthaug.data.shapes import (IMAGE_SIZE, SHAPE_CLASSES, SHAPE_FINE_CLASSES, SHAPES_FINE_TEST_PER_CLASS,
                                  SHAPES_FINE_TRAIN_PER_CLASS, SHAPES_SEED, SHAPES_TEST_PER_CLASS,
                                  SHAPES_TRAIN_PER_CLASS, SHAPES_VERSION, make_fine_shapes, make_shapes)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")
ARCHIVE_SUFFIXES = (".tar.gz", ".tar")
BUILTIN_SOURCES = ("shapes", "shapes-fine", "cifar10")
SOURCE_HELP = "shapes, cifar10, a folder, or a .tar/.tar.gz with train/ and test/ class folders"
OFFLINE_HELP = "--data /path/to/cifar10-jpeg.tar.gz or a class-folder directory"
DOWNLOAD_TIMEOUT_S = 60  # per socket operation: a dead network fails instead of hanging

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The built-in shapes stand in for CIFAR-10's classes in smoke runs, one for one in class order (truck is
# frame, ship is plus): the explicit alias sweeps that name CIFAR classes use on `shapes`.
SHAPES_AS_CIFAR10 = dict(zip(CIFAR10_CLASSES, (
    "circle", "square", "triangle", "diamond", "cross", "ring", "hbar", "vbar", "plus", "frame")))


class DataError(ValueError):
    """Bad or unreadable data source; message is one line fit for a CLI."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image data set, train and test splits, as uint8 (N, 32, 32, 3) arrays."""

    name: str  # "shapes", "cifar10", or the file/folder stem
    classes: tuple[str, ...]
    train_x: np.ndarray  # uint8 (N, 32, 32, 3)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    digest: str  # hex digest of the source (identifies it in pool ids and manifests)
    blank: bool = False  # data_outline's outline: labels and counts, blank images (nothing decoded)

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
                raise DataError(f"{self.name}: {split} images must be uint8 (N, 32, 32, 3), got {x.dtype} {x.shape}")
            if y.dtype != np.int64 or y.shape != (len(x),):
                raise DataError(f"{self.name}: {split} labels must be int64 ({len(x)},), got {y.dtype} {y.shape}")
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise DataError(f"{self.name}: {split} labels fall outside 0..{len(self.classes) - 1}")

    @property
    def num_classes(self) -> int:
        """How many classes the data set has."""
        return len(self.classes)


# ---------------------------------------------------------------- sources


def resolve_source(source: str) -> str:
    """Normalise a --data value: 'shapes' and 'cifar10' stay; a path becomes absolute.

    Raises DataError (one line naming --data and what is allowed) when the value is none
    of shapes, cifar10, a folder with train/ and test/, a .tar or .tar.gz, or does not
    exist. Cheap: nothing is decoded.
    """
    if source in BUILTIN_SOURCES:
        return source
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        missing = [split for split in SPLITS if not (path / split).is_dir()]
        if missing:
            folders = "/ or ".join(missing)
            raise DataError(f"--data {source!r}: folder has no {folders}/ class folders; use {SOURCE_HELP}")
        return str(path)
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        return str(path)
    problem = "is not a folder, .tar or .tar.gz" if path.exists() else "does not exist"
    raise DataError(f"--data {source!r}: {problem}; use {SOURCE_HELP}")


def source_name(source: str) -> str:
    """A short name for a resolved source: 'shapes', 'cifar10', or the file/folder stem."""
    if source in BUILTIN_SOURCES:
        return source
    name = Path(source).name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def source_digest(source: str) -> str:
    """The hex sha256 identifying a resolved source's content (see the module docstring)."""
    h = hashlib.sha256()
    if source == "shapes":
        h.update(repr(("shapes", SHAPES_VERSION, SHAPES_SEED, SHAPES_TRAIN_PER_CLASS, SHAPES_TEST_PER_CLASS)).encode())
    elif source == "shapes-fine":
        h.update(repr(("shapes-fine", SHAPES_VERSION, SHAPES_SEED, SHAPES_FINE_TRAIN_PER_CLASS,
                       SHAPES_FINE_TEST_PER_CLASS)).encode())
    elif source == "cifar10":
        h.update(b"cifar10-torchvision-v1")
    elif Path(source).is_dir():
        root = Path(source)
        for rel in sorted(_folder_images(root)):
            st = (root / rel).stat()
            h.update(repr((rel, st.st_size, st.st_mtime_ns)).encode() + b"\n")
    else:
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_dataset(source: str, cache_dir: str | Path) -> Dataset:
    """Load (decoding once, then from the npz cache; a damaged cache is decoded again)."""
    source, name, digest, cache_file = _locate(source, cache_dir)
    cached = _from_cache(cache_file, name, digest, repair=True)
    if cached is not None:
        return cached
    classes, arrays = _decode(source, Path(cache_dir))
    dataset = Dataset(name, classes, *arrays, digest=digest)
    _write_cache(cache_file, dataset)
    return dataset


def _locate(source: str, cache_dir: str | Path) -> tuple[str, str, str, Path]:
    """(the resolved source, its name, its digest, its cache file)."""
    source = resolve_source(source)
    name, digest = source_name(source), source_digest(source)
    return source, name, digest, Path(cache_dir) / "datasets" / f"{name}-{digest[:16]}.npz"


def _from_cache(cache_file: Path, name: str, digest: str, repair: bool) -> Dataset | None:
    """The cached data set, or None when there is none or it is damaged (then, with `repair`, the file is
    removed, with a warning, to be decoded again; without, it is left as it is)."""
    if not cache_file.exists():
        return None
    try:
        return _read_cache(cache_file, name, digest)
    except DamagedFile as err:
        if repair:
            cache_file.unlink(missing_ok=True)
            print(f"warning: {err}; decoding it again", flush=True)
        return None


def data_outline(source: str, cache_dir: str | Path) -> Dataset:
    """What a source holds (classes, labels, digest) with blank images, for a dry run: nothing is
    decoded, downloaded or written. The decoded cache, when there is one, is returned as it is (not blank)."""
    source, name, digest, cache_file = _locate(source, cache_dir)
    cached = _from_cache(cache_file, name, digest, repair=False)     # a dry run writes (and removes) nothing
    if cached is not None:
        return cached
    if source in BUILTIN_SOURCES:
        classes, train, test = {"shapes": (SHAPE_CLASSES, SHAPES_TRAIN_PER_CLASS, SHAPES_TEST_PER_CLASS),
                                "shapes-fine": (SHAPE_FINE_CLASSES, SHAPES_FINE_TRAIN_PER_CLASS,
                                                SHAPES_FINE_TEST_PER_CLASS),
                                "cifar10": (CIFAR10_CLASSES, 5000, 1000)}[source]
        labels = {"train": np.repeat(np.arange(len(classes)), train), "test": np.repeat(np.arange(len(classes)), test)}
    else:
        names = sorted(_folder_images(Path(source)) if Path(source).is_dir() else (rel for rel, _ in _tar_images(source, read=False)))
        found = [PurePosixPath(rel).parts[-3:-1] for rel in names if len(PurePosixPath(rel).parts) >= 3]
        classes = tuple(sorted({label for split, label in found if split == "train"}))
        if not classes:
            raise DataError(f"{source}: no images under train/<class>/; use {SOURCE_HELP}")
        index = {label: i for i, label in enumerate(classes)}
        labels = {split: np.array([index[label] for s, label in found if s == split and label in index], np.int64)
                  for split in SPLITS}
    blank = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    images = {split: np.broadcast_to(blank, (len(labels[split]), IMAGE_SIZE, IMAGE_SIZE, 3)) for split in SPLITS}
    return Dataset(name, tuple(classes), images["train"], labels["train"].astype(np.int64), images["test"],
                   labels["test"].astype(np.int64), digest=digest, blank=True)


def _decode(source: str, cache_dir: Path) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """Decode a resolved source into (classes, (train_x, train_y, test_x, test_y))."""
    if source == "shapes":
        return SHAPE_CLASSES, make_shapes()
    if source == "shapes-fine":
        return SHAPE_FINE_CLASSES, make_fine_shapes()
    if source == "cifar10":
        return _load_torchvision_cifar10(cache_dir / "torchvision")
    if Path(source).is_dir():
        root = Path(source)
        files = ((rel, (root / rel).read_bytes()) for rel in sorted(_folder_images(root)))
        return _decode_class_folders(files, source)
    return _decode_class_folders(_tar_images(source), source)


# ---------------------------------------------------------------- class-folder layout


def _is_image(rel: str) -> bool:
    """Whether a relative path names an image file (hidden files such as ._x.jpg excluded)."""
    name = PurePosixPath(rel).name
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _folder_images(root: Path) -> list[str]:
    """Relative POSIX paths of the image files under a folder."""
    rels = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [rel for rel in rels if _is_image(rel)]


def _tar_images(path: str, read: bool = True) -> Iterator[tuple[str, bytes | None]]:
    """Stream (member path, bytes) for every image file in a .tar or .tar.gz, in archive order
    (bytes None when not `read`: the names only)."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                rel = member.name.removeprefix("./")
                if member.isfile() and _is_image(rel):
                    yield rel, tar.extractfile(member).read() if read else None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable archive ({_one_line(e)})") from e


def _decode_class_folders(
    files: Iterable[tuple[str, bytes]], source: str
) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """Decode (relative path, bytes) pairs laid out as <split>/<class>/<file> into arrays.

    Paths are sorted, so the arrays' order does not depend on the order files come in;
    one leading folder (``cifar10/train/...``) is allowed.
    """
    by_split: dict[str, list[tuple[str, str, bytes]]] = {split: [] for split in SPLITS}
    for rel, data in sorted(files, key=lambda item: item[0]):
        parts = PurePosixPath(rel).parts
        if len(parts) < 3 or parts[-3] not in SPLITS:
            raise DataError(f"{source}: image {rel} is not in train/<class>/ or test/<class>/")
        by_split[parts[-3]].append((rel, parts[-2], data))
    for split in SPLITS:
        if not by_split[split]:
            raise DataError(f"{source}: no images under {split}/<class>/; use {SOURCE_HELP}")
    classes = tuple(sorted({label for _, label, _ in by_split["train"]}))
    extra = sorted({label for _, label, _ in by_split["test"]} - set(classes))
    if extra:
        raise DataError(f"{source}: test/ has classes missing from train/: {', '.join(extra)}")
    index = {label: i for i, label in enumerate(classes)}
    arrays = []
    for split in SPLITS:
        items = by_split[split]
        arrays.append(np.stack([_decode_image(data, f"{source}:{rel}") for rel, _, data in items]))
        arrays.append(np.array([index[label] for _, label, _ in items], dtype=np.int64))
    return classes, tuple(arrays)


def _decode_image(data: bytes, where: str) -> np.ndarray:
    """Decode one image file's bytes to a uint8 (32, 32, 3) RGB array."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                raise DataError(f"{where}: image is {image.width}x{image.height}, expected 32x32")
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{where}: unreadable image ({_one_line(e)})") from e


# ---------------------------------------------------------------- torchvision CIFAR-10


def _load_torchvision_cifar10(root: Path) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """torchvision's CIFAR-10, downloaded into root when missing; DataError when offline."""
    import torchvision

    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            splits = [torchvision.datasets.CIFAR10(root=root, train=train, download=True) for train in (True, False)]
    except (OSError, RuntimeError) as e:
        raise DataError(
            f"cifar10: cannot download CIFAR-10 into {root} ({_one_line(e)}); offline, use {OFFLINE_HELP}"
        ) from e
    arrays = []
    for split in splits:
        arrays += [np.ascontiguousarray(split.data, dtype=np.uint8), np.asarray(split.targets, dtype=np.int64)]
    return tuple(splits[0].classes), tuple(arrays)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Set the default socket timeout for the duration of a download, then restore it."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


# ---------------------------------------------------------------- cache


CACHED_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def _write_cache(path: Path, dataset: Dataset) -> None:
    """Write a dataset's arrays to an npz file atomically, with their checksum."""
    save_checked_arrays(path, {k: getattr(dataset, k) for k in CACHED_ARRAYS},
                        classes=np.array(dataset.classes, dtype=str), digest=np.array(dataset.digest))


def _read_cache(path: Path, name: str, digest: str) -> Dataset:
    """Read a dataset written by _write_cache; DamagedFile when it is unreadable or fails its checksum (a cache
    written before checksums were passes)."""
    try:
        arrays, extra = load_checked_arrays(path, CACHED_ARRAYS, ("digest", "classes"), require_sum=False)
    except DamagedFile as err:
        raise DamagedFile(f"data cache {path} is damaged ({err})") from None
    if str(extra["digest"]) != digest:
        raise DataError(f"{path}: cache holds digest {str(extra['digest'])[:16]}, expected {digest[:16]}; delete it")
    return Dataset(name=name, classes=tuple(str(c) for c in extra["classes"]), digest=digest, **arrays)


def _one_line(error: BaseException) -> str:
    """An exception's message squeezed onto one line."""
    return " ".join(str(error).split()) or type(error).__name__


# ---------------------------------------------------------------- selection


def long_tail_counts(n_max: int, imbalance: float, num_classes: int) -> list[int]:
    """n_i = floor(n_max * imbalance ** (i / (num_classes - 1))), the study's CIFAR-LT profile, exactly.

    n_max=5000, imbalance=0.1, num_classes=10 gives 5000, 3871, ..., 500. The floor is of the exact
    value (imbalance read as the decimal it is written as): a float product that lands a hair below
    an integer (0.1 ** 1 * 5000 = 499.99999...) is not floored to the integer below. m <= n * r ** (i / k)
    is checked as m ** k <= n ** k * r ** i in rational arithmetic.
    """
    if n_max < 0 or not 0 < imbalance <= 1 or num_classes < 1:
        raise ValueError(
            f"need n_max >= 0, 0 < imbalance <= 1, num_classes >= 1; got {n_max}, {imbalance}, {num_classes}"
        )
    if num_classes == 1:
        return [n_max]
    ratio, k = Fraction(repr(float(imbalance))), num_classes - 1
    counts = []
    for i in range(num_classes):
        bound = Fraction(n_max) ** k * ratio ** i          # m ** k <= bound  <=>  m <= the exact value
        m = math.floor(n_max * imbalance ** (i / k))
        while m > 0 and Fraction(m) ** k > bound:
            m -= 1
        while Fraction(m + 1) ** k <= bound:
            m += 1
        counts.append(m)
    return counts


def class_permutations(labels: np.ndarray, num_classes: int, seed: int) -> list[np.ndarray]:
    """Per class, the indices of that class's images in a seeded random order.

    Taking a prefix of each gives nested selections: for the same seed, a shorter prefix is
    a subset of a longer one. Class c's order comes from np.random.default_rng([seed, c]),
    so it does not depend on the other classes.
    """
    labels = np.asarray(labels)
    orders = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        orders.append(members[np.random.default_rng([seed, c]).permutation(len(members))])
    return orders
