"""E1 + E2, targeted augmentation of long-tailed CIFAR-10 from a class-conditional DDPM, with its controls.

    python sweeps/long_tail.py                            # smoke preset, 3 seeds, offline (shapes)
    python sweeps/long_tail.py --preset paper --data cifar10

CIFAR-LT: n_i = floor(n_max * 0.1 ** (i / 9)) real images of class i. Each arm but "none" adds K
images to each class of {truck}, {ship}, {truck, ship}, by name (on data whose names differ,
--class-map truck=...,ship=...; the built-in shapes map CIFAR-10's names by index: truck is frame,
ship is plus). K = 500 at the study's scale (n_max = 5000), 10 in the smoke preset. The arms:
  none                  no images added (E1): the baseline, run once, not once a class set;
  synthetic             K samples of ddpm-cond-subset, a conditional DDPM (and labeller) that learns
                        only the trial's own real images: the primary arm, no withheld image leaks in;
  synthetic-full-split  K samples of ddpm-cond, which learns all 5,000 of each class (the study's
                        setting): an upper bound, since it hands back the withheld images' information;
  equal-steps           synthetic, trained for the optimizer steps the baseline takes (train.budget=steps):
                        the gain that is not just more SGD steps;
  oversample            K copies drawn from the trial's own real images of the class;
  reweight              no images added; the loss re-weighted to the class prior K images would give;
  withheld-real         K real images of the class from outside the trial's subset: what synthetic
                        images are worth in real ones (the exchange rate).
19 configurations. Declared before it runs (the parent run's tag synthaug.primary): the primary
contrasts are synthetic on {truck, ship} against the baseline and against oversample; the exchange
rate is synthetic against withheld-real.
"""

import sys

from synthaug.sweep.runner import CONTROL_ARMS, NO_AUGMENTATION, Experiment, main

TRUCK, SHIP = "truck", "ship"
SUBSET = "ddpm-cond-subset"         # learns the trial's real subset only: the primary, honest arm

EXPERIMENT = Experiment(
    name="long_tail",
    grid={"augment_classes": [[TRUCK], [SHIP], [TRUCK, SHIP]]},
    arms={**NO_AUGMENTATION, "synthetic": {"generator": SUBSET}, "synthetic-full-split": {"generator": "ddpm-cond"},
          "equal-steps": {"generator": SUBSET, "train.budget": "steps"}, **CONTROL_ARMS},
    fixed={"imbalance": 0.1, "generator": SUBSET, "augment_count": 10},
    paper_fixed={"augment_count": 500, "train.epochs": 30},
    primary=((f"arm=synthetic,augment_classes={TRUCK},{SHIP}", ""),
             (f"arm=synthetic,augment_classes={TRUCK},{SHIP}", f"arm=oversample,augment_classes={TRUCK},{SHIP}")),
    exchange=(("arm=synthetic", "arm=withheld-real"),),
    description=__doc__.splitlines()[0],
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
