"""E5, fidelity: how a generator's samples differ from the real images of each class.

    settings = Settings(preset("smoke"), data="shapes", cache_dir=Path(".synthaug"), samples_per_class=100)
    result = run_fidelity(settings)        # prepares generators (cached), takes pooled samples (cached)
    write_outputs(result, folder)           # report.md, CSVs, PNGs (synthaug.analysis.fidelity_report)
    log_fidelity(uri, result, folder)       # an "analysis" run in MLflow experiment "fidelity"

What it measures, per generator of the preset, against the real test split:

- image statistics per class: brightness (mean luminance, ITU-R BT.601 weights, 0-255),
  background (mean luminance of the BORDER-pixel frame, a proxy for the background) and
  saturation (mean HSV S, 0-1); sample vs real by Welch's t and Mann-Whitney U, BH q over
  the table. This is where the study's "unconditional samples have darker backgrounds"
  shows up, or does not; the two generators are also compared directly, pooled;
- FID and KID (Binkowski et al. 2018: cubic polynomial kernel, unbiased MMD^2 over random
  subsets; no sd where one subset holds both sets whole), named by their feature space
  (fid_inception, fid_labeller_features: FeatureSpace.metric_name), in a feature space:
  Inception-v3 pool3 when torchvision's weights are already in the torch hub cache (never downloaded), else the penultimate layer of the project's own
  CIFAR classifier (the pseudo-labeller). Every figure names its feature space, and neither is
  comparable with published FIDs: those use the TensorFlow FID Inception weights
  (pt_inception-2015-12-05), which differ from torchvision's; only a space built on those
  would be (FeatureSpace.comparable);
- precision and recall (Kynkaanniemi et al. 2019: k-NN balls, k = 3) in the same space,
  with the real set subsampled to the generated set's size, as the paper compares equal sets;
- the pseudo-labeller: its confidence histogram on the unconditional stream, and for a
  conditional generator the share of class-c samples it labels c;
- memorisation (synthaug.analysis.memorisation): each sample's distance to its nearest training image (per-pixel RMS on
  [0, 1]) beside the same for the real test images, and how many samples come closer than the test images'
  1st percentile, with the closest sample/training pairs as a figure;
- CAS (synthaug.analysis.cas): the preset's classifier recipe trained on each generator's pool images alone (the
  class conditioned on, or the labeller's class for an unconditional generator), as many a class as the
  preset's real set (or Settings.cas_per_class), tested on the trials' real test images, overall and per
  class, beside the same recipe trained once on that many real images a class.

The metric functions are pure (arrays in, numbers out) in synthaug.generation.image_metrics, tested on fixed inputs.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from synthaug.analysis.cas import (Score, cas_setup, cas_table, class_counts, classification_accuracy, empty_table,
                                   real_reference, recipe_text)
from synthaug.analysis.memorisation import Memorisation, memorisation
from synthaug.analysis.sample_grids import SampleGrid
from synthaug.config import GeneratorSpec, Preset, TrialConfig
from synthaug.core.devices import default_device
from synthaug.core.progress import Progress
from synthaug.data.sources import Dataset, load_dataset
from synthaug.generation.feature_spaces import feature_space, metric_name
from synthaug.generation.generators import PreparedGenerator
from synthaug.generation.image_metrics import (KNN_K, TwoSample, class_agreement, confidence_histogram, fid,
                                               image_statistics, kid, kid_subset_count, kid_subset_size,
                                               precision_recall, two_sample)
from synthaug.generation.prepare import prepare_generator, prepare_labeller
from synthaug.generation.server import DDPMServer, ShortPoolError
from synthaug.models.classifier import predict
from synthaug.models.labeller import load_labeller
from synthaug.pools.store import UNCONDITIONAL
from synthaug.stats.compare import benjamini_hochberg

STATISTICS = ("brightness", "background", "saturation")
# the unit column of statistics.csv and pooled.csv
UNITS = {"brightness": "luma (0-255)", "background": "luma (0-255)", "saturation": "HSV S (0-1)"}
EXPERIMENT = "fidelity"


# ---------------------------------------------------------------------------- the E5 run


@dataclass(frozen=True)
class Settings:
    """What a fidelity run compares and where it finds things."""

    preset: Preset
    data: str                           # a data source (synthaug.data.sources.resolve_source)
    cache_dir: Path                     # datasets/, generators/, labellers/, pools/
    samples_per_class: int              # analysis/fidelity.py's default: the preset's fidelity_per_class
    seed: int = 0                       # the pool seed: pools are shared with trials of this seed
    device: str | None = None           # default: cuda when available; a pool's id names its device type and
                                        # precision, so trials' pools are read where their servers ran
    progress: bool = False              # a line a step (which generator, which stage), with n/N and an ETA
    cas_per_class: int | None = None    # CAS's images a class (synthaug.analysis.cas); None: the preset's real_per_class


@dataclass(frozen=True, eq=False)
class GeneratorSamples(SampleGrid):
    """A generator's samples for the comparison (a grid of them: images, and labels that are the class
    conditioned on or the labeller's), and the labeller's view of them and of its unconditional stream."""

    predicted: np.ndarray = field(kw_only=True)         # int64 (n,): the labeller's label (== labels unconditional)
    stream_confidence: np.ndarray = field(kw_only=True)  # float32: the labeller's max-probability on the stream read
    short_classes: tuple[str, ...] = field(kw_only=True)  # classes with fewer than samples_per_class (unconditional)


@dataclass(frozen=True, eq=False)
class FidelityResult:
    """Everything the report, the CSVs and the figures show."""

    preset: str
    data: str
    classes: tuple[str, ...]
    samples_per_class: int
    seed: int
    feature_space: str
    feature_key: str            # FeatureSpace.key: the distances' columns fid_<key>, kid_<key>, kid_sd_<key>
    fid_label: str
    labeller_test_acc: float
    n_real: int
    distances: pd.DataFrame     # a row a generator: samples, real, fid_<key>, kid_<key>, kid_sd_<key>, kid subsets, ...
    statistics: pd.DataFrame    # a row a generator x class x statistic: sample vs real
    pooled: pd.DataFrame        # a row a generator x statistic (all classes), and generator pairs
    values: pd.DataFrame        # a row an image: source, class, brightness, background, saturation
    confidence: pd.DataFrame    # a row a unconditional generator x bin
    agreement: pd.DataFrame     # a row a generator x class
    memorisation: Memorisation  # nearest-training-image distances of the samples and of the test images
    samples: tuple[GeneratorSamples, ...]
    real_images: np.ndarray     # up to 8 test images a class, for the sample grid
    real_labels: np.ndarray
    notes: tuple[str, ...]
    cas: pd.DataFrame = field(default_factory=empty_table)   # synthaug.analysis.cas.cas_table: a row a source x class
    cas_setup: str = ""         # how every CAS classifier was trained (cas.recipe_text) and on how many a class


def run_fidelity(settings: Settings) -> FidelityResult:
    """Prepare each generator of the preset, take its samples, and compare them with the test split."""
    device = settings.device or default_device()
    dataset = load_dataset(settings.data, settings.cache_dir)
    specs, left_out = usable_generators(settings.preset.generators, dataset.classes)
    prepared = []
    for i, spec in enumerate(specs, 1):
        _say(settings, f"generator {i}/{len(specs)}, {spec.name}: trained (once, then cached under "
                       f"{settings.cache_dir}) or loaded")
        prepared.append(prepare_generator(spec, settings.data, settings.cache_dir, device, progress=settings.progress,
                                          dataset=dataset))
    setup = cas_setup(settings.preset, settings.data, settings.seed, settings.cas_per_class)
    counts = class_counts(dataset, setup)
    _say(settings, f"CAS: the real-data reference, {recipe_text(setup)}, on {sum(counts)} real training images")
    reference = real_reference(dataset, setup, device)
    samples, scores, cas_short = [], [], []
    for p, spec in zip(prepared, specs):
        server = DDPMServer(p, spec, str(settings.cache_dir / "pools"), dataset.classes, device, progress=False)
        samples.append(draw_samples(server, spec, settings, dataset.classes))
        _say(settings, f"CAS: {spec.name}: {sum(counts)} of its pool images (seed {settings.seed}; made once, "
                       f"then read), the same recipe")
        score, note = generator_cas(server, counts, dataset, setup, device)
        scores.append(score)
        cas_short += [note] if note else []
    labeller_path, labeller_acc = reference_labeller(prepared, settings, dataset, device)
    labeller = load_labeller(labeller_path, device)
    samples = tuple(_with_predictions(s, labeller, device) for s in samples)
    space = feature_space(labeller, device)
    _say(settings, f"scoring: {space.name} features of {len(dataset.test_x)} real and "
                   f"{sum(len(s.images) for s in samples)} sampled images, distances, image statistics")
    real_features = space.extract(dataset.test_x)
    notes = left_out + [f"{s.name}: the labeller gave fewer than {settings.samples_per_class} samples to "
                        f"{', '.join(s.short_classes)}" for s in samples if s.short_classes] + cas_short
    notes += [f"{spec.name}: pretrained elsewhere, so its nearest-training-image distances are to this data's "
              f"training split, not to what it learned from" for spec in specs if not _trains(spec)]
    _say(settings, f"memorisation: the nearest of {len(dataset.train_x)} training images to each of "
                   f"{len(dataset.test_x)} test images and {sum(len(s.images) for s in samples)} samples ({device})")
    copies = memorisation({s.name: s.images for s in samples if len(s.images)}, dataset.test_x, dataset.train_x,
                          device)
    real_stats = image_statistics(dataset.test_x).assign(source="real", **{"class": _names(dataset.test_y,
                                                                                       dataset.classes)})
    sample_stats = [image_statistics(s.images).assign(source=s.name, **{"class": _names(s.labels, dataset.classes)})
                    for s in samples]
    values = pd.concat([real_stats, *sample_stats], ignore_index=True)[["source", "class", *STATISTICS]]
    grid_index = np.concatenate([np.flatnonzero(dataset.test_y == c)[:8] for c in range(dataset.num_classes)])
    return FidelityResult(
        preset=settings.preset.name, data=dataset.name, classes=dataset.classes,
        samples_per_class=settings.samples_per_class, seed=settings.seed, feature_space=space.name,
        feature_key=space.key, fid_label=space.fid_label, labeller_test_acc=labeller_acc, n_real=len(dataset.test_y),
        distances=distances(real_features, {s.name: space.extract(s.images) for s in samples if len(s.images)},
                            seed=settings.seed, key=space.key),        # k = KNN_K, as the report says
        statistics=compare_per_class(values, dataset.classes),
        pooled=compare_pooled(values),
        values=values,
        confidence=pd.concat([confidence_histogram(s.stream_confidence).assign(generator=s.name)
                              for s in samples if not s.conditional] or [_empty_histogram()], ignore_index=True),
        agreement=pd.concat([class_agreement(s.predicted, s.labels, dataset.classes).assign(generator=s.name)
                             for s in samples if s.conditional] or [_empty_agreement()], ignore_index=True),
        memorisation=copies, samples=samples, real_images=dataset.test_x[grid_index],
        real_labels=dataset.test_y[grid_index],
        notes=tuple(notes), cas=cas_table(scores, reference, dataset.classes),
        cas_setup=f"{recipe_text(setup)}; {_count_text(counts)} a class")


def _trains(spec: GeneratorSpec) -> bool:
    """Whether prepare trains the generator on this data's training split (else it is loaded, pretrained)."""
    from synthaug.generation.generators import generator_kind

    return generator_kind(spec).trains


