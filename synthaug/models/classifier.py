"""CIFAR ResNet18 with fast, deterministic, resumable training and evaluation.

The training loop follows KellerJordan/cifar10-airbench: the training set lives on the
device as padded uint8 NCHW, and shuffling, random crop (pad 4, reflect) and horizontal
flip are done batched on the tensor; there is no DataLoader. An epoch's order and every batch's
crop offsets and flips are drawn up front and sent to the device in one copy, and the
normalisation constants live on the device, so a training step waits on no host-to-device copy
(on the CPU the weights are bitwise those of drawing batch by batch, checked against the previous code).
Normalisation uses the CIFAR-10 per-channel mean/std for every source, real or synthetic.
An epoch's images come from shuffled passes over the training set (synthaug.models.epoch_order): one whole
pass an epoch, or under TrainConfig.budget "steps" a fixed number of images an epoch, so that adding
images adds no optimizer steps.

Determinism: the seed fixes the initial weights (a forked RNG), the data order and every
augmentation draw (one CPU torch.Generator, so the order is the same on any device).
On CPU, a run is bitwise reproducible and a run resumed from `Trainer.state_dict()` gives
the same weights as an uninterrupted one (tests/test_classifier.py). On CUDA the draws are
the same but the arithmetic is not: cuDNN picks kernels per shape and GPU model, bf16 autocast
rounds, and some backward kernels add in no fixed order, so a rerun or a resumed run is
statistically equivalent, not bitwise. SYNTHAUG_DETERMINISTIC=1 (synthaug/core/devices.py) asks torch
for deterministic algorithms where it has them; otherwise global cuDNN flags are left alone.

Measured (CPU training throughput, augmentation included, float32 NCHW, torch 2.14.1,
1,000 random 32x32 images, 10 classes, batch 256; median of 3 epochs after a warm-up
epoch; a 2-vCPU AMD EPYC VM with AVX2, shared with other jobs at load average 3-6, so
the 2-thread figures are throttled: their best epoch is in brackets):

    width  threads  images/s
       16        1       173
       16        2       162  (334)
       64        1        10
       64        2        13  (17)

A width-16 epoch on 1,000 images takes about 6 s on one thread and about 3 s on two
uncontended ones; about 75% of a step is convolution (forward and backward). Width 64
is the study's ResNet18 (11,173,962 parameters at 10 classes); on CPU it is for smoke
runs only. The CUDA path (bf16 autocast, channels_last) has not yet been run on a GPU.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from synthaug.core.devices import bf16_autocast, cpu_copy, host_tensor
from synthaug.core.rules import Rule, check, is_int, is_number
from synthaug.models.epoch_order import EpochOrder

# CIFAR-10 training-set statistics; used for every source so pixels mean the same thing.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
PAD = 4  # random-crop padding, in pixels (standard CIFAR augmentation)
SCHEDULES = ("cosine", "constant")
BUDGETS = ("epochs", "steps")   # what stays fixed as images are added: the epochs, or the optimizer steps too
STEMS = ("cifar", "imagenet")   # 3x3 stride 1, no max-pool (the CIFAR ResNet); torchvision's 7x7 stride 2 + max-pool


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TrainConfig:
    """The classifier recipe. The study fixes epochs, batch size and lr; the rest it leaves
    unnamed, so we take the usual CIFAR ResNet defaults."""

    epochs: int = 50  # the study's replacement runs (E4); E1-E3 use 30
    batch_size: int = 256  # the study's batch size
    lr: float = 0.01  # the study's SGD learning rate
    momentum: float = 0.9  # not given by the study; the standard SGD momentum for ResNets
    nesterov: bool = True  # free, slightly faster convergence than heavy-ball at equal lr
    weight_decay: float = 5e-4  # the usual CIFAR ResNet value; limits overfitting on small sets
    schedule: str = "cosine"  # decays to 0 over all steps, no extra knobs; "constant" keeps lr
    warmup_epochs: int = 0  # lr 0.01 is small enough to need no warm-up
    label_smoothing: float = 0.0  # the study used plain cross-entropy
    width: int = 64  # ResNet18 base width; the smoke preset narrows it
    augment: bool = True  # random crop (pad 4) + horizontal flip, the standard CIFAR recipe
    stem: str = "cifar"  # "cifar": 3x3 stride-1 stem, no max-pool; "imagenet": torchvision's standard ResNet18
    # "epochs": an epoch is one pass over the training set, so added images add steps; "steps": an epoch is
    # ceil(reference images / batch_size) steps (synthaug.models.epoch_order), the same at any number of added images
    budget: str = "epochs"

    def validate(self, prefix: str = "train") -> None:
        """Raise ConfigError with one line naming the first bad field (synthaug.core.rules)."""
        check(self, prefix, [     # in order: epochs before warmup_epochs
            Rule("epochs", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
            Rule("batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
            Rule("lr", lambda v: is_number(v) and 0 < v < math.inf, "a finite number > 0"),
            Rule("momentum", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
            Rule("nesterov", lambda v: isinstance(v, bool) and (not v or self.momentum > 0),
                 "a bool, True only with momentum > 0"),
            Rule("weight_decay", lambda v: is_number(v) and 0 <= v < math.inf, "a finite number >= 0"),
            Rule("schedule", lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
            Rule("warmup_epochs", lambda v: is_int(v) and 0 <= v < self.epochs, "an integer >= 0 and < epochs"),
            Rule("label_smoothing", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
            Rule("width", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
            Rule("augment", lambda v: isinstance(v, bool), "a bool"),
            Rule("stem", lambda v: v in STEMS, f"one of {', '.join(STEMS)}"),
            Rule("budget", lambda v: v in BUDGETS, f"one of {', '.join(BUDGETS)}"),
        ])


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The lr for optimiser step `step` (0-based): linear warm-up, then cosine to 0 or flat."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warmup) / max(total - warmup, 1)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


# ----------------------------------------------------------------------------- model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet, four stages and a global average pool, with the CIFAR stem (3x3 stride 1, no max-pool:
    32x32 reaches the last stage at 4x4) or torchvision's ImageNet stem (7x7 stride 2 and a 3x3
    stride-2 max-pool: 32x32 reaches it at 1x1), the "standard ResNet18" read literally."""

    def __init__(self, blocks: list[int], num_classes: int, width: int = 64, stem: str = "cifar"):
        super().__init__()
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
        stages, in_planes = [], width
        for i, n in enumerate(blocks):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            layers = []
            for s in [stride] + [1] * (n - 1):
                layers.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init for ReLU convs (as torchvision's ResNet); BN starts as the identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


def resnet18(num_classes: int, width: int = 64, stem: str = "cifar") -> nn.Module:
    """ResNet18 (BasicBlock, [2, 2, 2, 2]); the CIFAR stem at width 64 has 11.17M parameters at 10 classes."""
    return ResNet([2, 2, 2, 2], num_classes, width, stem)


def checkpoint_bytes(cfg: TrainConfig, num_classes: int) -> int:
    """About the bytes of a trial's checkpoint (Trainer.state_dict): float32 weights and buffers, and SGD's
    momentum buffer when it has momentum (measured: 42.7 MiB for the study recipe, 85.3 MiB for strong)."""
    with torch.device("meta"):
        model = resnet18(num_classes, cfg.width, cfg.stem)
    weights = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    return 4 * (weights * (2 if cfg.momentum > 0 else 1) + buffers)


# ------------------------------------------------------------------- device-side data


def _check_images(x: np.ndarray, name: str) -> None:
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 and x.shape[3] == 3):
        got = f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}"
        raise ValueError(f"{name}: expected uint8 array of shape (N, H, W, 3), got {got}")


