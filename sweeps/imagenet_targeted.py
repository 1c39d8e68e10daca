"""E2a, targeted augmentation of long-tailed CIFAR-10 from a pretrained ImageNet class-conditional model.

    python sweeps/imagenet_targeted.py --preset paper --seeds 5 --data cifar10 \
        --checkpoint imagenet=imagenet64_cond_270M_250K.pt                         # the study's model, a GPU
    python sweeps/imagenet_targeted.py --preset paper --seeds 5 --data cifar10      # DiT-XL/2 instead, a GPU
    python sweeps/imagenet_targeted.py --preset smoke --seeds 2 --data cifar10

As sweeps/long_tail.py (CIFAR-LT, + K images for each class of {truck}, {ship}, {truck, ship},
with the arms none, synthetic, equal-steps, oversample, reweight and withheld-real), but the
synthetic images come from the generator `imagenet`, asked for one of the CIFAR class's ImageNet
fine classes in the study's Table 3 (truck: fire engine, garbage truck, pickup, tow truck, trailer
truck; ship: container ship, pirate ship) and brought to 32x32: improved-diffusion's released
class-conditional ImageNet 64x64 model when --checkpoint imagenet=FILE.pt gives it (the study's,
most likely), else a substitute, DiT-XL/2 (ImageNet 256x256); the dry run and the sweep say which.
`--set generators.imagenet.label_map=cifar10-wide` takes a wider map of every class.
The model must be on this machine (for DiT: `huggingface-cli download facebook/DiT-XL-2-256` once),
or the sweep stops before it starts, in one line. The data must have CIFAR-10's class names.
On a CPU this is slow (270M and 675M parameters): run it on a GPU. The pretrained model
cannot learn the trial's subset, so there is no subset or full-split arm: it never saw CIFAR-10.
Declared before it runs (tag synthaug.primary): the primary contrast is synthetic on {truck, ship}
against the baseline; the exchange rate is synthetic against withheld-real.
"""

import sys

from synthaug.sweep.runner import CONTROL_ARMS, NO_AUGMENTATION, Experiment, main

TRUCK, SHIP = "truck", "ship"

EXPERIMENT = Experiment(
    name="imagenet_targeted",
    grid={"augment_classes": [[TRUCK], [SHIP], [TRUCK, SHIP]]},
    arms={**NO_AUGMENTATION, "synthetic": {"generator": "imagenet"},
          "equal-steps": {"generator": "imagenet", "train.budget": "steps"}, **CONTROL_ARMS},
    fixed={"imbalance": 0.1, "generator": "imagenet", "augment_count": 10},
    paper_fixed={"augment_count": 500, "train.epochs": 30},
    primary=((f"arm=synthetic,augment_classes={TRUCK},{SHIP}", ""),),
    exchange=(("arm=synthetic", "arm=withheld-real"),),
    description=__doc__.splitlines()[0],
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