def _say(settings: Settings, line: str) -> None:
    if settings.progress:
        print(f"fidelity: {line}", flush=True)


def usable_generators(specs: Sequence[GeneratorSpec], classes: Sequence[str]) -> tuple[list[GeneratorSpec], list[str]]:
    """The preset's generators that can serve here, and a note for each one left out (a
    pretrained model that is not on this machine, or whose label map misses a class; one that learns
    from a trial's real subset, which only a sweep has)."""
    from synthaug.generation.generators import generator_kind

    usable, notes = [], []
    for spec in specs:
        if spec.train_on == "trial":
            notes.append(f"{spec.name} left out: it learns from one trial's real subset (train_on trial), and outside "
                         "a sweep there is no subset: it would be its recipe trained on the whole split, "
                         "duplicating the generator of that recipe")
            continue
        problem = generator_kind(spec).problem(spec, classes, classes)
        if problem:
            notes.append(f"{spec.name} left out: {problem}")
        else:
            usable.append(spec)
    return usable, notes


def draw_samples(server: DDPMServer, spec: GeneratorSpec, settings: Settings,
                 classes: Sequence[str]) -> GeneratorSamples:
    """samples_per_class images a class from the generator's pools (generated once, then read from disk).
    An unconditional pool gives a class what the labeller assigned it, up to the server's stream limit."""
    shown = Progress(f"fidelity: {spec.name}: {settings.samples_per_class} samples a class from its pools (seed "
                     f"{settings.seed}; made once, then read)", len(classes), "classes") if settings.progress else None
    images, labels, short = take_per_class(server, [settings.samples_per_class] * len(classes), settings.seed,
                                           classes, shown)
    stream = np.zeros(0, np.float32)
    if not server.prepared.conditional:
        stream = server.pool(UNCONDITIONAL, settings.seed).confidence
    return GeneratorSamples(spec.name, server.prepared.conditional, images, labels, settings.seed, predicted=labels,
                            stream_confidence=stream, short_classes=tuple(short))


