"""E2a: a pretrained ImageNet class-conditional pipeline (a tiny random DiT here) serves CIFAR classes
through the label map, deterministically, batch-independently, at 32x32, as a pool like any other."""

import dataclasses

import numpy as np
import pytest

from synthaug.config import IMAGENET_DIT, ConfigError
from synthaug.diffusion.imagenet import CIFAR10_TO_IMAGENET, load_pipeline, sample_pipeline, source_labels, unavailable
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.generation.prepare import prepare_generator
from synthaug.generation.server import DDPMServer

CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_the_default_label_map_is_the_studys_table_3_and_the_wide_one_is_named(tiny_dit):
    from synthaug.diffusion.imagenet import LABEL_MAPS

    assert IMAGENET_DIT.label_map == "study-table3"
    assert LABEL_MAPS["study-table3"] == {"truck": (555, 569, 717, 864, 867), "ship": (510, 724)}
    assert unavailable(tiny_dit, "study-table3", ["truck", "ship"]) is None
    assert "label map study-table3 has no ImageNet classes for dog" in unavailable(tiny_dit, "study-table3",
                                                                                  ["truck", "dog"])
    assert set(LABEL_MAPS["cifar10-wide"]) == set(CIFAR)


def test_the_label_map_covers_cifar_and_picks_by_image_seed():
    assert set(CIFAR10_TO_IMAGENET) == set(CIFAR)
    ids = [i for v in CIFAR10_TO_IMAGENET.values() for i in v]
    assert len(ids) == len(set(ids)) and all(0 <= i < 1000 for i in ids)       # disjoint ImageNet classes
    first = source_labels("cifar10-wide", "truck", "pool", range(40))
    assert first == source_labels("cifar10-wide", "truck", "pool", range(40))
    assert set(first) <= set(CIFAR10_TO_IMAGENET["truck"]) and len(set(first)) > 1
    assert source_labels("cifar10-wide", "truck", "pool", range(10, 20)) == first[10:20]   # nested


def test_sampling_is_32x32_deterministic_and_batch_independent(tiny_dit):
    pipe = load_pipeline(tiny_dit, "cpu")
    sampler = SamplerConfig(name="ddim", steps=4, eta=1.0)          # a noise draw every step
    seeds, labels = [11, 12, 13, 14, 15], [555, 569, 675, 717, 864]
    together = sample_pipeline(pipe, sampler, seeds, labels, "cpu", guidance_scale=1.5, batch_size=5)
    apart = sample_pipeline(pipe, sampler, seeds, labels, "cpu", guidance_scale=1.5, batch_size=2)
    assert together.shape == (5, 32, 32, 3) and together.dtype == np.uint8
    assert np.abs(together.astype(int) - apart.astype(int)).max() <= 1
    other = sample_pipeline(pipe, sampler, [11], [510], "cpu", guidance_scale=1.5)
    assert np.abs(other[0].astype(int) - together[0].astype(int)).max() > 1        # the label matters


def test_a_pretrained_generator_serves_pools_once_and_nested(tiny_dit, tmp_path):
    spec = dataclasses.replace(IMAGENET_DIT, pretrained=tiny_dit, sampler=SamplerConfig(name="ddim", steps=3))
    prepared = prepare_generator(spec, "shapes", tmp_path / "cache", device="cpu", progress=False)
    assert prepared.conditional and prepared.directory == tiny_dit
    guided = prepare_generator(dataclasses.replace(spec, guidance_scale=3.0), "shapes", tmp_path / "cache",
                               device="cpu", progress=False)
    assert guided.weights_digest != prepared.weights_digest        # guidance changes the images: a new pool
    server = DDPMServer(prepared, spec, str(tmp_path / "pools"), CIFAR, "cpu", progress=False)
    small = server.take(9, 3, seed=0)
    large = server.take(9, 20, seed=0)
    assert large.images.shape == (20, 32, 32, 3) and np.all(large.labels == 9)
    assert np.array_equal(small.images, large.images[:3])
    again = DDPMServer(prepared, spec, str(tmp_path / "pools"), CIFAR, "cpu", progress=False)
    assert np.array_equal(again.take(9, 20, seed=0).images, large.images)
    assert again.counters()["generated"] == 0


