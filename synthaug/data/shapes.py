"""The built-in procedural data sets: ``shapes`` (10 classes of coloured shapes, the smoke preset's stand-in
for CIFAR-10) and ``shapes-fine`` (each shape small or large, 20 classes: the outside set the smoke E2a stand-in
learns from). Deterministic for a seed; synthaug.data.sources serves them as the ``--data`` values of those names."""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 32
SHAPES_VERSION = "shapes-v2"  # bump when make_shapes' pictures change: it keys the cache
SHAPES_SEED = 0  # the built-in 'shapes' source uses make_shapes' defaults
SHAPES_TRAIN_PER_CLASS = 600  # 6,000 train images: enough for a small classifier and DDPM
SHAPES_TEST_PER_CLASS = 100
SHAPES_FINE_TRAIN_PER_CLASS, SHAPES_FINE_TEST_PER_CLASS = 300, 50      # 6,000 and 1,000 images, as shapes
SHAPE_CLASSES = (
    "circle", "square", "triangle", "diamond", "cross",
    "ring", "hbar", "vbar", "plus", "frame",
)
# shapes-fine's classes: shape i small is class 2i, large 2i + 1 (diffusion.imagenet's "shapes-fine" label map)
SHAPE_FINE_CLASSES = tuple(f"{shape}-{size}" for shape in SHAPE_CLASSES for size in ("small", "large"))