def generator_cas(server: DDPMServer, counts: Sequence[int], dataset: Dataset, setup: TrialConfig,
                  device: str) -> tuple[Score, str | None]:
    """The generator's CAS (synthaug.analysis.cas) on counts[c] of its class-c pool images (pool seed setup.seed), and a
    note when the labeller gave a class too few of an unconditional generator's samples (None otherwise)."""
    images, labels, short = take_per_class(server, counts, setup.seed, dataset.classes)
    score = classification_accuracy(server.spec.name, images, labels, dataset, setup, device)
    if not short:
        return score, None
    found = dict(zip(dataset.classes, score.train_counts))
    return score, (f"{server.spec.name}: CAS trained on {len(labels)} images, not {sum(counts)}: the labeller gave "
                   f"too few of its samples to {', '.join(f'{c} ({found[c]})' for c in short)}")


def take_per_class(server: DDPMServer, counts: Sequence[int], seed: int, classes: Sequence[str],
                   shown: Progress | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, int64 labels, classes short): the first counts[c] images of each class c's pool of `seed`, as
    trials take them. Where the labeller (almost) never names a class of an unconditional generator, that class
    gets what its pool has made so far (the classes short; a later, larger take may have made more)."""
    parts, short = [], []
    for c, name in enumerate(classes):
        if shown is not None:
            shown.update(c, f"next: {name}")
        try:
            part = server.take(c, counts[c], seed)
            parts.append((part.images, part.labels))
        except ShortPoolError:                      # the labeller (almost) never says this class
            pool = server.pool(c, seed)
            where = np.flatnonzero(pool.labels == c)[:counts[c]]
            parts.append((pool.images[where], pool.labels[where]))
            short.append(name)
    if shown is not None:
        shown.update(len(classes))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int64), short)


def _count_text(counts: Sequence[int]) -> str:
    """'20' when every class has the same count, else '12 to 20'."""
    return str(max(counts)) if min(counts) == max(counts) else f"{min(counts)} to {max(counts)}"


def reference_labeller(prepared: Sequence[PreparedGenerator], settings: Settings, dataset: Dataset,
                       device: str) -> tuple[str, float]:
    """(path, test accuracy) of the pseudo-labeller: the first unconditional generator's, else one
    trained (and cached) by synthaug.generation.prepare with the first generator's labeller recipe."""
    for p in prepared:
        if not p.conditional:
            return p.labeller_path, p.labeller_test_acc
    # the same cache folder the unconditional generators' labellers use
    path, _, accuracy = prepare_labeller(settings.preset.generators[0], dataset, settings.cache_dir, device,
                                         settings.progress)
    return str(path), accuracy


