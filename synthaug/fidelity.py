"""E5, fidelity: how a generator's samples differ from the real images of each class.

    settings = Settings(preset("smoke"), data="shapes", cache_dir=Path(".synthaug"), samples_per_class=100)
    result = run_fidelity(settings)        # prepares generators (cached), takes pooled samples (cached)
    write_outputs(result, folder)           # report.md, CSVs, PNGs
    log_fidelity(uri, result, folder)       # an "analysis" run in MLflow experiment "fidelity"

What it measures, per generator of the preset, against the real test split:

- image statistics per class: brightness (mean luminance, ITU-R BT.601 weights, 0-255),
  background (mean luminance of the BORDER-pixel frame, a proxy for the background) and
  saturation (mean HSV S, 0-1); sample vs real by Welch's t and Mann-Whitney U, BH q over
  the table. This is where the study's "unconditional samples have darker backgrounds"
  shows up, or does not; the two generators are also compared directly, pooled;
- FID and KID (Binkowski et al. 2018: cubic polynomial kernel, unbiased MMD^2 over random
  subsets) in a feature space: Inception-v3 pool3 when torchvision's weights are already in
  the torch hub cache (never downloaded), else the penultimate layer of the project's own
  CIFAR classifier (the pseudo-labeller), which is not comparable to published FIDs;
- precision and recall (Kynkaanniemi et al. 2019: k-NN balls, k = 3) in the same space,
  with the real set subsampled to the generated set's size, as the paper compares equal sets;
- the pseudo-labeller: its confidence histogram on the unconditional stream, and for a
  conditional generator the share of class-c samples it labels c.

The metric functions at the top are pure (arrays in, numbers out) and tested on fixed inputs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlparse

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats as st  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402
from torchvision.models import Inception_V3_Weights, inception_v3  # noqa: E402

from synthaug.classifier import predict  # noqa: E402
from synthaug.config import GeneratorSpec, Preset  # noqa: E402
from synthaug.data import Dataset, load_dataset  # noqa: E402
from synthaug.figures import SampleGrid, plot_sample_grids  # noqa: E402
from synthaug.pools import UNCONDITIONAL  # noqa: E402
from synthaug.devices import default_device  # noqa: E402
from synthaug.prepare import (PreparedGenerator, load_labeller, prepare_generator,  # noqa: E402
                              prepare_labeller)
from synthaug.server import DDPMServer, ShortPoolError  # noqa: E402
from synthaug.significance import format_p, markdown_table  # noqa: E402
from synthaug.stats import benjamini_hochberg  # noqa: E402
from synthaug.tracking import ANALYSIS, ROLE, ensure_experiment, log_folder_run  # noqa: E402

LUMA = np.array([0.299, 0.587, 0.114])     # ITU-R BT.601 luma weights
BORDER = 4                                  # pixels of the frame taken as background
KNN_K = 3                                   # Kynkaanniemi et al.'s k
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000    # Binkowski et al.'s protocol
CHUNK = 1024                                # rows of a distance matrix held at once
STATISTICS = ("brightness", "background", "saturation")
EXPERIMENT = "fidelity"


# ---------------------------------------------------------------------------- image statistics (pure)


def luminance(images: np.ndarray) -> np.ndarray:
    """Per-pixel luma, float64 (N, H, W) in 0..255, of uint8 (N, H, W, 3) RGB images."""
    return np.asarray(images, np.float64) @ LUMA


def brightness(images: np.ndarray) -> np.ndarray:
    """Mean luminance of each image, (N,)."""
    return _brightness(luminance(images))


def border_luminance(images: np.ndarray, width: int = BORDER) -> np.ndarray:
    """Mean luminance of each image's outer frame `width` pixels wide, (N,): a background proxy."""
    return _border(luminance(images), width)


def _brightness(lum: np.ndarray) -> np.ndarray:
    return lum.mean(axis=(1, 2))


def _border(lum: np.ndarray, width: int = BORDER) -> np.ndarray:
    height, breadth = lum.shape[1:]
    if not 0 < 2 * width < min(height, breadth):
        raise ValueError(f"width: 1..{(min(height, breadth) - 1) // 2} for {height}x{breadth} images, got {width}")
    frame = np.ones((height, breadth), bool)
    frame[width:-width, width:-width] = False
    return lum[:, frame].mean(axis=1)