def make_shapes(
    seed: int = SHAPES_SEED,
    train_per_class: int = SHAPES_TRAIN_PER_CLASS,
    test_per_class: int = SHAPES_TEST_PER_CLASS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The procedural 'shapes' data set: (train_x, train_y, test_x, test_y), classes SHAPE_CLASSES.

    Ten shapes with random position and size, each class drawn in its own hue band (random
    saturation and value) on a near-grey background with a mild gradient and a little
    noise; the shape always contrasts with its background. Deterministic for a seed; the test split does not
    depend on the train size.
    """
    train = _draw_shapes(np.random.default_rng([seed, 0]), train_per_class)
    test = _draw_shapes(np.random.default_rng([seed, 1]), test_per_class)
    return (*train, *test)


def make_fine_shapes(seed: int = SHAPES_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The built-in 'shapes-fine' set: (train_x, train_y, test_x, test_y), classes SHAPE_FINE_CLASSES; drawn
    from other random streams than make_shapes', so no image is one of the shapes'."""
    train = _draw_fine_shapes(np.random.default_rng([seed, 2]), SHAPES_FINE_TRAIN_PER_CLASS)
    test = _draw_fine_shapes(np.random.default_rng([seed, 3]), SHAPES_FINE_TEST_PER_CLASS)
    return (*train, *test)


def _draw_shapes(rng: np.random.Generator, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw per_class images of every shape class, in a shuffled order."""
    labels = rng.permutation(np.repeat(np.arange(len(SHAPE_CLASSES), dtype=np.int64), per_class))
    radius = rng.uniform(6.0, 11.0, len(labels))
    return _render_shapes(rng, labels, radius, noise=4.0), labels


def _draw_fine_shapes(rng: np.random.Generator, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw per_class images of every SHAPE_FINE_CLASSES class (a shape, small or large), shuffled: sizes
    outside the shapes' range on either side (radius 4-6 or 11-13.5, the shapes' 6-11) and twice the noise."""
    fine = rng.permutation(np.repeat(np.arange(len(SHAPE_FINE_CLASSES), dtype=np.int64), per_class))
    large = fine % 2 == 1
    radius = np.where(large, rng.uniform(11.0, 13.5, len(fine)), rng.uniform(4.0, 6.0, len(fine)))
    return _render_shapes(rng, fine // 2, radius, noise=8.0), fine


def _render_shapes(rng: np.random.Generator, labels: np.ndarray, radius: np.ndarray, noise: float) -> np.ndarray:
    """uint8 (N, 32, 32, 3): shape SHAPE_CLASSES[label] of each radius at a random place, class-tinted, on a
    greyish background with a mild gradient and `noise` levels of Gaussian noise."""
    n = len(labels)
    cx = radius + 1 + rng.uniform(0, 1, n) * (IMAGE_SIZE - 3 - 2 * radius)  # shape stays inside
    cy = radius + 1 + rng.uniform(0, 1, n) * (IMAGE_SIZE - 3 - 2 * radius)
    grid = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    dx = grid[None, None, :] - cx[:, None, None].astype(np.float32)
    dy = grid[None, :, None] - cy[:, None, None].astype(np.float32)
    mask = _shape_masks(labels, dx, dy, radius[:, None, None].astype(np.float32))

    background, colour = _contrasting_colours(rng, labels)
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    strength = rng.uniform(0, 40, (n, 1, 1)).astype(np.float32)  # mild gradient: +-20 levels at most
    ramp = strength * (np.cos(angle) * dx + np.sin(angle) * dy) / IMAGE_SIZE
    image = background[:, None, None, :] + ramp[..., None]
    image = np.where(mask[..., None], colour[:, None, None, :], image)
    image += noise * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _shape_masks(labels: np.ndarray, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean (N, 32, 32) masks: shape SHAPE_CLASSES[label] of radius r at offset (dx, dy)."""
    ax, ay, dist = np.abs(dx), np.abs(dy), np.hypot(dx, dy)
    box = np.maximum(ax, ay)
    t = 0.3 * r  # half-thickness of bars and strokes
    w = 0.4 * r  # wall thickness of the hollow shapes
    masks = {
        "circle": dist <= r,
        "square": box <= 0.8 * r,
        "triangle": (ay <= 0.8 * r) & (ax <= 0.5 * (dy + 0.8 * r)),  # apex up
        "diamond": ax + ay <= r,
        "cross": (np.abs(ax - ay) <= t) & (box <= 0.8 * r),  # an X
        "ring": (dist <= r) & (dist >= r - w),
        "hbar": (ax <= r) & (ay <= t),
        "vbar": (ay <= r) & (ax <= t),
        "plus": ((ax <= t) | (ay <= t)) & (box <= r),
        "frame": (box <= 0.8 * r) & (box >= 0.8 * r - w),
    }
    index = labels[:, None, None]
    out = np.zeros(np.broadcast_shapes(dx.shape, dy.shape), dtype=bool)
    for c, name in enumerate(SHAPE_CLASSES):
        out |= (index == c) & masks[name]
    return out


def _contrasting_colours(rng: np.random.Generator, labels: np.ndarray,
                         min_luma_gap: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """(background, shape) RGB pairs: a class-tinted shape on a greyish background.

    Each class owns a hue band (class c: hue c/10, +-0.025) at random saturation and value,
    so a small DDPM trained for minutes on a CPU already draws class-recognisable samples;
    the shape carries the class too. Backgrounds are near-grey and redrawn until their luma
    differs from the shape's by min_luma_gap.
    """
    n = len(labels)
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    hue = (labels / len(SHAPE_CLASSES) + rng.uniform(-0.025, 0.025, n)) % 1.0
    colour = _hsv_to_rgb(hue, rng.uniform(0.65, 1.0, n), rng.uniform(0.55, 1.0, n)) * 255
    tint = rng.uniform(-15, 15, (n, 3))
    background = (rng.uniform(35, 220, (n, 1)) + tint).astype(np.float32)  # room for gradient and noise
    bad = np.abs((colour - background) @ luma) < min_luma_gap
    while bad.any():  # resample only the failures: deterministic for the generator's state
        background[bad] = rng.uniform(35, 220, (int(bad.sum()), 1)) + tint[bad]
        bad = np.abs((colour - background) @ luma) < min_luma_gap
    return background, colour.astype(np.float32)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB in [0, 1], (n, 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    return v[:, None] - (v * s)[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)
