"""Artifacts people look at: confusion matrices (CSV and PNG), per-class metrics, predictions, image grids, and
the text helpers every report shares (format_p, markdown_table)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure      # no pyplot: figures are not kept open in a global registry


def write_confusion(folder: Path, confusion: np.ndarray, classes: Sequence[str]) -> None:
    """confusion_matrix.csv (rows: true class, columns: predicted) and confusion_matrix.png."""
    pd.DataFrame(confusion, index=list(classes), columns=list(classes)).to_csv(
        folder / "confusion_matrix.csv", index_label="true\\predicted")
    fig = plot_confusion(confusion, classes)
    fig.savefig(folder / "confusion_matrix.png", dpi=120, bbox_inches="tight")


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], title: str = "confusion (row-normalised)",
                   diverging: bool = False):
    """A heat map of a (row-normalised unless diverging) confusion matrix with its numbers."""
    if diverging:
        values, cmap = matrix, "RdBu"
        bound = float(np.nanmax(np.abs(values))) or 1.0
        limits = (-bound, bound)
    else:
        totals = matrix.sum(1, keepdims=True)
        values, cmap, limits = matrix / np.maximum(totals, 1), "Blues", (0, 1)
    fig = Figure(figsize=(1 + 0.55 * len(classes), 0.8 + 0.5 * len(classes)))
    ax = fig.subplots()
    image = ax.imshow(values, cmap=cmap, vmin=limits[0], vmax=limits[1])
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                color="white" if abs(v) > 0.6 * limits[1] else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return fig


def write_predictions(path: Path, test_index: np.ndarray, labels: np.ndarray, result) -> None:
    """One row a test image: its index in the test split, label, prediction, confidence."""
    pd.DataFrame({"test_index": test_index, "label": labels, "prediction": result.predictions,
                  "confidence": result.confidence, "correct": result.predictions == labels}).to_csv(path, index=False)


def write_per_class(path: Path, result, classes: Sequence[str]) -> None:
    """One row a class: its test images (support), recall, precision and F1 (classifier.Evaluation; empty where
    undefined)."""
    pd.DataFrame({"class": list(classes), "support": result.confusion.sum(1), "recall": result.per_class_accuracy,
                  "precision": result.per_class_precision, "f1": result.per_class_f1}).to_csv(path, index=False)


def image_grid(images: np.ndarray, labels: np.ndarray, classes: Sequence[str], per_class: int = 8) -> np.ndarray:
    """One row a class present in labels, its first per_class images; uint8 (H, W, 3)."""
    rows = []
    for c in range(len(classes)):
        picked = images[labels == c][:per_class]
        if not len(picked):
            continue
        pad = np.full((per_class - len(picked), 32, 32, 3), 255, np.uint8)
        row = np.concatenate([*picked, *pad], axis=1) if len(pad) else np.concatenate(list(picked), axis=1)
        rows.append(row)
    return np.concatenate(rows, axis=0) if rows else np.zeros((32, 32 * per_class, 3), np.uint8)


def save_grid(path: Path, images: np.ndarray, labels: np.ndarray, classes: Sequence[str], per_class: int = 8,
              title: str = "synthetic images used") -> None:
    """A labelled sample grid as PNG."""
    present = [classes[c] for c in range(len(classes)) if np.any(labels == c)]
    grid = image_grid(images, labels, classes, per_class)
    fig = Figure(figsize=(per_class * 0.6 + 1.5, max(1, len(present)) * 0.6 + 0.6))
    ax = fig.subplots()
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([16 + 32 * i for i in range(len(present))], present)
    ax.set_xticks([])
    ax.set_title(title)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def format_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(x).replace("|", "\\|") for x in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
