"""E1 + E2, targeted augmentation of long-tailed CIFAR-10 from a class-conditional DDPM.

    python sweeps/long_tail.py                            # smoke preset, 3 seeds, offline (shapes)
    python sweeps/long_tail.py --preset paper --seeds 5 --data cifar10

CIFAR-LT: n_i = floor(n_max * 0.1 ** (i / 9)) real images of class i. E1 is the cell with
no augmentation; E2 adds K class-conditional samples to each class of {truck}, {ship},
{truck, ship}, by name: on data whose names differ, --class-map truck=...,ship=... (the built-in
shapes map CIFAR-10's names by index: truck is frame, ship is plus).
K = 500 at the study's scale (n_max = 5000), n_max / 10 in the smoke preset.
"""

import sys

from synthaug.sweep import Experiment, main

TRUCK, SHIP = "truck", "ship"

EXPERIMENT = Experiment(
    name="long_tail",
    grid={"augment_classes": [[], [TRUCK], [SHIP], [TRUCK, SHIP]]},
    fixed={"imbalance": 0.1, "generator": "ddpm-cond", "augment_count": 10},
    paper_fixed={"augment_count": 500, "train.epochs": 30},
    description=__doc__.splitlines()[0],
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
