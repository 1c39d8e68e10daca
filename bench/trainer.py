"""Classifier training throughput: synthaug's Trainer against torchvision's DataLoader way.

    python bench/trainer.py                         # width 16, CPU (or CUDA when present)
    python bench/trainer.py --width 64 --images 512 --runs 5     # the study's full-width ResNet18

synthaug.models.classifier.Trainer keeps the training set on the device as padded uint8 and does
shuffling, random crop and flip batched on the tensor (after KellerJordan/cifar10-airbench).
Baselines (bench/baselines.py), timed in the same run: torchvision's CIFAR recipe, a Dataset of
PIL images with per-image RandomCrop(32, padding=4, reflect) + RandomHorizontalFlip + ToTensor +
Normalize batched by a DataLoader (--workers processes), and the same with transforms.v2 on uint8
tensors. All train the same ResNet18 with the same SGD recipe and batch size, in float32 on a CPU.
The epochs are interleaved (one of each, in turn), so a drift in the machine's speed hits each
alike; the figure is training images a second, median of --runs epochs after a warm-up epoch.
Images are random (speed does not depend on content). bench/gpu_suite.py times the GPU path.

Measured (2026-11-26, torch 2.14.1, a 2-vCPU VM, one torch thread; another process was running
tests on the other core):

    python bench/trainer.py --width 64 --images 512 --runs 5          (full width, the study's)
    synthaug Trainer (uint8 on device, batched augment)    25.33 s/epoch   20 images/s   1.00x
    torchvision PIL transforms + DataLoader (0 workers)    25.75 s/epoch   20 images/s   1.02x
    torchvision v2 tensor transforms + DataLoader          26.05 s/epoch   20 images/s   1.03x

    python bench/trainer.py --runs 5                                  (width 16, 2,048 images)
    synthaug Trainer (uint8 on device, batched augment)     6.89 s/epoch  297 images/s   1.00x
    torchvision PIL transforms + DataLoader (0 workers)     7.38 s/epoch  277 images/s   1.07x
    torchvision v2 tensor transforms + DataLoader           6.83 s/epoch  300 images/s   0.99x

The third column is each baseline's time over the Trainer's: at full width the Trainer is 1.02x
the PIL way and 1.03x the v2 way; narrow, 1.07x the PIL way and level with the v2 way (0.99x). Session 4 measured 0.95x with the two pipelines run one after the
other (the Trainer first); run in turn they are level, as they should be on a CPU, where the
convolutions are the same and take nearly all the time. The design is for the GPU, where
per-image transforms on the host become the bottleneck.
"""

from __future__ import annotations

import statistics
import sys

import torch

from baselines import LoaderTraining, PILImages, UInt8Images
from measure import random_images
from synthaug.models.classifier import TrainConfig, Trainer
from synthaug.sweep.cli import OneLineParser


def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=16, help="ResNet18 width (64: the study's)")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3, help="timed epochs of each, after one warm-up epoch")
    parser.add_argument("--workers", type=int, default=0, help="the baselines' DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    x, y = random_images(args.images)
    cfg = TrainConfig(epochs=args.runs + 1, batch_size=args.batch, width=args.width)
    trainer = Trainer(cfg, x, y, 10, seed=0, device=args.device, progress=False)
    pipelines = {
        "synthaug Trainer (uint8 on device, batched augment)": lambda: trainer.train_epoch()["epoch_time_s"],
        f"torchvision PIL transforms + DataLoader ({args.workers} workers)":
            LoaderTraining(PILImages(x, y), cfg, args.device, args.workers).train_epoch,
        f"torchvision v2 tensor transforms + DataLoader ({args.workers} w.)":
            LoaderTraining(UInt8Images(x, y), cfg, args.device, args.workers).train_epoch,
    }
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    for round_ in range(args.runs + 1):     # interleaved, so a drift in the machine's speed hits each alike
        for name, epoch in pipelines.items():
            seconds = epoch()
            if round_:                      # round 0 warms up
                times[name].append(seconds)

    medians = {name: statistics.median(t) for name, t in times.items()}
    ours = medians[next(iter(pipelines))]
    print(f"ResNet18 width {args.width}, {args.device}, {args.images} images, batch {args.batch}, "
          f"{args.threads} CPU thread(s), median of {args.runs} interleaved epochs after a warm-up")
    print(f"{'pipeline':<62} {'s/epoch':>8} {'images/s':>9} {'speed-up':>9}")
    for name, seconds in medians.items():
        print(f"{name:<62} {seconds:>8.2f} {args.images / seconds:>9.0f} {seconds / ours:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
