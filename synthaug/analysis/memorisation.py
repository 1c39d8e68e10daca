"""Memorisation: each synthetic image's distance to its nearest training image, beside the same for real
images the generator never learned from (the test split), so a generator that copies its training images
shows up as samples closer to them than real unseen images come.

    found = memorisation({"ddpm-cond": samples}, test_x, train_x, device="cuda")
    found.table         # a row a source: n, median, p1 and min distance, flagged (closer than the reference's p1)
    found.pairs         # each generator's closest sample/training pairs, for the figure

The distance is the per-pixel RMS difference on [0, 1]: sqrt(mean over H x W x 3 of (x - y)^2) with pixels
scaled from 0-255, so 0 is an exact copy and 1 is black against white everywhere. The search runs on `device`
in float32 (|x|^2 + |y|^2 - 2 x.y of images centred on the training mean, queries and training images in chunks: CIFAR-10's 50,000 training images
against 10,000 samples is 1.5 TFLOP, seconds on a GPU, minutes on CPU cores), keeping CANDIDATES nearest a
query; their distances are then recomputed exactly in integers, so a copy reads 0, not float32's cancellation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import torch

DISTANCE = "per-pixel RMS on [0, 1]"
REFERENCE = "real test images"        # the source the threshold comes from: real images no generator learned from
REFERENCE_PERCENTILE = 1.0            # flagged: closer to a training image than this percentile of the reference
CLOSEST_PAIRS = 8                     # pairs a generator in the figure
CANDIDATES = 4                        # nearest candidates a query kept from the float32 search, then exact
QUERY_CHUNK, TRAINING_CHUNK = 1024, 8192
COLUMNS = ["source", "n", "median", "p1", "min", "flagged", "flagged_share"]


@dataclass(frozen=True, eq=False)
class ClosestPairs:
    """A generator's samples nearest to a training image, closest first, and those training images."""

    generator: str
    samples: np.ndarray         # uint8 (n, H, W, 3)
    training: np.ndarray        # uint8 (n, H, W, 3): each sample's nearest training image
    distances: np.ndarray       # float64 (n,)


@dataclass(frozen=True, eq=False)
class Memorisation:
    """What the fidelity report shows: the distance table, the threshold and the closest pairs."""

    table: pd.DataFrame         # COLUMNS; the reference's row first
    threshold: float            # the reference's REFERENCE_PERCENTILE percentile
    pairs: tuple[ClosestPairs, ...]


def nearest_training(images: np.ndarray, training: np.ndarray, device: str = "cpu", query_chunk: int = QUERY_CHUNK,
                     training_chunk: int = TRAINING_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(distance (n,), index (n,)): each image's DISTANCE to its nearest training image and that image's index."""
    if len(images) == 0 or len(training) == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    pixels = int(np.prod(training.shape[1:]))
    train_bytes = torch.as_tensor(np.ascontiguousarray(training).reshape(len(training), pixels), device=device)
    centre = train_bytes.float().mean(0)            # centred, the norms are smaller and float32 loses less
    train = train_bytes.float() - centre
    train_sq = (train * train).sum(1)
    keep = min(CANDIDATES, len(training))
    distance, index = np.empty(len(images)), np.empty(len(images), np.int64)
    with torch.no_grad():
        for start in range(0, len(images), query_chunk):
            query_bytes = torch.as_tensor(np.ascontiguousarray(images[start:start + query_chunk]).reshape(-1, pixels),
                                          device=device)
            query = query_bytes.float() - centre
            best = torch.full((len(query), 0), float("inf"), device=device)
            best_index = torch.zeros((len(query), 0), dtype=torch.long, device=device)
            for first in range(0, len(training), training_chunk):
                part = slice(first, first + training_chunk)
                squared = (query * query).sum(1, keepdim=True) + train_sq[None, part] - 2 * query @ train[part].T
                values, where = squared.topk(min(keep, squared.shape[1]), dim=1, largest=False)
                best, order = torch.cat([best, values], 1).topk(min(keep, best.shape[1] + values.shape[1]), dim=1,
                                                                largest=False)
                best_index = torch.cat([best_index, where + first], 1).gather(1, order)
            # exact: integer sums of squared differences of the candidates, the smallest kept
            # (at most 255^2 x pixels a sum: int32 holds it)
            exact = ((query_bytes.int()[:, None, :] - train_bytes[best_index].int()) ** 2).sum(-1)
            smallest, column = exact.min(1)
            distance[start:start + len(query)] = np.sqrt(smallest.double().cpu().numpy() / pixels) / 255
            index[start:start + len(query)] = best_index.gather(1, column[:, None])[:, 0].cpu().numpy()
    return distance, index


def memorisation(generated: Mapping[str, np.ndarray], reference: np.ndarray, training: np.ndarray,
                 device: str = "cpu") -> Memorisation:
    """The nearest-training-image distances of each generator's samples and of the reference images, and how
    many of a generator's samples come closer than the reference's REFERENCE_PERCENTILE percentile."""
    reference_distance, _ = nearest_training(reference, training, device)
    threshold = float(np.percentile(reference_distance, REFERENCE_PERCENTILE)) if len(reference_distance) else np.nan
    rows, pairs = [_row(REFERENCE, reference_distance, threshold)], []
    for name, images in generated.items():
        distance, index = nearest_training(images, training, device)
        rows.append(_row(name, distance, threshold))
        closest = np.argsort(distance, kind="stable")[:CLOSEST_PAIRS]
        pairs.append(ClosestPairs(name, images[closest], training[index[closest]], distance[closest]))
    return Memorisation(pd.DataFrame(rows, columns=COLUMNS), threshold, tuple(pairs))


def _row(source: str, distance: np.ndarray, threshold: float) -> dict:
    if not len(distance):
        return {"source": source, "n": 0, "median": np.nan, "p1": np.nan, "min": np.nan, "flagged": 0,
                "flagged_share": np.nan}
    flagged = int((distance < threshold).sum())
    return {"source": source, "n": len(distance), "median": float(np.median(distance)),
            "p1": float(np.percentile(distance, REFERENCE_PERCENTILE)), "min": float(distance.min()),
            "flagged": flagged, "flagged_share": flagged / len(distance)}
