"""Generators as a job: resumable training, data-parallel Ray Train, MLflow runs, the bf16 path on CPU.

Real Ray, real Ray Train (gloo workers on the CPU), a real SQLite MLflow store; tiny networks.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from synthaug.diffusion.ddpm import DDPMConfig, weights_digest
from synthaug.diffusion.sampling import SamplerConfig, sample
from synthaug.diffusion.training import Checkpointing, DDPMTraining
from synthaug.models.classifier import TrainConfig, Trainer, predict
from synthaug.sweep.runner import Experiment, main

from processes import kill_ray_instance, short_ray_tmpdir, wait_for

ROOT = Path(__file__).resolve().parents[1]
TINY = DDPMConfig(block_out_channels=(16, 32), layers_per_block=1, attention=False, num_train_timesteps=100,
                  train_steps=20, batch_size=8, lr=2e-3, conditional=True, num_classes=2)


def images(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 2, n)


class Interrupted(Exception):
    pass


def test_a_resumed_training_trains_only_the_rest_and_ends_with_the_uninterrupted_weights(tmp_path, capsys):
    x, y = images()
    policy = Checkpointing(every_steps=5, log_every=1, grid_every=10**9)
    whole = DDPMTraining(TINY, x, y, seed=3, device="cpu").run(None, policy)

    checkpoint = tmp_path / "ddpm.checkpoint.pt"

    def crash_at_8(step, metrics):
        if step == 8:
            raise Interrupted
    with pytest.raises(Interrupted):
        DDPMTraining(TINY, x, y, seed=3, device="cpu").run(checkpoint, policy, on_log=crash_at_8)
    assert torch.load(checkpoint, weights_only=True)["step"] == 5

    steps = []
    resumed = DDPMTraining(TINY, x, y, seed=3, device="cpu").run(checkpoint, policy,
                                                                 on_log=lambda step, m: steps.append(step))
    assert "resuming at step 5 of 20" in capsys.readouterr().out
    assert steps == list(range(6, 21))              # 5 before the crash + 15 now = train_steps
    assert weights_digest(resumed) == weights_digest(whole)


def test_the_gpu_precision_path_runs_on_the_cpu():
    """bf16 autocast forced on the CPU: DDPM training, sampling and the classifier, as on a GPU."""
    x, y = images(32)
    training = DDPMTraining(TINY, x, y, seed=0, device="cpu", autocast=True)
    losses = [training.train_step().item() for _ in range(3)]
    assert all(np.isfinite(losses)) and training.model.dtype == torch.float32
    bf16 = sample(training.ema, SamplerConfig(steps=3), [1, 2, 3, 4], [0, 1, 0, 1], "cpu", progress=False,
                  num_train_timesteps=100, autocast=True)
    fp32 = sample(training.ema, SamplerConfig(steps=3), [1, 2, 3, 4], [0, 1, 0, 1], "cpu", progress=False,
                  num_train_timesteps=100, autocast=False)
    assert bf16.shape == (4, 32, 32, 3) and bf16.dtype == np.uint8
    assert not np.array_equal(bf16, fp32)          # the autocast really ran...
    assert np.abs(bf16.astype(int) - fp32.astype(int)).mean() < 8     # ...and gives the same pictures
    trainer = Trainer(TrainConfig(epochs=1, batch_size=16, width=4), x, y, 2, seed=0, device="cpu",
                      progress=False, autocast=True)
    metrics = trainer.train_epoch()
    assert np.isfinite(metrics["train_loss"])
    probs = predict(trainer.model, x, "cpu", autocast=True)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-3)


def job(tmp_path, shapes_tar, *extra, env=None):
    argv = [sys.executable, "sweeps/train_generators.py", "--preset", "tiny", "--data", str(shapes_tar),
            "--cache", str(tmp_path / "cache"), "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)


def generator_runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("generators")
    found = client.search_runs([experiment.experiment_id], "tags.`synthaug.role` = 'generator'")
    return client, {r.data.params["generator"]: r for r in found}


def test_the_job_trains_data_parallel_and_alone_then_a_sweep_trains_nothing(tmp_path, shapes_tar, capsys):
    # 2 gloo workers through Ray Train for the conditional DDPM
    first = job(tmp_path, shapes_tar, "--generators", "ddpm-cond", "--gpus-per-generator", "2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 data-parallel workers (gloo, CPUs), effective batch 16 (8 a worker), lr 0.002" in first.stdout
    # the whole preset, one process a generator: ddpm-cond is cached, ddpm-uncond trains
    second = job(tmp_path, shapes_tar)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    client, runs = generator_runs(tmp_path)
    assert sorted(runs) == ["ddpm-cond", "ddpm-uncond"]
    for name, run in runs.items():
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) >= 10
        assert client.list_artifacts(run.info.run_id, "samples")
        # FID and KID are named by their feature space; as many real as generated images leave KID one subset,
        # so no sd is logged
        assert {k for k in run.data.metrics if k.startswith(("fid", "kid"))} <= {
            "fid_labeller_features", "kid_labeller_features", "fid_inception", "kid_inception"}
        fid_name = next(k for k in run.data.metrics if k.startswith("fid_"))
        assert np.isfinite(run.data.metrics[fid_name]) and 0 <= run.data.metrics["labeller_test_acc"] <= 1
        # the FID names its feature space and is never passed off as comparable with published FIDs
        assert run.data.params["evaluation.features"] and run.data.params["evaluation.fid_comparable_with_published"] \
            == "False"
    fid_name = next(k for k in runs["ddpm-cond"].data.metrics if k.startswith("fid_"))
    assert f"  {fid_name.removeprefix('fid_')}  " in second.stdout       # the job's summary names the space
    assert runs["ddpm-cond"].data.params["workers"] == "2"
    assert runs["ddpm-cond"].data.params["batch_per_worker"] == "8"
    assert runs["ddpm-uncond"].data.params["workers"] == "1"
    assert "labeller_agreement" in runs["ddpm-cond"].data.metrics
    generators = sorted((tmp_path / "cache" / "generators").iterdir())
    before = {p: p.stat().st_mtime_ns for p in generators}

    # A sweep afterwards trains nothing and serves pools from the data-parallel generator.
    sweep = Experiment(name="tiny_after_job", grid={"replace_pct": [20]}, fixed={"generator": "ddpm-cond"})
    assert main(sweep, ["--preset", "tiny", "--seeds", "1", "--data", str(shapes_tar),
                        "--cache", str(tmp_path / "cache"), "--storage", str(tmp_path / "ray_results"),
                        "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0
    out = capsys.readouterr().out
    assert "pools ready" in out and "1/1 trials finished" in out
    assert {p: p.stat().st_mtime_ns for p in sorted((tmp_path / "cache" / "generators").iterdir())} == before
    _, after = generator_runs(tmp_path)
    assert {n: r.info.run_id for n, r in after.items()} == {n: r.info.run_id for n, r in runs.items()}
    trial = client.search_runs([client.get_experiment_by_name("tiny_after_job").experiment_id],
                               "tags.`synthaug.role` = 'sweep'")[0]
    assert trial.data.tags["synthaug.generator.ddpm-cond.run_id"] == runs["ddpm-cond"].info.run_id


LONG_TINY = '''
import dataclasses, sys
from synthaug.config import PRESETS
from synthaug.diffusion.training import Checkpointing
from synthaug.sweep.generator_job import main
tiny = PRESETS["tiny"]
spec = dataclasses.replace(tiny.generator("ddpm-cond"), ddpm=dataclasses.replace(tiny.generator("ddpm-cond").ddpm,
                                                                                  train_steps=150))
PRESETS["tiny_long"] = dataclasses.replace(tiny, name="tiny_long", generators=(spec,),
                                           checkpointing=Checkpointing(every_steps=10, log_every=1, grid_every=10**9))
sys.exit(main(sys.argv[1:]))
'''


def test_a_killed_job_resumes_at_its_checkpoint_and_trains_only_the_rest(tmp_path, shapes_tar):
    script = tmp_path / "long_job.py"
    script.write_text(LONG_TINY)
    ray_tmpdir = short_ray_tmpdir()
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmpdir), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(script), "--preset", "tiny_long", "--data", str(shapes_tar),
            "--cache", str(tmp_path / "cache"), "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    log = tmp_path / "first.log"
    checkpoints = tmp_path / "cache" / "generators"
    try:
        with log.open("w") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=env)
        # the first checkpoint (step 10) is written 140 steps before the training could end
        wait_for(lambda: any(checkpoints.glob("*.checkpoint.pt")), "a checkpoint", proc, log, interval_s=0.05)
        os.killpg(proc.pid, 9)
        proc.wait()
        kill_ray_instance(ray_tmpdir)
        checkpoint = next(checkpoints.glob("*.checkpoint.pt"))
        at = torch.load(checkpoint, weights_only=True)["step"]
        assert 10 <= at < 150 and at % 10 == 0
        restarted = int(time.time() * 1000)
        rerun = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    finally:
        kill_ray_instance(ray_tmpdir)
        shutil.rmtree(ray_tmpdir, ignore_errors=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"resuming at step {at} of 150" in rerun.stdout + rerun.stderr
    assert not checkpoint.exists()
    client, runs = generator_runs(tmp_path)
    assert list(runs) == ["ddpm-cond"] and runs["ddpm-cond"].info.status == "FINISHED"   # one run, resumed
    history = client.get_metric_history(runs["ddpm-cond"].info.run_id, "loss")
    rerun_steps = sorted(m.step for m in history if m.timestamp >= restarted)
    assert rerun_steps == list(range(at + 1, 151))     # at steps before the kill + these = train_steps


def unet_folder(path: Path, **overrides) -> Path:
    from diffusers import UNet2DModel

    settings = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                    norm_num_groups=4, add_attention=False)
    UNet2DModel(**{**settings, **overrides}).save_pretrained(path)
    return path


@pytest.mark.parametrize("overrides, generator, problem", [
    ({"sample_size": 16}, "ddpm-uncond", "makes 16-pixel images with 3 channels in and 3 out"),
    ({"num_class_embeds": 3}, "ddpm-uncond", "is conditional on 3 classes; this generator is unconditional"),
    ({}, "ddpm-cond", "is unconditional; this generator is class-conditional on the data's 3 classes"),
])
def test_a_checkpoint_folder_of_the_wrong_shape_or_role_is_one_line_and_exit_2(tmp_path, shapes_tar, overrides,
                                                                               generator, problem):
    folder = unet_folder(tmp_path / "unet", **overrides)
    proc = subprocess.run([sys.executable, "sweeps/replace_pct.py", "--preset", "tiny", "--data", str(shapes_tar),
                           "--checkpoint", f"{generator}={folder}", "--storage", str(tmp_path / "r"),
                           "--cache", str(tmp_path / "c"), "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--checkpoint {generator}: " in lines[0] and problem in lines[0], proc.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "m.db").exists()


def test_a_checkpoint_folder_of_the_right_role_replaces_training(tmp_path, shapes_tar):
    from synthaug.sweep.sweep_plan import parse_args, plan_sweep

    folder = unet_folder(tmp_path / "unet", num_class_embeds=3)
    experiment = Experiment(name="tiny_checkpoint", grid={"augment_count": [0, 2]},
                            fixed={"generator": "ddpm-cond", "augment_classes": ["circle"]})
    args = parse_args(experiment, ["--preset", "tiny", "--data", str(shapes_tar), "--cache", str(tmp_path / "c"),
                                   "--checkpoint", f"ddpm-cond={folder}"])
    plan, _ = plan_sweep(experiment, args)
    assert plan.preset.generator("ddpm-cond").checkpoint == str(folder)
    assert plan.preset.generator("ddpm-uncond").checkpoint == ""
    bad = parse_args(experiment, ["--preset", "tiny", "--data", str(shapes_tar), "--cache", str(tmp_path / "c"),
                                  "--checkpoint", f"nope={folder}"])
    with pytest.raises(ValueError, match="--checkpoint: NAME=FOLDER with NAME one of ddpm-uncond, ddpm-cond"):
        plan_sweep(experiment, bad)
