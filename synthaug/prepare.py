"""The sweep's preparation step: a generator and its pseudo-labeller, trained once and cached.

A generator given as a checkpoint (or a pretrained ImageNet pipeline) is loaded as it is; its
digest covers its weights (and, for a pretrained one, its label map and guidance). Otherwise
its DDPM is trained on the real training split and saved under cache/generators/<digest>, the
digest covering the data source, the DDPM recipe and the training seed, so the next sweep
finds it. An unconditional
generator also needs a pseudo-labeller: a classifier trained on the real training split,
cached the same way under cache/labellers/<digest>.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthaug.classifier import Trainer, evaluate, resnet18
from synthaug.config import GeneratorSpec, digest
from synthaug.data import Dataset, class_permutations, load_dataset
from synthaug.diffusion.ddpm import load_generator, save_generator, train_ddpm, weights_digest
from synthaug.pools import atomic_write


@dataclass(frozen=True)
class PreparedGenerator:
    """Where a ready generator lives and what identifies it."""

    name: str
    directory: str              # a folder load_generator reads (a pipeline folder or hub id when pretrained)
    weights_digest: str
    conditional: bool
    labeller_path: str = ""     # "" for a conditional generator
    labeller_digest: str = ""
    labeller_test_acc: float = float("nan")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_generator(spec: GeneratorSpec, data_source: str, cache_dir: str | Path,
                      device: str | None = None, progress: bool = True,
                      dataset: Dataset | None = None) -> PreparedGenerator:
    """Load or train the generator (and labeller) that `spec` names; cached under cache_dir.
    `dataset`: data_source already loaded (saves decoding and hashing it again)."""
    device = device or default_device()
    cache_dir = Path(cache_dir)
    dataset = dataset or load_dataset(data_source, cache_dir)
    directory, weights = _generator(spec, dataset, cache_dir, device, progress)
    if spec.conditional:
        return PreparedGenerator(spec.name, str(directory), weights, True)
    path, labeller_digest, test_acc = prepare_labeller(spec, dataset, cache_dir, device, progress)
    return PreparedGenerator(spec.name, str(directory), weights, False, str(path), labeller_digest, test_acc)


def _generator(spec: GeneratorSpec, dataset: Dataset, cache_dir: Path, device: str,
               progress: bool) -> tuple[Path | str, str]:
    if spec.pretrained:
        from synthaug.diffusion.imagenet import load_pipeline, pipeline_digest
        return spec.pretrained, pipeline_digest(load_pipeline(spec.pretrained, "cpu"), spec.label_map,
                                                spec.guidance_scale)
    if spec.checkpoint:
        model, _ = load_generator(spec.checkpoint, "cpu")
        return Path(spec.checkpoint), weights_digest(model)
    key = digest({"data": dataset.digest, "ddpm": spec.ddpm, "seed": spec.train_seed})[:16]
    directory = cache_dir / "generators" / f"{spec.name}-{key}"
    digest_file = directory / "weights.sha256"
    if digest_file.exists():
        return directory, digest_file.read_text().strip()
    labels = dataset.train_y if spec.conditional else None
    model = train_ddpm(spec.ddpm, dataset.train_x, labels, spec.train_seed, device, progress=progress)
    weights = save_generator(model, spec.ddpm, directory)
    atomic_write(digest_file, weights.encode())
    return directory, weights


def prepare_labeller(spec: GeneratorSpec, dataset: Dataset, cache_dir: Path, device: str,
                     progress: bool) -> tuple[Path, str, float]:
    """(path, weights digest, test accuracy) of spec's pseudo-labeller, trained once and cached."""
    key = digest({"data": dataset.digest, "train": spec.labeller,
                  "per_class": spec.labeller_per_class, "seed": spec.train_seed})[:16]
    path = cache_dir / "labellers" / key / "labeller.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        return path, saved["digest"], saved["test_acc"]
    index = _per_class_subset(dataset.train_y, dataset.num_classes, spec.labeller_per_class, spec.train_seed)
    trainer = Trainer(spec.labeller, dataset.train_x[index], dataset.train_y[index], dataset.num_classes,
                      seed=spec.train_seed, device=device, progress=progress)
    for _ in range(spec.labeller.epochs):
        trainer.train_epoch()
    result = evaluate(trainer.model, dataset.test_x, dataset.test_y, dataset.num_classes, device)
    state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    labeller_digest = weights_digest(trainer.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save({"state_dict": state, "width": spec.labeller.width, "num_classes": dataset.num_classes,
                    "classes": dataset.classes, "test_acc": result.accuracy, "digest": labeller_digest}, tmp)
    os.replace(tmp.name, path)
    return path, labeller_digest, result.accuracy


def load_labeller(path: str | Path, device: str) -> torch.nn.Module:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = resnet18(saved["num_classes"], saved["width"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()


def _per_class_subset(labels: np.ndarray, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    orders = class_permutations(labels, num_classes, seed)
    return np.sort(np.concatenate([order[:per_class] if per_class else order for order in orders]))