def test_a_missing_model_or_an_unmapped_class_is_named_in_one_line(tiny_dit, tmp_path):
    assert unavailable(tiny_dit, "cifar10-wide", CIFAR) is None
    assert "not on this machine" in unavailable("nobody/no-such-model", "cifar10-wide", CIFAR)
    assert "no ImageNet classes for circle" in unavailable(tiny_dit, "cifar10-wide", ["circle", "truck"])
    assert "model_index.json" in unavailable(str(tmp_path), "cifar10-wide", CIFAR)
    with pytest.raises(ConfigError, match="generator.label_map"):
        dataclasses.replace(IMAGENET_DIT, label_map="").validate()


@pytest.fixture(scope="module")
def cifar_named_tar(tmp_path_factory):
    """Shapes images in class folders named airplane, ship and truck (CIFAR names the label map knows)."""
    import tarfile

    from PIL import Image

    from synthaug.data.shapes import make_shapes

    root = tmp_path_factory.mktemp("cifar3")
    train_x, train_y, test_x, test_y = make_shapes(seed=2, train_per_class=20, test_per_class=10)
    for split, xs, ys in (("train", train_x, train_y), ("test", test_x, test_y)):
        for i, (x, y) in enumerate(zip(xs, ys)):
            if y < 3:
                folder = root / split / ("airplane", "ship", "truck")[y]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(x).save(folder / f"{i:05d}.png")
    path = root / "cifar3.tar"
    with tarfile.open(path, "w") as tar:
        for split in ("train", "test"):
            tar.add(root / split, arcname=split)
    return path


def test_an_e2a_sweep_runs_on_the_pretrained_server(tiny_dit, cifar_named_tar, tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from synthaug.config import PRESETS
    from synthaug.sweep.runner import Experiment, main

    spec = dataclasses.replace(IMAGENET_DIT, pretrained=tiny_dit, sampler=SamplerConfig(name="ddim", steps=3))
    monkeypatch.setitem(PRESETS, "tiny", dataclasses.replace(PRESETS["tiny"], generators=(spec,)))
    experiment = Experiment(name="tiny_imagenet", grid={"augment_classes": [[], ["truck"]]},
                            fixed={"generator": "imagenet", "augment_count": 4, "imbalance": 0.5})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(experiment, ["--preset", "tiny", "--seeds", "1", "--set", "test_per_class=10",
                             "--set", "real_per_class=15", "--data",     # 20 a class, 5 held out for validation
                             str(cifar_named_tar), "--cache",
                             str(tmp_path / "cache"), "--storage", str(tmp_path / "rr"), "--mlflow-uri", uri]) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny_imagenet")
    runs = client.search_runs([exp.experiment_id], "tags.`synthaug.role` = 'trial'")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    (parent,) = client.search_runs([exp.experiment_id], "tags.`synthaug.role` = 'sweep'")
    assert parent.data.tags["synthaug.generator.imagenet.kind"] == "pretrained-dit"     # which model served E2a
    assert parent.data.tags["synthaug.generator.imagenet.source"].startswith(f"the pretrained {tiny_dit}, a substitute")
    augmented = next(r for r in runs if "truck" in r.data.params["augment_classes"])
    manifest = json.loads(Path(client.download_artifacts(augmented.info.run_id, "manifest.json", str(tmp_path)))
                          .read_text())
    truck = next(c for c in manifest["classes"] if c["class"] == "truck")
    assert truck["augmented"] == 4 and truck["pool_id"]


def test_an_e2a_sweep_without_the_model_stops_in_one_line(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty_hub"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "sweeps/imagenet_targeted.py", "--preset", "tiny", "--seeds", "1",
                           "--cache", str(tmp_path / "c"), "--storage", str(tmp_path / "r"),
                           "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: generator imagenet:"), proc.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "m.db").exists()