def distances(real: np.ndarray, generated: dict[str, np.ndarray], k: int = KNN_K, seed: int = 0,
              key: str = "features") -> pd.DataFrame:
    """A row a generator: FID, KID (mean, sd over kid_subsets subsets of kid_subset_size images a set) against
    every real image, their columns named by the feature space `key` (distance_columns); precision and recall
    against a seeded subsample of the real set the size of the generated one. With one subset possible (both
    sets whole) the KID sd is not estimable: nan."""
    fid_name, kid_name, kid_sd_name = distance_columns(key)
    rows = []
    for name, fake in generated.items():
        kid_mean, kid_sd = kid(real, fake, seed=seed)
        size = kid_subset_size(len(real), len(fake))
        subset = np.random.default_rng(seed).choice(len(real), min(len(real), len(fake)), replace=False)
        precision, recall = precision_recall(real[np.sort(subset)], fake, k)
        rows.append({"generator": name, "samples": len(fake), "real": len(real), fid_name: fid(fake, real),
                     kid_name: kid_mean, kid_sd_name: kid_sd, "kid_subset_size": size,
                     "kid_subsets": kid_subset_count(len(real), len(fake)),
                     "precision": precision, "recall": recall})
    return pd.DataFrame(rows, columns=["generator", "samples", "real", fid_name, kid_name, kid_sd_name,
                                       "kid_subset_size", "kid_subsets", "precision", "recall"])


