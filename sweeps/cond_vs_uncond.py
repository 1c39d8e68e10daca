"""E3, conditional vs unconditional at equal count: the same number of synthetic images, targeted or not.

    python sweeps/cond_vs_uncond.py                       # smoke preset, 3 seeds, offline (shapes)
    python sweeps/cond_vs_uncond.py --preset paper --seeds 5 --data cifar10
    python analysis/significance.py --experiment cond_vs_uncond --baseline arm=unconditional

CIFAR-LT (imbalance 0.1) plus, in each arm but "none":
  conditional             K class-conditional samples for each of dog, ship, truck (E3a);
  unconditional           the first 3 x K samples of an unconditional DDPM, added under the
                          pseudo-labeller's labels, whichever classes they fall in (E3b);
  unconditional-targeted  K pseudo-labelled unconditional samples for each of dog, ship,
                          truck (not in the study: it separates "which model" from "targeted").
K = 500 at the study's scale (n_max = 5000), 10 in the smoke preset. The study found the
conditional arm better; seeds say by how much and whether it is real.
"""

import sys

from synthaug.sweep import Experiment, main

DOG, SHIP, TRUCK = "dog", "ship", "truck"

EXPERIMENT = Experiment(
    name="cond_vs_uncond",
    grid={},
    arms={
        "none": {"augment_classes": [], "augment_count": 0},
        "conditional": {"generator": "ddpm-cond"},
        "unconditional": {"generator": "ddpm-uncond", "augment_mode": "stream"},
        "unconditional-targeted": {"generator": "ddpm-uncond"},
    },
    fixed={"imbalance": 0.1, "augment_classes": [DOG, SHIP, TRUCK], "augment_count": 10},
    paper_fixed={"augment_count": 500, "train.epochs": 30},
    description=__doc__.splitlines()[0],
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