def saturation(images: np.ndarray) -> np.ndarray:
    """Mean HSV saturation, (max - min) / max of the RGB channels (0 for black), of each image, (N,)."""
    x = np.asarray(images, np.float64)
    top, bottom = x.max(axis=3), x.min(axis=3)
    s = np.divide(top - bottom, top, out=np.zeros_like(top), where=top > 0)
    return s.mean(axis=(1, 2))


def image_statistics(images: np.ndarray) -> pd.DataFrame:
    """A row an image: brightness, background, saturation."""
    lum = luminance(images)         # once: both luminance statistics read it
    return pd.DataFrame({"brightness": _brightness(lum), "background": _border(lum),
                         "saturation": saturation(images)})


@dataclass(frozen=True)
class TwoSample:
    """a vs b: means, a - b, Welch's t-test and the Mann-Whitney U test (both two-sided)."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    mean_diff: float
    welch_t: float
    welch_p: float
    mwu_u: float
    mwu_p: float


def two_sample(a: Sequence[float], b: Sequence[float]) -> TwoSample:
    """Welch's t (nan below 2 a side or with no variance) and Mann-Whitney U (nan when a side is empty)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    mean_a = float(a.mean()) if len(a) else math.nan
    mean_b = float(b.mean()) if len(b) else math.nan
    t = p = u = pu = math.nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if len(a) >= 2 and len(b) >= 2:
            welch = st.ttest_ind(a, b, equal_var=False)
            t, p = float(welch.statistic), float(welch.pvalue)
        if len(a) and len(b):
            mwu = st.mannwhitneyu(a, b, alternative="two-sided")
            u, pu = float(mwu.statistic), float(mwu.pvalue)
    return TwoSample(len(a), len(b), mean_a, mean_b, mean_a - mean_b, t, p, u, pu)


# ---------------------------------------------------------------------------- distribution distances (pure)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), the trace term from the eigenvalues of the
    symmetric S1^1/2 S2 S1^1/2 (same spectrum as S1 S2), which stays real and stable when S is singular."""
    diff = np.asarray(mu1, float) - np.asarray(mu2, float)
    root = _psd_sqrt(np.asarray(sigma1, float))
    middle = root @ np.asarray(sigma2, float) @ root
    covmean_trace = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * covmean_trace)


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D); nan below 2 rows a set."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a . b / D + 1)^3, KID's kernel."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """The unbiased estimate of MMD^2 under the polynomial kernel (diagonals of K_aa, K_bb left out)."""
    m, n = len(a), len(b)
    kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def kid(a: np.ndarray, b: np.ndarray, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0) -> tuple[float, float]:
    """KID: mean and sd of mmd2_unbiased over random subsets (min(subset_size, |a|, |b|) rows each)."""
    size = min(subset_size, len(a), len(b))
    if size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def knn_radii(x: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Each point's distance to its k-th nearest other point (column 0 of a sorted row is itself)."""
    radii = [np.partition(cdist(x[i:i + CHUNK], x), k, axis=1)[:, k] for i in range(0, len(x), CHUNK)]
    return np.concatenate(radii)


def coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """The share of points inside at least one ball (centre, radius)."""
    inside = [(cdist(points[i:i + CHUNK], centres) <= radii[None, :]).any(axis=1)
              for i in range(0, len(points), CHUNK)]
    return float(np.concatenate(inside).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = KNN_K) -> tuple[float, float]:
    """Kynkaanniemi et al.: precision = fake points inside the real k-NN manifold, recall = real points
    inside the fake one; nan when a set has k points or fewer."""
    if len(real) <= k or len(fake) <= k:
        return math.nan, math.nan
    return coverage(fake, real, knn_radii(real, k)), coverage(real, fake, knn_radii(fake, k))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


# ---------------------------------------------------------------------------- labeller diagnostics (pure)


def confidence_histogram(confidence: Sequence[float], bins: int = 10) -> pd.DataFrame:
    """Counts of max-probabilities in `bins` equal bins of [0, 1]: bin_low, bin_high, count, fraction."""
    confidence = np.asarray(confidence, float)
    counts, edges = np.histogram(confidence, bins=bins, range=(0.0, 1.0))
    edges = np.round(edges, 12)
    return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "count": counts,
                         "fraction": counts / max(1, len(confidence))})


