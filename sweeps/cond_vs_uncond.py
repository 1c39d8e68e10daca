"""E3, conditional vs unconditional at equal count: the same number of synthetic images, targeted or not.

    python sweeps/cond_vs_uncond.py                       # smoke preset, 3 seeds, offline (shapes)
    python sweeps/cond_vs_uncond.py --preset paper --data cifar10
    python analysis/significance.py --experiment cond_vs_uncond

CIFAR-LT (imbalance 0.1) plus, in each arm but "none" (the baseline), K images for each of dog,
ship, truck; the generators (and their labellers) learn only the trial's own real images unless
named full-split:
  conditional             K class-conditional samples of each (ddpm-cond-subset; E3a);
  conditional-full-split  the same from ddpm-cond, which learns the whole split (the study's
                          setting, an upper bound: it hands back the withheld images' information);
  unconditional           the first 3 x K samples of an unconditional DDPM (ddpm-uncond-subset),
                          added under the pseudo-labeller's labels, whichever classes they fall in (E3b);
  unconditional-targeted  K pseudo-labelled unconditional samples of each (not in the study: it
                          separates "which model" from "targeted");
  equal-steps             conditional, trained for the baseline's optimizer steps (train.budget=steps);
  oversample              K copies drawn from the trial's own real images of each class;
  reweight                no images; the loss re-weighted to the class prior K images would give;
  withheld-real           K real images of each from outside the trial's subset.
K = 500 at the study's scale (n_max = 5000), 10 in the smoke preset. Declared before it runs (tag
synthaug.primary): the primary contrast is conditional against unconditional (the study found the
conditional arm better; seeds say by how much and whether it is real); the exchange rate is
conditional against withheld-real.
"""

import sys

from synthaug.sweep.runner import CONTROL_ARMS, NO_AUGMENTATION, Experiment, main

DOG, SHIP, TRUCK = "dog", "ship", "truck"
SUBSET = "ddpm-cond-subset"

EXPERIMENT = Experiment(
    name="cond_vs_uncond",
    grid={},
    arms={
        **NO_AUGMENTATION,
        "conditional": {"generator": SUBSET},
        "conditional-full-split": {"generator": "ddpm-cond"},
        "unconditional": {"generator": "ddpm-uncond-subset", "augment_mode": "stream"},
        "unconditional-targeted": {"generator": "ddpm-uncond-subset"},
        "equal-steps": {"generator": SUBSET, "train.budget": "steps"},
        **CONTROL_ARMS,
    },
    fixed={"imbalance": 0.1, "generator": SUBSET, "augment_classes": [DOG, SHIP, TRUCK], "augment_count": 10},
    paper_fixed={"augment_count": 500, "train.epochs": 30},
    primary=(("arm=conditional", "arm=unconditional"),),
    exchange=(("arm=conditional", "arm=withheld-real"),),
    description=__doc__.splitlines()[0],
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
