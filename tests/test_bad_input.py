"""Bad input, refused before anything starts: one line naming the field and what is allowed, exit 2, and
nothing left behind (no MLflow store, no cache folder, no Ray results) in the folder the sweep ran from."""

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthaug.sweep.runner import main

from processes import free_port
from test_overrides import sweep_script


def tar_of(path: Path, images: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in images.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def png(size: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Bad data sources and folders, outside the folder each case runs in."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "no-splits").mkdir()
    (root / "a-file.txt").write_text("not data")
    good = png(32)
    return {
        "no_splits": str(root / "no-splits"),
        "not_archive": str(root / "a-file.txt"),
        "corrupt": str(tar_of(root / "corrupt.tar.gz", {"train/cat/0.png": b"not a png", "test/cat/0.png": good})),
        "large": str(tar_of(root / "large.tar.gz", {"train/cat/0.png": png(64), "test/cat/0.png": png(64)})),
        "no_test": str(tar_of(root / "no-test.tar.gz", {"train/cat/0.png": good})),
        "file": str(root / "a-file.txt"),
        "folder": str(root),
    }


ALL = ("--set", "real_per_class=0", "--set", "test_per_class=0",    # every image of a one-image data set
       "--set", "validation_per_class=0")
CASES = [   # (flags, what the one line must say)
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--seeds", "0"], "--seeds: a count >= 1"),
    (["--seeds", "a,b"], "--seeds: a count >= 1"),
    (["--seeds", "1,1"], "--seeds: a count >= 1"),
    (["--preset", "huge"], "--preset: one of smoke, tiny, paper"),
    (["--data", "/nonexistent/cifar.tar.gz"], "--data '/nonexistent/cifar.tar.gz': does not exist"),
    (["--data", "{not_archive}"], "is not a folder, .tar or .tar.gz"),
    (["--data", "{no_splits}"], "folder has no train/ or test/ class folders"),
    (["--data", "{corrupt}", *ALL], "unreadable image"),
    (["--data", "{large}", *ALL], "image is 64x64, expected 32x32"),
    (["--data", "{no_test}", *ALL], "no images under test/<class>/"),
    (["--set", "train.epoch=1"], "unknown key 'train.epoch' (did you mean train.epochs?)"),
    (["--set", "train.epochs=1.5"], "--set train.epochs: an integer, got '1.5'"),
    (["--set", "train.epochs=0"], "train.epochs: an integer >= 1, got 0"),
    (["--set", "train.lr=-1"], "train.lr: a finite number > 0"),
    (["--set", "imbalance=0"], "imbalance: a ratio in (0, 1]"),
    (["--grid", "replace_pct=0,100"], "replace_pct: a percentage in [0, 100)"),
    (["--set", "augment_mode=weird"], "augment_mode: one of per_class, stream"),
    (["--set", "augment_source=copies"], "augment_source: one of synthetic, oversample, withheld, reweight"),
    (["--set", "augment_source=withheld", "--set", "augment_classes=circle", "--set", "augment_count=581"],
     "augment_count: at most 575 with augment_source withheld (circle has 575 real images outside"),
    (["--set", "train.budget=time"], "train.budget: one of epochs, steps, got 'time'"),
    (["--set", "generator=nope"], ("generator: one of ddpm-cond, ddpm-cond-subset, ddpm-uncond, ddpm-uncond-subset, "
                                   "imagenet, got 'nope'")),
    (["--set", "real_per_class=596"], "real_per_class: at most 595 (the largest class of shapes outside the "
                                      "validation split; 0 = all), got 596"),
    (["--set", "validation_per_class=600"], "validation_per_class: at most 599 (it must leave training images"),
    (["--set", "test_per_class=5000"], "test_per_class: at most 100 (the largest class of shapes"),
    (["--set", "recipe=fancy"], "recipe: one of study, strong, custom"),
    (["--set", "train.momentum=0.5"], "train.momentum: set by recipe strong"),
    (["--set", "generators.ddpm-uncond.ddpm.train_steps=0"], "generator.ddpm.train_steps: an int >= 1"),
    (["--set", "generators.ddpm-uncond.min_confidence=1.5"], "generator.min_confidence: a number in [0, 1)"),
    (["--set", "generators.ddpm-uncond.sampler.name=euler"], "generator.sampler.name: one of ddim, ddpm"),
    (["--set", "generators.ddpm-uncond.train_on=some"], "generator.train_on: one of all, trial"),
    (["--set", "preset.gpus_per_trial=x"], "--set preset.gpus_per_trial: a number, got 'x'"),
    (["--set", "preset.gpus_per_trial=-1"], "preset.gpus_per_trial: a number >= 0, got -1.0"),
    (["--set", "preset.checkpointing.every_steps=0"], "preset.checkpointing.every_steps: an integer >= 1, got 0"),
    (["--grid", "replace_pct=a"], "--grid replace_pct: a number, got 'a'"),
    (["--grid", "seed=1,2"], "unknown key 'seed'"),
    (["--grid", "arm=none"], "--grid arm: names from (this experiment has no arms)"),
    (["--gpus", "-1"], "--gpus: an integer >= 0"),
    (["--gpus-per-trial", "abc"], "--gpus-per-trial: a number >= 0"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial: a number >= 0.01"),
    (["--wait-for-gpus", "-5"], "--wait-for-gpus: seconds >= 0"),
    (["--checkpoint", "nope={folder}"], "--checkpoint: NAME=FOLDER with NAME one of"),
    (["--checkpoint", "ddpm-uncond=/nonexistent"], "--checkpoint ddpm-uncond: '/nonexistent' is not a folder"),
    (["--class-map", "dog=wolf"], "--class-map: NAME=CLASS pairs"),
    (["--mlflow-uri", "ftp://host/store"], "--mlflow-uri 'ftp://host/store': an unknown scheme 'ftp'"),
    (["--mlflow-uri", "http://127.0.0.1:{port}"], "did not answer within 10 s"),
    (["--address", "127.0.0.1:{port}"], "--address '127.0.0.1:{port}': no Ray head answered"),
    (["--address", "nonsense"], "host:port of a Ray head"),
    (["--storage", "ftp://host/results"], "--storage 'ftp://host/results': an unknown scheme 'ftp'"),
    (["--storage", "{file}/results"], "is a file, not a folder"),
    (["--cache", "{file}/cache"], "--cache"),
    (["--dry-run", "--gpu-model", "A100"], "--gpu-model: a device"),
    (["--dry-run", "--benchmarks", "{file}"], "no throughput table"),
    (["--dry-run", "--paired-sd", "0.4%"], "--paired-sd: a fraction in (0, 1), like 0.004 for 0.4 pp; got '0.4%'"),
    (["--set", "preset.paired_sd=0.01"], "unknown key 'preset.paired_sd'"),
]


@pytest.mark.parametrize("flags, says", CASES, ids=[" ".join(f)[:40] for f, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_behind(flags, says, inputs, tmp_path, capsys, monkeypatch):
    port = str(free_port())
    fill = {**inputs, "port": port}
    flags = [f.format(**fill) for f in flags]
    says = says.format(**fill)
    monkeypatch.chdir(tmp_path)
    argv = ["--preset", "tiny", "--cache", str(tmp_path / "c"), "--storage", str(tmp_path / "r"),
            "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}", *flags]
    assert main(sweep_script("replace_pct"), argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert os.listdir(tmp_path) == []                    # no store, no cache, no results, no mlflow.db


def test_the_table_has_at_least_30_cases():
    assert len(CASES) >= 30
