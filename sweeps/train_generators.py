"""Train a preset's generators and their pseudo-labellers before any sweep: resumable, in MLflow.

    python sweeps/train_generators.py --preset tiny                      # seconds, CPU, offline
    python sweeps/train_generators.py --preset smoke --data cifar10
    python sweeps/train_generators.py --preset paper --data cifar10      # the study's DDPMs, GPUs
    python sweeps/train_generators.py --preset paper --generators ddpm-cond --gpus-per-generator 4 --address auto

Rerunning the same command after an interruption continues each training from its last
checkpoint; a sweep afterwards finds everything cached and trains nothing.
"""

import sys

from synthaug.sweep.generator_job import main

if __name__ == "__main__":
    sys.exit(main())
