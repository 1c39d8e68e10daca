"""A saved pseudo-labeller, read back and checked: what a DDPM server needs to label an unconditional
generator's samples (synthaug.generation.generator_training trains and saves it). Needs torch only, no tracking."""

from __future__ import annotations

from pathlib import Path

import torch

from synthaug.core.files import DamagedFile
from synthaug.diffusion.ddpm import weights_digest
from synthaug.models.classifier import resnet18


def load_labeller(path: str | Path, device: str) -> torch.nn.Module:
    return _checked(Path(path))[1].to(device).eval()


def checked_labeller(path: Path) -> dict:
    """A saved labeller whose weights match the digest saved with them; DamagedFile (one line) otherwise."""
    return _checked(path)[0]


def _checked(path: Path) -> tuple[dict, torch.nn.Module]:
    """(what was saved, the model built from it, once), its weights checked against the saved digest."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = resnet18(saved["num_classes"], saved["width"], saved.get("stem", "cifar"))
        model.load_state_dict(saved["state_dict"])
        found = weights_digest(model)
    except (OSError, RuntimeError, KeyError, EOFError, ValueError) as err:
        raise DamagedFile(f"labeller {path} is damaged ({str(err).splitlines()[0][:120]}); delete it to train "
                          f"it again") from None
    if found != saved["digest"]:
        raise DamagedFile(f"labeller {path} is damaged (its weights do not match its digest); delete it to train "
                          f"it again")
    return saved, model
