"""A saved pseudo-labeller, read back and checked: what a DDPM server needs to label an unconditional
generator's samples (synthaug.generator_training trains and saves it). Needs torch only, no tracking."""

from __future__ import annotations

from pathlib import Path

import torch

from synthaug.classifier import resnet18
from synthaug.diffusion.ddpm import weights_digest
from synthaug.files import DamagedFile


def load_labeller(path: str | Path, device: str) -> torch.nn.Module:
    return _labeller_model(checked_labeller(Path(path))).to(device).eval()


def _labeller_model(saved: dict) -> torch.nn.Module:
    model = resnet18(saved["num_classes"], saved["width"], saved.get("stem", "cifar"))
    model.load_state_dict(saved["state_dict"])
    return model


def checked_labeller(path: Path) -> dict:
    """A saved labeller whose weights match the digest saved with them; DamagedFile (one line) otherwise."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        found = weights_digest(_labeller_model(saved))
    except (OSError, RuntimeError, KeyError, EOFError, ValueError) as err:
        raise DamagedFile(f"labeller {path} is damaged ({str(err).splitlines()[0][:120]}); delete it to train "
                          f"it again") from None
    if found != saved["digest"]:
        raise DamagedFile(f"labeller {path} is damaged (its weights do not match its digest); delete it to train "
                          f"it again")
    return saved