def test_the_smoke_e2a_stand_in_learns_from_outside_data_and_serves_the_shapes_through_its_label_map(tmp_path):
    """The smoke preset's `imagenet` never sees the data it augments: trained on shapes-fine (20 classes), its key
    is shapes-fine's, a shape's images are drawn as that shape's fine classes, and it is scored on the shapes."""
    from mlflow.tracking import MlflowClient

    from synthaug.config import PRESETS, TINY_DDPM, TrainConfig
    from synthaug.data.shapes import SHAPE_CLASSES, SHAPE_FINE_CLASSES
    from synthaug.data.sources import load_dataset
    from synthaug.diffusion.ddpm import load_generator
    from synthaug.diffusion.imagenet import SHAPES_TO_FINE
    from synthaug.diffusion.sampling import image_seed, sample
    from synthaug.generation.generator_training import generator_key
    from synthaug.generation.generators import generator_kind

    assert PRESETS["smoke"].generator("imagenet").train_data == "shapes-fine"
    assert all(SHAPE_FINE_CLASSES[i].startswith(shape + "-") for shape, ids in SHAPES_TO_FINE.items() for i in ids)
    assert tuple(SHAPES_TO_FINE) == SHAPE_CLASSES
    spec = dataclasses.replace(PRESETS["smoke"].generator("imagenet"), ddpm=dataclasses.replace(TINY_DDPM, conditional=True, num_classes=20),
                               sampler=SamplerConfig(name="ddim", steps=3), labeller_per_class=10,
                               labeller=TrainConfig(epochs=1, batch_size=32, width=8))
    spec.validate()
    cache, uri = tmp_path / "cache", f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepared = prepare_generator(spec, "shapes", cache, device="cpu", progress=False, tracking_uri=uri,
                                 evaluation_per_class=4)
    shapes = load_dataset("shapes", cache)
    own = dataclasses.replace(spec, train_data="", label_map="")
    assert prepared.directory.endswith(generator_key(spec, shapes)) and generator_key(own, shapes) != generator_key(spec, shapes)
    unet, _ = load_generator(prepared.directory, "cpu")
    assert unet.config.num_class_embeds == len(SHAPE_FINE_CLASSES)           # it learnt shapes-fine's 20 classes
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("generators").experiment_id],
                                           "tags.`synthaug.role` = 'generator'")
    assert run.data.params["data"] == "shapes-fine" and run.data.params["train_images"] == "6000"
    assert {k for k in run.data.metrics if k.startswith("labeller_agreement.")} == {
        f"labeller_agreement.{c}" for c in SHAPE_CLASSES}                       # judged on the shapes it serves

    frame = SHAPE_CLASSES.index("frame")
    server = DDPMServer(prepared, spec, str(tmp_path / "pools"), SHAPE_CLASSES, "cpu", progress=False)
    taken = server.take(frame, 6, seed=0)
    assert taken.images.shape == (6, 32, 32, 3) and np.all(taken.labels == frame)
    asked = source_labels("shapes-fine", "frame", taken.pool_id, range(6))
    assert set(asked) <= {18, 19}                                               # frame-small, frame-large
    direct = sample(unet, spec.sampler, [image_seed(taken.pool_id, k) for k in range(6)], asked, "cpu", progress=False,
                    scheduler_config=generator_kind(spec).load(prepared.directory, spec, "cpu").schedule)
    assert np.abs(direct.astype(int) - taken.images.astype(int)).max() <= 1

    kind = generator_kind(spec)
    assert kind.problem(spec, SHAPE_CLASSES, ["frame", "plus"]) is None
    assert "label map shapes-fine has no shapes-fine classes for truck" in kind.problem(spec, CIFAR, ["truck"])
    assert kind.source(spec).startswith("a DDPM trained here on shapes-fine, never on the sweep's data")
    for bad, field in (({"ddpm": TINY_DDPM}, "train_data"), ({"train_on": "trial"}, "train_on"),
                       ({"label_map": ""}, "train_data")):
        with pytest.raises(ConfigError, match=f"generator.{field}:"):
            dataclasses.replace(spec, **bad).validate()
