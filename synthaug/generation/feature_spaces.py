"""The feature spaces FID, KID, precision and recall are computed in: torchvision's Inception-v3 when its
weights are on disk (never downloaded), else a labeller's penultimate features. Used by generator
training (its FID/KID) and by the fidelity run (synthaug.analysis.fidelity), so it sits below both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import Inception_V3_Weights, inception_v3

from synthaug.models.classifier import predict


@dataclass(frozen=True)
class FeatureSpace:
    """A feature extractor for FID, KID, precision and recall, and how to describe its numbers."""

    name: str
    key: str                                    # in metric names: fid_<key>, kid_<key> (metric_name)
    comparable: bool                            # to published FIDs: only with the TF FID Inception weights
    extract: Callable[[np.ndarray], np.ndarray]  # uint8 (N, 32, 32, 3) -> float64 (N, D)

    @property
    def fid_label(self) -> str:
        return f"FID ({self.name}{'' if self.comparable else '; not comparable with published FIDs'})"

    def metric_name(self, metric: str) -> str:
        return metric_name(metric, self.key)


def metric_name(metric: str, key: str) -> str:
    """('fid', 'labeller_features') -> 'fid_labeller_features': FID and KID mean something only in the feature
    space they were measured in, so their names say which."""
    return f"{metric}_{key}"


INCEPTION, LABELLER = "inception", "labeller_features"     # FeatureSpace.key of each kind


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
    # not the TF FID Inception weights that published FIDs use: close, not comparable
    return FeatureSpace("Inception-v3 pool3, torchvision ImageNet weights", INCEPTION, False, extract)


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
    return FeatureSpace("pseudo-labeller ResNet18 penultimate layer", LABELLER, False, extract)


def feature_space(labeller, device: str) -> FeatureSpace:
    """Inception-v3 when its weights are on disk, else the labeller's penultimate features."""
    path = inception_weights_path()
    return inception_space(path, device) if path else classifier_space(labeller, device)
