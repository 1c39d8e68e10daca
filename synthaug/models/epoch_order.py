"""Which training images an epoch takes, in what order: shuffled passes over the whole training set.

An epoch draws `per_epoch` images from a sequence of shuffled passes that continues across epochs: the
rest of the current pass first, then a fresh permutation whenever one runs out. With per_epoch = the
training set's size (TrainConfig.budget "epochs") every epoch is exactly one fresh pass, drawn from the
generator as the trainer always drew it. With per_epoch = the trial's real images before augmentation
(budget "steps") adding images adds no optimizer steps, and every image is still drawn at the same rate,
since each pass visits every image once.

A leaf beside synthaug.models.classifier: torch only.
"""

from __future__ import annotations

import torch


class EpochOrder:
    """Each epoch's image indices, drawn from a CPU torch.Generator; its state resumes the pass mid-way."""

    def __init__(self, n: int, per_epoch: int):
        if n < 1 or per_epoch < 1:
            raise ValueError(f"need at least one image and one image an epoch, got n={n}, per_epoch={per_epoch}")
        self.n, self.per_epoch = n, per_epoch
        self.remaining = torch.empty(0, dtype=torch.long)   # the current pass's images not yet drawn, in order

    def next_epoch(self, gen: torch.Generator) -> torch.Tensor:
        """The next epoch's per_epoch indices (int64, CPU): the current pass's rest, then new passes."""
        parts, need = [], self.per_epoch
        while need:
            if not len(self.remaining):
                self.remaining = torch.randperm(self.n, generator=gen)
            parts.append(self.remaining[:need])
            self.remaining = self.remaining[need:]
            need -= len(parts[-1])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict:
        return {"remaining": self.remaining.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.remaining = state["remaining"].clone()
