"""improved-diffusion's released checkpoint files (.pt state_dicts) through --checkpoint: our UNetModel has
upstream's keys and shapes, a randomly initialised model in the released format loads and samples 32x32
images, and a file of another architecture or role is refused in one line. No released file is needed:
the CIFAR-10 model is written at full size (52.5M parameters); the ImageNet 64x64 one (273M) only on the
meta device, and written at width 32 (same levels, blocks, attention and 1000 classes) to load and sample."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synthaug.config import preset
from synthaug.data.sources import CIFAR10_CLASSES, data_outline
from synthaug.diffusion.improved_unet import UNetShape, build_unet, unet_shape
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.generation.generators import generator_kind
from synthaug.sweep.sweep_inputs import UsageError, with_checkpoints

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = json.loads((ROOT / "tests" / "data" / "improved_diffusion_keys.json").read_text())
# the README's MODEL_FLAGS, as the shapes our reading of a file gives
CIFAR10 = UNetShape(model_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=3, attention_ds=(2, 4),
                    out_channels=6, num_classes=None, use_scale_shift_norm=True)
IMAGENET64 = UNetShape(model_channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3, attention_ds=(4, 8),
                       out_channels=6, num_classes=1000, use_scale_shift_norm=True)


def write_released(path: Path, shape: UNetShape, seed: int = 0) -> Path:
    """A randomly initialised UNetModel of `shape`, saved as the released files are: torch.save(state_dict)."""
    torch.manual_seed(seed)
    torch.save(build_unet(shape).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("released")
    return {"cifar10": write_released(root / "cifar10_uncond_50M_500K.pt", CIFAR10),
            "cifar10-narrow": write_released(root / "cifar10_narrow.pt", dataclasses.replace(CIFAR10, model_channels=32)),
            "imagenet64-narrow": write_released(root / "imagenet64_cond_narrow.pt",
                                                dataclasses.replace(IMAGENET64, model_channels=32))}


@pytest.mark.parametrize("name, shape", [("cifar10_uncond_50M_500K", CIFAR10),
                                         ("imagenet64_cond_270M_250K", IMAGENET64)])
def test_the_unet_has_upstreams_keys_and_shapes_for_both_released_models(name, shape):
    upstream = UPSTREAM[name]
    assert unet_shape({k: torch.empty(s, device="meta") for k, s in upstream["keys"]}) == shape
    ours = build_unet(shape, "meta").state_dict()
    assert [[k, list(t.shape)] for k, t in ours.items()] == upstream["keys"]       # every key, in order
    assert sum(t.numel() for t in ours.values()) == upstream["parameters"]
    assert shape.image_size == upstream["model_flags"]["image_size"]


def test_a_released_cifar10_file_serves_ddpm_uncond_and_samples_32x32(files, tmp_path):
    dataset = data_outline("shapes", tmp_path)
    tiny = with_checkpoints(preset("tiny"), [f"ddpm-uncond={files['cifar10']}"], dataset)
    spec = tiny.generator("ddpm-uncond")
    assert spec.kind == "improved-diffusion" and spec.checkpoint == str(files["cifar10"])
    assert generator_kind(spec).source(spec) == (f"the file {files['cifar10']}, assumed trained with 4000 steps, "
                                                 f"the cosine schedule, rescale_timesteps True")
    # sampling at width 32: the full-size model takes seconds a step on one CPU thread
    narrow = dataclasses.replace(spec, checkpoint=str(files["cifar10-narrow"]))
    kind = generator_kind(narrow)
    location, digest = kind.prepare(narrow, dataset, tmp_path, "cpu", None, None, False)
    assert digest != kind.prepare(dataclasses.replace(narrow, released=dataclasses.replace(
        narrow.released, noise_schedule="linear")), dataset, tmp_path, "cpu", None, None, False)[1]
    model = kind.load(location, narrow, "cpu")
    assert model.schedule["num_train_timesteps"] == 4000
    for sampler in (SamplerConfig("ddpm", steps=3), SamplerConfig("ddim", steps=3)):
        together = model.sample(sampler, [11, 12, 13], None, dataset.classes, "pool", 0, 3, False)
        alone = model.sample(sampler, [13], None, dataset.classes, "pool", 2, 1, False)
        assert together.shape == (3, 32, 32, 3) and together.dtype == np.uint8
        assert np.abs(together[2:].astype(int) - alone).max() <= 1          # image k from its own seed
        assert together.std() > 0 and not np.array_equal(together[0], together[1])


def test_a_released_imagenet64_file_serves_imagenet_through_table_3_at_32x32(files, tmp_path):
    dataset = data_outline("shapes", tmp_path)
    tiny = with_checkpoints(preset("tiny"), [f"imagenet={files['imagenet64-narrow']}"], dataset)
    spec = tiny.generator("imagenet")
    assert spec.kind == "improved-diffusion" and not spec.pretrained and spec.conditional
    assert spec.label_map == "study-table3" and spec.released.rescale_timesteps is False    # the README's flags
    model = generator_kind(spec).load(spec.checkpoint, spec, "cpu")
    assert model.shape.image_size == 64 and model.shape.num_classes == 1000
    truck = CIFAR10_CLASSES.index("truck")
    images = model.sample(SamplerConfig("ddpm", steps=2), [1, 2], truck, CIFAR10_CLASSES, "pool", 0, 2, False)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert generator_kind(spec).problem(spec, CIFAR10_CLASSES, ["truck", "ship"]) is None
    assert "no ImageNet classes for cat" in generator_kind(spec).problem(spec, CIFAR10_CLASSES, ["cat"])
    # the smoke preset's stand-in (a DDPM of shapes-fine) becomes the ImageNet model, through Table 3
    smoke = with_checkpoints(preset("smoke"), [f"imagenet={files['imagenet64-narrow']}"], dataset).generator("imagenet")
    assert (smoke.kind, smoke.train_data, smoke.label_map, smoke.released) == (
        "improved-diffusion", "", "study-table3", spec.released)


@pytest.mark.parametrize("flag, expected", [
    ("ddpm-uncond={imagenet64-narrow}", "is conditional on 1000 classes; generator ddpm-uncond is unconditional"),
    ("imagenet={cifar10-narrow}", "is unconditional; generator imagenet is class-conditional (on ImageNet's"),
    ("ddpm-cond={cifar10-narrow}", "is unconditional; generator ddpm-cond is class-conditional (on the data's"),
    ("ddpm-uncond={cropped}", "is not improved-diffusion's UNetModel: out.0.weight has shape (16,)"),
    ("ddpm-uncond={extra}", "is not improved-diffusion's UNetModel: key 'extra.weight' is not in a UNetModel"),
    ("ddpm-uncond={wrapped}", "not a plain state_dict (a dict of tensors): it holds a dict with keys model"),
    ("ddpm-uncond={text}", "not a torch file of tensors"),
    ("ddpm-uncond={missing}", "is not a file"),
])
def test_a_file_of_another_architecture_or_role_is_one_line(files, tmp_path, flag, expected):
    state = torch.load(files["cifar10-narrow"], weights_only=True)
    paths = {key: str(path) for key, path in files.items()}
    paths["cropped"] = str(tmp_path / "cropped.pt")
    torch.save({**state, "out.0.weight": state["out.0.weight"][:16]}, paths["cropped"])
    paths["extra"] = str(tmp_path / "extra.pt")
    torch.save({**state, "extra.weight": torch.zeros(1)}, paths["extra"])
    paths["wrapped"] = str(tmp_path / "wrapped.pt")
    torch.save({"model": state, "step": 5}, paths["wrapped"])
    paths["text"] = str(tmp_path / "text.pt")
    Path(paths["text"]).write_text("not a checkpoint")
    paths["missing"] = str(tmp_path / "missing.pt")
    with pytest.raises(UsageError) as err:
        with_checkpoints(preset("tiny"), [flag.format(**paths)], data_outline("shapes", tmp_path))
    message = str(err.value)
    assert message.startswith(f"--checkpoint {flag.split('=')[0]}: ") and expected in message
    assert "\n" not in message


def test_a_sweep_refuses_a_file_of_another_architecture_in_one_line_before_ray(tmp_path):
    from diffusers import UNet2DModel

    bad = tmp_path / "bad.pt"           # a diffusers UNet's state_dict: a .pt of tensors, not improved-diffusion's
    torch.save(UNet2DModel(sample_size=32, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                           down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2).state_dict(), bad)
    proc = subprocess.run([sys.executable, "sweeps/replace_pct.py", "--preset", "tiny", "--dry-run",
                           "--checkpoint", f"ddpm-uncond={bad}", "--cache", str(tmp_path / "c"),
                           "--storage", str(tmp_path / "r"), "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: --checkpoint ddpm-uncond: {str(bad)!r} is not improved-diffusion's UNetModel: no key "
                     f"'time_embed.0.weight' (improved-diffusion's UNetModel has one)"], proc.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "m.db").exists()


def test_the_paper_dry_run_says_which_generator_serves_e2a(files, tmp_path, monkeypatch, capsys):
    """README's `--checkpoint imagenet=...` in the paper preset's plan: the generator line names the file and
    the flags it is assumed to have been trained with, and leaves the 64x64 model's sampling unpriced."""
    from synthaug.sweep.runner import main

    from test_overrides import sweep_script

    monkeypatch.chdir(tmp_path)
    assert main(sweep_script("imagenet_targeted"), ["--preset", "paper", "--data", "cifar10", "--dry-run",
                                                    "--checkpoint", f"imagenet={files['imagenet64-narrow']}"]) == 0
    out = capsys.readouterr().out
    assert (f"  imagenet: improved-diffusion (the file {files['imagenet64-narrow']}, assumed trained with 4000 steps, "
            f"the cosine schedule, rescale_timesteps False); pools: 16 (class, seed) prefixes, about 8000 images at "
            f"50 steps (no throughput assumed for this model: not in the estimate)") in out, out[-3000:]
    assert os.listdir(tmp_path) == []


def test_the_flags_a_file_does_not_hold_are_checked_and_set_by_name():
    from synthaug.config import ConfigError, GeneratorSpec
    from synthaug.diffusion.improved_sampling import ReleasedFlags
    from synthaug.sweep.overrides import apply_sets

    with pytest.raises(ConfigError, match=r"^generator.released.noise_schedule: one of cosine, linear, got 'quad'$"):
        GeneratorSpec(released=ReleasedFlags(noise_schedule="quad")).validate()
    _, paper = apply_sets(sweep_experiment(), preset("paper"), ["generators.imagenet.released.noise_schedule=linear"])
    assert paper.generator("imagenet").released == ReleasedFlags(noise_schedule="linear", rescale_timesteps=False)


def sweep_experiment():
    from test_overrides import sweep_script

    return sweep_script("imagenet_targeted")