def _check_labels(y: np.ndarray, n: int, num_classes: int, name: str) -> None:
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: expected {n} integer labels, got {y.dtype} {y.shape}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]"
        )


def _device_weights(weights: np.ndarray | None, num_classes: int, device: torch.device) -> torch.Tensor | None:
    """Per-class loss weights as a float32 device tensor, after checking them (None stays None)."""
    if weights is None:
        return None
    weights = np.asarray(weights, np.float64)
    if weights.shape != (num_classes,) or not np.all(np.isfinite(weights) & (weights > 0)):
        raise ValueError(f"class_weights: expected {num_classes} finite weights > 0, got {weights}")
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _uses_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def _memory_format(device: torch.device) -> torch.memory_format:
    # channels_last on CUDA (tensor-core friendly). Not on CPU: oneDNN's channels_last
    # backward crashes or hangs for narrow nets (width < 8, torch 2.14.1, measured here).
    return torch.channels_last if _uses_cuda(device) else torch.contiguous_format


def _to_device_nchw(x: np.ndarray, device: torch.device, pad: int = 0) -> torch.Tensor:
    """uint8 NHWC host array -> uint8 NCHW device tensor, optionally reflect-padded."""
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return host_tensor(x).to(device).permute(0, 3, 1, 2).contiguous()


@functools.lru_cache(maxsize=8)
def _pixel_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation constants (x 255), made on the device once, not copied there every step."""
    mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1) * 255
    return mean, std


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float32 normalised, in the device's memory format."""
    mean, std = _pixel_stats(x.device)
    return ((x.float() - mean) / std).contiguous(memory_format=_memory_format(x.device))


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, size: tuple[int, int]):
    """Per-image crop of `size` at offsets (dy, dx) from a padded uint8 batch, by gather."""
    b, c = padded.shape[:2]
    h, w = size
    rows = (dy.view(b, 1) + torch.arange(h, device=padded.device)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w, device=padded.device)).view(b, 1, 1, w)
    bi = torch.arange(b, device=padded.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=padded.device).view(1, c, 1, 1)
    return padded[bi, ci, rows, cols]