def class_agreement(predicted: np.ndarray, intended: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Per class c: samples meant as c, how many the labeller labels c, and the fraction."""
    rows = []
    for c, name in enumerate(classes):
        mine = predicted[intended == c]
        rows.append({"class": name, "n": len(mine), "agree": int((mine == c).sum()),
                     "fraction": float((mine == c).mean()) if len(mine) else math.nan})
    return pd.DataFrame(rows, columns=["class", "n", "agree", "fraction"])


# ---------------------------------------------------------------------------- feature spaces


@dataclass(frozen=True)
class FeatureSpace:
    """A feature extractor for FID, KID, precision and recall, and how to describe its numbers."""

    name: str
    comparable: bool                            # to published FIDs (Inception) or not
    extract: Callable[[np.ndarray], np.ndarray]  # uint8 (N, 32, 32, 3) -> float64 (N, D)

    @property
    def fid_label(self) -> str:
        return "FID" if self.comparable else "FID (classifier features, not comparable to published FID)"


def inception_weights_path() -> Path | None:
    """torchvision's Inception-v3 ImageNet weights in the torch hub cache, or None; never downloads."""
    name = Path(urlparse(Inception_V3_Weights.IMAGENET1K_V1.url).path).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def inception_space(path: Path, device: str, batch_size: int = 100) -> FeatureSpace:
    """Inception-v3 pool3 (2048-d) of images resized to 299 x 299, scaled to [-1, 1] (what the
    Google weights expect: torchvision's transform_input does the same from ImageNet scaling)."""
    model = inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.fc = torch.nn.Identity()
    model = model.to(device).eval()

    @torch.no_grad()
    def extract(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.as_tensor(images[i:i + batch_size], device=device).permute(0, 3, 1, 2).float() / 255
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(model(x * 2 - 1).double().cpu())
        return torch.cat(out).numpy()
    return FeatureSpace("Inception-v3 pool3 (torchvision ImageNet weights)", True, extract)


def classifier_space(model, device: str) -> FeatureSpace:
    """The penultimate layer (the input of the final linear layer) of a CIFAR ResNet."""
    def extract(images: np.ndarray) -> np.ndarray:
        captured = []
        hook = model.linear.register_forward_pre_hook(lambda _, args: captured.append(args[0].detach().float().cpu()))
        try:
            predict(model, images, device)
        finally:
            hook.remove()
        return np.concatenate([c.numpy() for c in captured]).astype(np.float64)
    return FeatureSpace("pseudo-labeller ResNet18 penultimate layer", False, extract)


# ---------------------------------------------------------------------------- the E5 run


@dataclass(frozen=True)
class Settings:
    """What a fidelity run compares and where it finds things."""

    preset: Preset
    data: str                           # a data source (synthaug.data.resolve_source)
    cache_dir: Path                     # datasets/, generators/, labellers/, pools/
    samples_per_class: int = 100
    seed: int = 0                       # the pool seed: pools are shared with trials of this seed
    device: str | None = None           # default: cuda when available
    progress: bool = False


@dataclass(frozen=True, eq=False)
class GeneratorSamples:
    """A generator's samples for the comparison, and its unconditional stream's labeller output."""

    name: str
    conditional: bool
    images: np.ndarray          # uint8 (n, 32, 32, 3)
    labels: np.ndarray          # int64 (n,): the class conditioned on, or the labeller's label
    predicted: np.ndarray       # int64 (n,): the labeller's label (== labels for unconditional)
    stream_confidence: np.ndarray   # float32: the labeller's max-probability on the whole stream read
    short_classes: tuple[str, ...]  # classes with fewer than samples_per_class (unconditional only)


@dataclass(frozen=True, eq=False)
class FidelityResult:
    """Everything the report, the CSVs and the figures show."""

    preset: str
    data: str
    classes: tuple[str, ...]
    samples_per_class: int
    seed: int
    feature_space: str
    fid_label: str
    labeller_test_acc: float
    n_real: int
    distances: pd.DataFrame     # a row a generator: samples, fid, kid, kid_sd, precision, recall
    statistics: pd.DataFrame    # a row a generator x class x statistic: sample vs real
    pooled: pd.DataFrame        # a row a generator x statistic (all classes), and generator pairs
    values: pd.DataFrame        # a row an image: source, class, brightness, background, saturation
    confidence: pd.DataFrame    # a row a unconditional generator x bin
    agreement: pd.DataFrame     # a row a generator x class
    samples: tuple[GeneratorSamples, ...]
    real_images: np.ndarray     # up to 8 test images a class, for the sample grid
    real_labels: np.ndarray
    notes: tuple[str, ...]


def run_fidelity(settings: Settings) -> FidelityResult:
    """Prepare each generator of the preset, take its samples, and compare them with the test split."""
    device = settings.device or default_device()
    dataset = load_dataset(settings.data, settings.cache_dir)
    specs, left_out = usable_generators(settings.preset.generators, dataset.classes)
    prepared = [prepare_generator(spec, settings.data, settings.cache_dir, device, progress=settings.progress,
                                  dataset=dataset) for spec in specs]
    samples = tuple(draw_samples(p, spec, settings, dataset.classes, device) for p, spec in zip(prepared, specs))
    labeller_path, labeller_acc = reference_labeller(prepared, settings, dataset, device)
    labeller = load_labeller(labeller_path, device)
    samples = tuple(_with_predictions(s, labeller, device) for s in samples)
    space = feature_space(labeller, device)
    real_features = space.extract(dataset.test_x)
    notes = left_out + [f"{s.name}: the labeller gave fewer than {settings.samples_per_class} samples to "
                        f"{', '.join(s.short_classes)}" for s in samples if s.short_classes]
    real_stats = image_statistics(dataset.test_x).assign(source="real", **{"class": _names(dataset.test_y,
                                                                                       dataset.classes)})
    sample_stats = [image_statistics(s.images).assign(source=s.name, **{"class": _names(s.labels, dataset.classes)})
                    for s in samples]
    values = pd.concat([real_stats, *sample_stats], ignore_index=True)[["source", "class", *STATISTICS]]
    grid_index = np.concatenate([np.flatnonzero(dataset.test_y == c)[:8] for c in range(dataset.num_classes)])
    return FidelityResult(
        preset=settings.preset.name, data=dataset.name, classes=dataset.classes,
        samples_per_class=settings.samples_per_class, seed=settings.seed, feature_space=space.name,
        fid_label=space.fid_label, labeller_test_acc=labeller_acc, n_real=len(dataset.test_y),
        distances=distances(real_features, {s.name: space.extract(s.images) for s in samples if len(s.images)},
                            seed=settings.seed),        # k = KNN_K, as the report says
        statistics=compare_per_class(values, dataset.classes),
        pooled=compare_pooled(values),
        values=values,
        confidence=pd.concat([confidence_histogram(s.stream_confidence).assign(generator=s.name)
                              for s in samples if not s.conditional] or [_empty_histogram()], ignore_index=True),
        agreement=pd.concat([class_agreement(s.predicted, s.labels, dataset.classes).assign(generator=s.name)
                             for s in samples if s.conditional] or [_empty_agreement()], ignore_index=True),
        samples=samples, real_images=dataset.test_x[grid_index], real_labels=dataset.test_y[grid_index],
        notes=tuple(notes))


def usable_generators(specs: Sequence[GeneratorSpec], classes: Sequence[str]) -> tuple[list[GeneratorSpec], list[str]]:
    """The preset's generators that can serve here, and a note for each one left out (a
    pretrained model that is not on this machine, or whose label map misses a class)."""
    from synthaug.generators import generator_kind

    usable, notes = [], []
    for spec in specs:
        problem = generator_kind(spec).problem(spec, classes, classes)
        if problem:
            notes.append(f"{spec.name} left out: {problem}")
        else:
            usable.append(spec)
    return usable, notes


def draw_samples(prepared: PreparedGenerator, spec: GeneratorSpec, settings: Settings, classes: Sequence[str],
                 device: str) -> GeneratorSamples:
    """samples_per_class images a class from the generator's pools (generated once, then read from disk).
    An unconditional pool gives a class what the labeller assigned it, up to the server's stream limit."""
    server = DDPMServer(prepared, spec, str(settings.cache_dir / "pools"), classes, device,
                        progress=settings.progress)
    parts, short = [], []
    for c, name in enumerate(classes):
        try:
            part = server.take(c, settings.samples_per_class, settings.seed)
            parts.append((part.images, part.labels))
        except ShortPoolError:                      # the labeller (almost) never says this class
            pool = server.pool(c, settings.seed)
            where = np.flatnonzero(pool.labels == c)[:settings.samples_per_class]
            parts.append((pool.images[where], pool.labels[where]))
            short.append(name)
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    stream = np.zeros(0, np.float32)
    if not prepared.conditional:
        stream = server.pool(UNCONDITIONAL, settings.seed).confidence
    return GeneratorSamples(spec.name, prepared.conditional, images, labels, labels, stream, tuple(short))


def reference_labeller(prepared: Sequence[PreparedGenerator], settings: Settings, dataset: Dataset,
                       device: str) -> tuple[str, float]:
    """(path, test accuracy) of the pseudo-labeller: the first unconditional generator's, else one
    trained (and cached) by synthaug.prepare with the first generator's labeller recipe."""
    for p in prepared:
        if not p.conditional:
            return p.labeller_path, p.labeller_test_acc
    # the same cache folder the unconditional generators' labellers use
    path, _, accuracy = prepare_labeller(settings.preset.generators[0], dataset, settings.cache_dir, device,
                                         settings.progress)
    return str(path), accuracy


def feature_space(labeller, device: str) -> FeatureSpace:
    """Inception-v3 when its weights are on disk, else the labeller's penultimate features."""
    path = inception_weights_path()
    return inception_space(path, device) if path else classifier_space(labeller, device)


def distances(real: np.ndarray, generated: dict[str, np.ndarray], k: int = KNN_K, seed: int = 0) -> pd.DataFrame:
    """A row a generator: FID, KID (mean, sd) against every real image; precision and recall against
    a seeded subsample of the real set the size of the generated one."""
    rows = []
    for name, fake in generated.items():
        kid_mean, kid_sd = kid(real, fake, seed=seed)
        subset = np.random.default_rng(seed).choice(len(real), min(len(real), len(fake)), replace=False)
        precision, recall = precision_recall(real[np.sort(subset)], fake, k)
        rows.append({"generator": name, "samples": len(fake), "real": len(real), "fid": fid(fake, real),
                     "kid": kid_mean, "kid_sd": kid_sd, "precision": precision, "recall": recall})
    return pd.DataFrame(rows, columns=["generator", "samples", "real", "fid", "kid", "kid_sd", "precision",
                                       "recall"])


def compare_per_class(values: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """A row a generator x class x statistic: sample vs real (same class), BH q over the Welch p-values."""
    real = values[values["source"] == "real"]
    rows = []
    for source in [s for s in values["source"].unique() if s != "real"]:
        mine = values[values["source"] == source]
        for cls, statistic in itertools.product(classes, STATISTICS):
            test = two_sample(mine.loc[mine["class"] == cls, statistic], real.loc[real["class"] == cls, statistic])
            rows.append({"generator": source, "class": cls, "statistic": statistic, **_row(test)})
    table = pd.DataFrame(rows, columns=["generator", "class", "statistic", *_ROW_COLUMNS])
    table["q_bh"] = benjamini_hochberg(table["welch_p"].to_numpy(float)) if rows else []   # nan p: nan q
    return table


def compare_pooled(values: pd.DataFrame) -> pd.DataFrame:
    """All classes together: each generator vs real, and each pair of generators (a - b)."""
    sources = [s for s in values["source"].unique() if s != "real"]
    pairs = [(s, "real") for s in sources] + list(itertools.combinations(sources, 2))
    rows = [{"a": a, "b": b, "statistic": statistic,
             **_row(two_sample(values.loc[values["source"] == a, statistic], values.loc[values["source"] == b,
                                                                                        statistic]))}
            for a, b in pairs for statistic in STATISTICS]
    return pd.DataFrame(rows, columns=["a", "b", "statistic", *_ROW_COLUMNS])


_ROW_COLUMNS = ("n_sample", "n_real", "sample_mean", "real_mean", "mean_diff", "welch_t", "welch_p", "mwu_u", "mwu_p")


def _row(test: TwoSample) -> dict:
    return dict(zip(_ROW_COLUMNS, (test.n_a, test.n_b, test.mean_a, test.mean_b, test.mean_diff, test.welch_t,
                                   test.welch_p, test.mwu_u, test.mwu_p)))


def _with_predictions(samples: GeneratorSamples, labeller, device: str) -> GeneratorSamples:
    if not samples.conditional or not len(samples.images):
        return samples
    predicted = predict(labeller, samples.images, device).argmax(1).astype(np.int64)
    return dataclasses.replace(samples, predicted=predicted)


def _names(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    return np.asarray(classes, dtype=object)[labels]


def _empty_histogram() -> pd.DataFrame:
    return pd.DataFrame(columns=["bin_low", "bin_high", "count", "fraction", "generator"])


def _empty_agreement() -> pd.DataFrame:
    return pd.DataFrame(columns=["class", "n", "agree", "fraction", "generator"])


# ---------------------------------------------------------------------------- figures


def plot_statistics(values: pd.DataFrame, classes: Sequence[str]) -> Figure:
    """A panel a statistic: per class, a box for the real images and one a generator."""
    sources = ["real", *[s for s in values["source"].unique() if s != "real"]]
    colours = matplotlib.colormaps["tab10"]
    width = 0.8 / len(sources)
    fig = Figure(figsize=(2 + 0.22 * len(classes) * len(sources), 2.6 * len(STATISTICS)))
    axes = fig.subplots(len(STATISTICS), 1, sharex=True)
    for ax, statistic in zip(np.atleast_1d(axes), STATISTICS):
        for i, source in enumerate(sources):
            mine = values[values["source"] == source]
            data = [mine.loc[mine["class"] == c, statistic].to_numpy() for c in classes]
            positions = np.arange(len(classes)) - 0.4 + width * (i + 0.5)
            keep = [j for j, d in enumerate(data) if len(d)]
            if not keep:
                continue
            parts = ax.boxplot([data[j] for j in keep], positions=positions[keep], widths=width * 0.85,
                               patch_artist=True, showfliers=False, manage_ticks=False)
            for box in parts["boxes"]:
                box.set(facecolor=colours(i % 10), alpha=0.7)
            ax.plot([], [], color=colours(i % 10), lw=6, alpha=0.7, label=source)
        ax.set_ylabel(statistic + (" (0-1)" if statistic == "saturation" else " (luma 0-255)"), fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    first, last = np.atleast_1d(axes)[0], np.atleast_1d(axes)[-1]
    first.legend(fontsize=7, ncol=len(sources), loc="best")
    last.set_xticks(range(len(classes)), list(classes), rotation=30, ha="right")
    first.set_title(f"samples vs real test images per class (background = {BORDER}-pixel border)")
    fig.tight_layout()
    return fig


def plot_confidence(confidence: pd.DataFrame) -> Figure:
    """The pseudo-labeller's max-probability histogram on each unconditional stream."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    generators = list(dict.fromkeys(confidence["generator"]))
    width = 0.1 / max(1, len(generators))
    for i, name in enumerate(generators):
        part = confidence[confidence["generator"] == name]
        ax.bar(part["bin_low"].to_numpy(float) + width * (i + 0.5), part["fraction"], width=width * 0.95, label=name)
    ax.set_xlim(0, 1)
    ax.set_xlabel("labeller confidence (max probability)")
    ax.set_ylabel("share of samples")
    ax.legend(fontsize=7)
    ax.set_title("pseudo-labeller confidence on unconditional samples")
    return fig


def plot_agreement(agreement: pd.DataFrame, classes: Sequence[str]) -> Figure:
    """Per class, the share of a conditional generator's class-c samples the labeller labels c."""
    fig = Figure(figsize=(2 + 0.5 * len(classes), 3.2))
    ax = fig.subplots()
    generators = list(dict.fromkeys(agreement["generator"]))
    width = 0.8 / max(1, len(generators))
    for i, name in enumerate(generators):
        part = agreement[agreement["generator"] == name].set_index("class").reindex(classes)
        ax.bar(np.arange(len(classes)) - 0.4 + width * (i + 0.5), part["fraction"].astype(float), width=width,
               label=name)
    ax.set_xticks(range(len(classes)), list(classes), rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("labelled as the class asked for")
    ax.legend(fontsize=7)
    ax.set_title("labeller agreement with the conditioning class")
    return fig


def sample_grids_figure(result: FidelityResult) -> Figure:
    """Real test images beside each generator's samples, a row a class (synthaug.figures' layout)."""
    grids = [SampleGrid("real", True, result.real_images, result.real_labels, result.seed, caption="test split")]
    grids += [SampleGrid(s.name, s.conditional, s.images, s.labels, result.seed) for s in result.samples]
    return plot_sample_grids(grids, result.classes)


# ---------------------------------------------------------------------------- report, files, MLflow


def markdown_report(result: FidelityResult, figures: Sequence[str] = ()) -> str:
    """report.md: settings, distances, pooled and per-class statistics, labeller, notes, figures."""
    parts = [
        f"# Fidelity (E5): preset {result.preset}, data {result.data}", "",
        f"- generators: {', '.join(s.name for s in result.samples)}",
        f"- samples: {result.samples_per_class} a class a generator (pool seed {result.seed}); "
        f"real reference: the test split ({result.n_real} images)",
        f"- feature extractor: {result.feature_space}",
        f"- pseudo-labeller test accuracy: {result.labeller_test_acc:.1%}", "",
        "## Distribution distances", "", distance_table(result), "",
        "## Image statistics, all classes pooled", "", headline(result), "", pooled_table(result), "",
        "## Image statistics per class (sample vs real of the same class)", "", per_class_table(result), "",
        "## Pseudo-labeller", "", labeller_section(result), "",
        "## Notes", "", "\n".join(f"- {n}" for n in result.notes) or "none", "",
    ]
    if figures:
        parts += ["## Figures", "", *[f"![{Path(f).stem}]({f})" for f in figures], ""]
    parts += ["## How to read this", "", HOW_TO_READ.format(border=BORDER, k=KNN_K), ""]
    return "\n".join(parts)


HOW_TO_READ = (
    "Brightness is the mean luminance of an image (BT.601 luma, 0-255), background the mean luminance of its "
    "{border}-pixel border (a proxy: CIFAR objects are mostly centred), saturation the mean HSV S (0-1). 'diff' is "
    "sample minus real (or a minus b); Welch's t and Mann-Whitney U are two-sided, and per-class q is "
    "Benjamini-Hochberg over the whole per-class table. With thousands of images tiny differences are "
    "'significant': read the size of diff. FID and KID are lower for closer distributions (KID is unbiased, so it "
    "can be slightly negative); both depend on the feature space, and FID is biased upward for small sample sizes. "
    "Precision (k={k}) is the share of samples inside the real images' k-NN manifold (quality), recall the share of "
    "real images inside the samples' manifold (coverage). Unconditional samples are assigned to classes by the "
    "pseudo-labeller, so their per-class rows mix generator and labeller errors.")


def distance_table(result: FidelityResult) -> str:
    rows = [[r.generator, r.samples, r.real, _fmt(r.fid), f"{r.kid:.4g} ± {r.kid_sd:.2g}",
             _fmt(r.precision), _fmt(r.recall)] for r in result.distances.itertuples()]
    return markdown_table(["generator", "samples", "real", result.fid_label, "KID (± sd over subsets)",
                           f"precision (k={KNN_K})", f"recall (k={KNN_K})"], rows)


def headline(result: FidelityResult) -> str:
    """One sentence a generator pair on the background: the study's darker-background finding, tested."""
    p = result.pooled[(result.pooled["statistic"] == "background") & (result.pooled["b"] != "real")]
    lines = [f"Background luminance, {r.a} - {r.b}: {r.mean_diff:+.2f} (luma 0-255; {_fmt(r.sample_mean)} vs "
             f"{_fmt(r.real_mean)}), Welch p {format_p(r.welch_p)}, Mann-Whitney p {format_p(r.mwu_p)}."
             for r in p.itertuples()]
    return " ".join(lines) or "One generator only: no generator-to-generator background comparison."


def pooled_table(result: FidelityResult) -> str:
    rows = [[r.a, r.b, r.statistic, r.n_sample, r.n_real, _fmt(r.sample_mean), _fmt(r.real_mean),
             f"{r.mean_diff:+.3f}" if np.isfinite(r.mean_diff) else "-", format_p(r.welch_p), format_p(r.mwu_p)]
            for r in result.pooled.itertuples()]
    return markdown_table(["a", "b", "statistic", "n a", "n b", "mean a", "mean b", "diff (a - b)", "p (Welch)",
                      "p (Mann-Whitney)"], rows)


def per_class_table(result: FidelityResult) -> str:
    rows = [[r.generator, r["class"], r.statistic, r.n_sample, _fmt(r.sample_mean), _fmt(r.real_mean),
             f"{r.mean_diff:+.3f}" if np.isfinite(r.mean_diff) else "-", format_p(r.welch_p), format_p(r.q_bh),
             format_p(r.mwu_p)]
            for _, r in result.statistics.iterrows()]
    return markdown_table(["generator", "class", "statistic", "samples", "sample mean", "real mean", "diff",
                      "p (Welch)", "BH q", "p (Mann-Whitney)"], rows)


def labeller_section(result: FidelityResult) -> str:
    lines = []
    for name, part in result.confidence.groupby("generator", sort=False):
        high = part.loc[part["bin_low"] >= 0.9 - 1e-9, "fraction"].sum()
        low = part.loc[part["bin_high"] <= 0.5 + 1e-9, "fraction"].sum()
        lines.append(f"- {name}: {int(part['count'].sum())} unconditional samples labelled; confidence >= 0.9 for "
                     f"{high:.1%}, <= 0.5 for {low:.1%} (confidence.csv, confidence.png)")
    for name, part in result.agreement.groupby("generator", sort=False):
        total = part["n"].sum()
        share = part["agree"].sum() / total if total else math.nan
        per = ", ".join(f"{r['class']} {r['fraction']:.0%}" for _, r in part.iterrows() if r["n"])
        lines.append(f"- {name}: the labeller agrees with the conditioning class on {share:.1%} of {total} "
                     f"samples ({per})")
    return "\n".join(lines) or "no generator"


def summary_lines(result: FidelityResult) -> list[str]:
    """What the CLI prints: the distances and the background headline."""
    lines = [f"fidelity: preset {result.preset}, data {result.data}, {result.samples_per_class} samples a class, "
             f"features: {result.feature_space}"]
    for r in result.distances.itertuples():
        lines.append(f"  {r.generator}: FID {_fmt(r.fid)}, KID {r.kid:.4g} ± {r.kid_sd:.2g}, "
                     f"precision {_fmt(r.precision)}, recall {_fmt(r.recall)} ({r.samples} samples vs {r.real} real)")
    for r in result.pooled[result.pooled["statistic"] == "background"].itertuples():
        lines.append(f"  background {r.a} - {r.b}: {r.mean_diff:+.2f} luma, Welch p {format_p(r.welch_p)}")
    if np.isfinite(result.labeller_test_acc):
        lines.append(f"  pseudo-labeller test accuracy {result.labeller_test_acc:.1%}")
    if "classifier" in result.fid_label:
        lines.append(f"  note: {result.fid_label}")
    return lines + [f"  note: {n}" for n in result.notes]


def write_outputs(result: FidelityResult, folder: str | Path) -> list[Path]:
    """report.md, one CSV a table and the PNG figures in `folder`; the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    tables = {"distances": result.distances, "statistics": result.statistics, "pooled": result.pooled,
              "image_values": result.values, "confidence": result.confidence, "agreement": result.agreement}
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False)
        written.append(folder / f"{name}.csv")
    figures = {"statistics.png": lambda: plot_statistics(result.values, result.classes),
               "samples.png": lambda: sample_grids_figure(result)}
    if not result.confidence.empty:
        figures["confidence.png"] = lambda: plot_confidence(result.confidence)
    if not result.agreement.empty:
        figures["agreement.png"] = lambda: plot_agreement(result.agreement, result.classes)
    for name, plot in figures.items():
        plot().savefig(folder / name, dpi=120, bbox_inches="tight")
        written.append(folder / name)
    (folder / "report.md").write_text(markdown_report(result, [p.name for p in written if p.suffix == ".png"]))
    return [*written, folder / "report.md"]


def fidelity_metrics(result: FidelityResult) -> dict[str, float]:
    """fid.<gen>, kid.<gen>, precision.<gen>, recall.<gen>, background_diff.<gen> (vs real), labeller_test_acc."""
    metrics = {"labeller_test_acc": result.labeller_test_acc}
    for r in result.distances.itertuples():
        metrics |= {f"fid.{r.generator}": r.fid, f"kid.{r.generator}": r.kid, f"precision.{r.generator}": r.precision,
                    f"recall.{r.generator}": r.recall}
    vs_real = result.pooled[result.pooled["b"] == "real"]
    for r in vs_real.itertuples():
        metrics[f"{r.statistic}_diff.{r.a}"] = r.mean_diff
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def log_fidelity(uri: str, result: FidelityResult, folder: str | Path) -> str:
    """An 'analysis' run (synthaug.analysis=fidelity) in experiment 'fidelity' with `folder` as artifacts."""
    params = {"preset": result.preset, "data": result.data, "samples_per_class": result.samples_per_class,
              "seed": result.seed, "feature_space": result.feature_space,
              "generators": [s.name for s in result.samples]}
    return log_folder_run(uri, ensure_experiment(uri, EXPERIMENT), f"fidelity {result.preset} {result.data}",
                          {ROLE: "analysis", ANALYSIS: "fidelity"}, params, fidelity_metrics(result), folder)


def _fmt(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.3f}"