def distance_columns(key: str) -> tuple[str, str, str]:
    """The FID, KID and KID-sd columns of distances() for feature space `key`: fid_<key>, kid_<key>, kid_sd_<key>."""
    return metric_name("fid", key), metric_name("kid", key), metric_name("kid_sd", key)


def compare_per_class(values: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """A row a generator x class x statistic: sample vs real (same class), BH q over the Welch p-values."""
    real = values[values["source"] == "real"]
    rows = []
    for source in [s for s in values["source"].unique() if s != "real"]:
        mine = values[values["source"] == source]
        for cls, statistic in itertools.product(classes, STATISTICS):
            test = two_sample(mine.loc[mine["class"] == cls, statistic], real.loc[real["class"] == cls, statistic])
            rows.append({"generator": source, "class": cls, "statistic": statistic, "unit": UNITS[statistic],
                         **_row(test)})
    table = pd.DataFrame(rows, columns=["generator", "class", "statistic", "unit", *_ROW_COLUMNS])
    table["q_bh"] = benjamini_hochberg(table["welch_p"].to_numpy(float)) if rows else []   # nan p: nan q
    return table


def compare_pooled(values: pd.DataFrame) -> pd.DataFrame:
    """All classes together: each generator vs real, and each pair of generators (a - b)."""
    sources = [s for s in values["source"].unique() if s != "real"]
    pairs = [(s, "real") for s in sources] + list(itertools.combinations(sources, 2))
    rows = [{"a": a, "b": b, "statistic": statistic, "unit": UNITS[statistic],
             **_row(two_sample(values.loc[values["source"] == a, statistic], values.loc[values["source"] == b,
                                                                                        statistic]))}
            for a, b in pairs for statistic in STATISTICS]
    return pd.DataFrame(rows, columns=["a", "b", "statistic", "unit", *_ROW_COLUMNS])


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