def draw_augmentation(b: int, gen: torch.Generator) -> torch.Tensor:
    """A batch's crop offsets and flips, int64 (3, b): dy, dx in [0, 2 * PAD] and flip in {0, 1}, drawn
    from `gen` (CPU) so they do not depend on the device."""
    shifts = torch.randint(0, 2 * PAD + 1, (2, b), generator=gen)
    flip = (torch.rand(b, generator=gen) < 0.5).long().view(1, b)
    return torch.cat([shifts, flip])


def augment_with(padded: torch.Tensor, draws: torch.Tensor | None) -> torch.Tensor:
    """Crop and flip a reflect-padded batch by `draws` (draw_augmentation's, already on its device);
    None: the centre crop, no flip."""
    h, w = padded.shape[2] - 2 * PAD, padded.shape[3] - 2 * PAD
    if draws is None:
        return padded[:, :, PAD : PAD + h, PAD : PAD + w]
    out = _crop(padded, draws[0], draws[1], (h, w))
    return torch.where(draws[2].bool().view(-1, 1, 1, 1), out.flip(3), out)


# ---------------------------------------------------------------------------- training


def training_loss(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float,
                  class_weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's loss to minimise, and its unweighted summed cross-entropy (the train_loss metric, detached).
    With class weights each image's whole loss, its smoothing term included, is multiplied by its class's
    weight and the batch averaged over images (not over weights, as cross_entropy(weight=) does, which would
    undo the weights' common scale and weight the smoothing term by the class it smooths toward)."""
    if class_weights is None:
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        return loss, loss.detach() * len(y)
    each = F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="none")
    return (each * class_weights[y]).mean(), each.detach().sum()


class Trainer:
    """Owns model, optimiser, schedule and the device-resident training set.

    class_weights (C,): each image's loss is multiplied by its class's weight (the reweight control arm;
    None: unweighted). reference_images: the images an epoch draws under cfg.budget "steps" (the trial's
    real images before augmentation; None: the training set's size)."""

    def __init__(
        self,
        cfg: TrainConfig,
        train_x: np.ndarray,
        train_y: np.ndarray,
        num_classes: int,
        seed: int,
        device: str | torch.device,
        progress: bool = True,
        autocast: bool | None = None,
        compile_backend: str | None = None,
        class_weights: np.ndarray | None = None,
        reference_images: int | None = None,
    ):
        cfg.validate()
        _check_images(train_x, "train_x")
        _check_labels(train_y, len(train_x), num_classes, "train_y")
        if len(train_x) == 0:
            raise ValueError("train_x: the training set is empty")
        self.cfg, self.num_classes, self.seed = cfg, num_classes, seed
        self.device, self.progress = torch.device(device), progress
        self.autocast = autocast  # bf16: None = on CUDA only (synthaug.core.devices); True runs it on the CPU too
        self.x = _to_device_nchw(train_x, self.device, PAD)
        self.y = host_tensor(np.asarray(train_y, dtype=np.int64)).to(self.device)
        self.class_weights = _device_weights(class_weights, num_classes, self.device)
        per_epoch = (reference_images or len(train_x)) if cfg.budget == "steps" else len(train_x)
        self.epoch_order = EpochOrder(len(train_x), per_epoch)
        self.steps_per_epoch = math.ceil(per_epoch / cfg.batch_size)
        self.model = self._build_model()
        # torch.compile's backend ("inductor" on a GPU), or None to run eagerly; the weights stay self.model's
        self.forward = torch.compile(self.model, backend=compile_backend) if compile_backend else self.model
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=learning_rate(cfg, 0, self.steps_per_epoch),
            momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
        )
        self.gen = torch.Generator().manual_seed(seed)  # data order and augmentation
        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser steps taken

    def _build_model(self) -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # the seed fixes the weights, globals untouched
            torch.manual_seed(self.seed)
            model = resnet18(self.num_classes, self.cfg.width, self.cfg.stem)
        return model.to(self.device, memory_format=_memory_format(self.device))

    def _train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lr = learning_rate(self.cfg, self.step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with bf16_autocast(self.device, self.autocast):
            logits = self.forward(_normalise(xb))
            loss, loss_sum = training_loss(logits.float(), yb, self.cfg.label_smoothing, self.class_weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        correct = (logits.argmax(1) == yb).sum()
        return loss_sum, correct

    def train_epoch(self) -> dict[str, float]:
        """Run one epoch; return train loss/accuracy (on augmented batches), last lr and time."""
        if self.epoch >= self.cfg.epochs:
            raise RuntimeError(f"all {self.cfg.epochs} epochs are done")
        start = time.perf_counter()
        self.model.train()
        n, bs = self.epoch_order.per_epoch, self.cfg.batch_size
        # The epoch's order and every batch's crops and flips, drawn in the order the batches take them
        # and sent to the device in one copy: no host-to-device wait inside the loop.
        plan = [self.epoch_order.next_epoch(self.gen).view(1, n)]
        if self.cfg.augment:
            plan.append(torch.cat([draw_augmentation(min(bs, n - i), self.gen) for i in range(0, n, bs)], dim=1))
        plan = torch.cat(plan).to(self.device, non_blocking=True)
        order, draws = plan[0], (plan[1:] if self.cfg.augment else None)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        batches = tqdm(range(0, n, bs), desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                       disable=not self.progress, leave=False)
        for i in batches:
            idx = order[i : i + bs]
            xb = augment_with(self.x[idx], None if draws is None else draws[:, i : i + bs])
            batch_loss, batch_correct = self._train_step(xb, self.y[idx])
            loss_sum += batch_loss
            correct += batch_correct
        self.epoch += 1
        metrics = {
            "train_loss": loss_sum.item() / n,  # .item() also waits for the device
            "train_acc": correct.item() / n,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": time.perf_counter() - start,
        }
        return metrics

    def state_dict(self) -> dict:
        """Everything needed to resume exactly, as CPU copies that later training leaves alone."""
        return {
            "model": cpu_copy(self.model.state_dict()),
            "optimizer": cpu_copy(self.optimizer.state_dict()),
            "generator": self.gen.get_state(),
            "order": self.epoch_order.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "seed": self.seed,
            "num_train": len(self.y),
            "per_epoch": self.epoch_order.per_epoch,
            "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` from a Trainer with the same config and training-set size."""
        mine = {"config": asdict(self.cfg), "num_train": len(self.y), "per_epoch": self.epoch_order.per_epoch}
        for key, value in mine.items():
            if state[key] != value:
                raise ValueError(
                    f"checkpoint {key} {state[key]!r} differs from this trainer's {value!r}"
                )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.epoch_order.load_state_dict(state["order"])
        self.epoch, self.step, self.seed = state["epoch"], state["step"], state["seed"]


# -------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, device, batch_size: int = 1024,
            autocast: bool | None = None) -> np.ndarray:
    """Softmax probabilities, float32 (N, C), for uint8 NHWC images; eval mode, no grad."""
    _check_images(x, "x")
    if len(x) == 0:
        raise ValueError("x: no images to predict")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(x), batch_size):
            xb = _to_device_nchw(x[i : i + batch_size], device)
            with bf16_autocast(device, autocast):
                logits = model(_normalise(xb))
            out.append(torch.softmax(logits.float(), dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float  # mean cross-entropy of the true labels
    per_class_accuracy: np.ndarray  # (C,) float64: recall, tp / (tp + fn); NaN for a class with no images
    per_class_precision: np.ndarray  # (C,) float64: tp / (tp + fp); NaN for a class never predicted
    per_class_f1: np.ndarray  # (C,) float64: 2 tp / (2 tp + fp + fn); NaN for a class neither present nor predicted
    confusion: np.ndarray  # (C, C) int64, rows = true class, cols = predicted
    predictions: np.ndarray  # (N,) int64
    confidence: np.ndarray  # (N,) float32 max prob


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, num_classes: int, device,
             batch_size: int = 1024) -> Evaluation:
    """Accuracy, loss, per-class recall, precision and F1 (from the confusion matrix), predictions, confidence."""
    _check_labels(y, len(x), num_classes, "y")
    probs = predict(model, x, device, batch_size)
    y = np.asarray(y, dtype=np.int64)
    pred = probs.argmax(1).astype(np.int64)
    confusion = np.bincount(y * num_classes + pred, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes).astype(np.int64)
    hits, support, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
        precision = np.where(predicted > 0, hits / predicted, np.nan)
        f1 = np.where(support + predicted > 0, 2 * hits / (support + predicted), np.nan)     # 2tp + fp + fn
    true_prob = np.maximum(probs[np.arange(len(y)), y], np.finfo(np.float32).tiny)     # a 0 would be an infinite loss
    return Evaluation(
        accuracy=float((pred == y).mean()),
        loss=float(-np.log(true_prob).mean()),
        per_class_accuracy=recall,
        per_class_precision=precision,
        per_class_f1=f1,
        confusion=confusion,
        predictions=pred,
        confidence=probs.max(1).astype(np.float32),
    )
