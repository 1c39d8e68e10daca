"""The usual ways, timed beside synthaug's in bench/trainer.py and bench/gpu_suite.py.

- torchvision's CIFAR recipe: a Dataset of PIL images, per-image RandomCrop(32, padding=4, reflect)
  + RandomHorizontalFlip + ToTensor + Normalize, batched by a DataLoader, float32 training;
- the same with torchvision.transforms.v2 on uint8 tensors (no PIL), a faster variant of it;
- synthaug's own training step as it was before an epoch's augmentation went to the device in one
  copy (commit ebc0dad): four host-to-device copies a step, for the GPU idle-share comparison.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.transforms import v2

from synthaug.core.devices import bf16_autocast
from synthaug.models.classifier import CIFAR_MEAN, CIFAR_STD, PAD, TrainConfig, Trainer, _crop, _memory_format, resnet18

from measure import synchronize


class PILImages(Dataset):
    """torchvision's way: a PIL image a sample, transformed on the host, one image at a time."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self.transform = transforms.Compose([
            transforms.RandomCrop(32, padding=PAD, padding_mode="reflect"), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


class UInt8Images(Dataset):
    """The same recipe with torchvision.transforms.v2 on uint8 CHW tensors: no PIL, still one image at a time."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        self.y = torch.from_numpy(y)
        self.transform = v2.Compose([
            v2.RandomCrop(32, padding=PAD, padding_mode="reflect"), v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR_MEAN, CIFAR_STD)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), self.y[i]


class LoaderTraining:
    """A ResNet18 trained the torchvision way: DataLoader batches, float32, the model in its default layout."""

    def __init__(self, dataset: Dataset, cfg: TrainConfig, device: str, workers: int, seed: int = 0):
        torch.manual_seed(seed)
        self.device = device
        self.model = resnet18(10, cfg.width, cfg.stem).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        self.loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                                 pin_memory=device.startswith("cuda"), persistent_workers=workers > 0)

    def train_epoch(self) -> float:
        """One epoch; its seconds, the device waited for."""
        start = time.perf_counter()
        self.model.train()
        for xb, yb in self.loader:
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            loss = F.cross_entropy(self.model(xb), yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        synchronize(self.device)
        return time.perf_counter() - start


class PerStepCopies(Trainer):
    """synthaug's Trainer as it was before ebc0dad: each step copies its crop offsets and its flips to the
    device, and makes the normalisation constants on the host and copies them (four copies a step)."""

    def train_epoch(self) -> dict[str, float]:
        start = time.perf_counter()
        self.model.train()
        n, bs = len(self.y), self.cfg.batch_size
        order = torch.randperm(n, generator=self.gen).to(self.device)
        for i in range(0, n, bs):
            idx = order[i: i + bs]
            padded, b = self.x[idx], len(idx)
            shifts = torch.randint(0, 2 * PAD + 1, (2, b), generator=self.gen).to(self.device)
            flip = (torch.rand(b, generator=self.gen) < 0.5).to(self.device).view(b, 1, 1, 1)
            out = _crop(padded, shifts[0], shifts[1], (32, 32))
            xb = torch.where(flip, out.flip(3), out)
            mean = torch.tensor(CIFAR_MEAN, device=self.device).view(1, 3, 1, 1) * 255
            std = torch.tensor(CIFAR_STD, device=self.device).view(1, 3, 1, 1) * 255
            xb = ((xb.float() - mean) / std).contiguous(memory_format=_memory_format(self.device))
            with bf16_autocast(self.device, self.autocast):
                loss = F.cross_entropy(self.model(xb).float(), self.y[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.epoch += 1
        synchronize(self.device)
        return {"epoch_time_s": time.perf_counter() - start}
