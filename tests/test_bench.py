"""bench/on_device.sh runs every stage at tiny size on a CPU, writes BENCHMARKS.md after each, keeps what a stage
killed by its limit did not reach; --dry-run divides a sweep's work by the row it wrote (not by a constant in
the code), each trial on its recipe's stem."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

from synthaug.training.benchmarks import find_throughput, read_throughputs, write_throughput

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("cuda", "trials", "ddpm", "evals", "idle", "classifier", "sampling", "warmup", "sharing")


def dry_run(benchmarks: Path, device: str, cwd: Path) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "replace_pct.py"), "--preset", "paper",
                          "--dry-run", "--gpus", "4", "--benchmarks", str(benchmarks), "--gpu-model", device],
                         cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def hours(text: str) -> dict[str, float]:
    found = re.search(r"generators \+ labellers ([0-9.]+) GPU-h, pools ([0-9.]+) GPU-h, trials ([0-9.]+) GPU-h", text)
    return dict(zip(("generators", "pools", "trials"), map(float, found.groups())))


def parts_in(text: str) -> set[str]:
    return {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")} & set(STAGES + ("labeller",))


def test_on_device_runs_every_stage_tiny_on_a_cpu_and_the_dry_run_reads_its_figures(tmp_path):
    out = tmp_path / "out"
    out.mkdir()         # the repository's file without its CPU rows: the row this run writes is the one "cpu" finds
    (out / "BENCHMARKS.md").write_text("".join(line for line in (ROOT / "BENCHMARKS.md").read_text().splitlines(True)
                                               if not line.startswith("| cpu (")))
    # one stage killed by its limit; the others given room on a loaded 2-core machine
    env = {**os.environ, "OUT": str(out), "LIMIT_LABELLER": "2", "LIMIT_REST": "300", "LIMIT_DDPM": "300"}
    run = subprocess.run(["bash", str(ROOT / "bench" / "on_device.sh"), "--size", "tiny", "--device", "cpu"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "== stage labeller stopped at its limit of 2 s" in run.stdout
    assert "gpuGetDeviceCount" not in run.stdout + run.stderr        # the profiler on a machine without a driver
    text = (out / "BENCHMARKS.md").read_text()
    section = text.split("<!-- run cpu", 1)[1].split("<!-- /run cpu", 1)[0]    # this run's: the newest is first
    assert parts_in(section) == set(STAGES), section    # every stage but the killed one, the later ones too
    assert "failed" not in section and "cut short" not in section, section
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip() in STAGES]
    for cells in rows:                                  # every figure measured: a number
        assert re.match(r" [0-9][0-9,.]* ", cells[2]), cells
    # written after each stage: the log shows the row's figures missing until the evals stage brought the last
    assert "no figure yet for ddpm_small_steps, ddpm_steps, unet_image_evals" in run.stdout
    assert run.stdout.index("throughput row for cpu") > run.stdout.index("== stage evals")

    [row] = [r for r in read_throughputs(out / "BENCHMARKS.md") if r.device.startswith("cpu")]
    assert row.size == "tiny" and "measured by bench/gpu_suite.py" in row.source
    assert min(row.cifar_images, row.imagenet_images, row.eval_images, row.ddpm_steps, row.unet_image_evals) > 0
    assert find_throughput(out / "BENCHMARKS.md", "CPU") == row

    # The estimate divides by the row: the paper trials' stem (imagenet) twice as fast changes the trial hours
    # alone, about halving them; the labeller's stem (cifar) is another figure
    first = dry_run(out / "BENCHMARKS.md", "cpu", tmp_path)
    assert "imagenet stem" in first and "checkpoints: 42.7 MiB a trial" in first
    twice = tmp_path / "twice.md"
    twice.write_text(text)
    write_throughput(twice, dataclasses.replace(row, imagenet_images=2 * row.imagenet_images))
    second = hours(dry_run(twice, "cpu", tmp_path))
    assert second["generators"] == hours(first)["generators"] and second["pools"] == hours(first)["pools"]
    assert 0.4 < second["trials"] / hours(first)["trials"] < 0.6, (hours(first), second)
    write_throughput(twice, dataclasses.replace(row, device="NVIDIA X", size="full", source="assumed"))
    assert len([r for r in read_throughputs(twice) if r.device in (row.device, "NVIDIA X")]) == 2
    assert hours(dry_run(twice, "nvidia x", tmp_path)) != second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "twice.md"]   # dry runs wrote nothing

    # A measured row replaces the assumed row of a device its name contains, and is found before it
    write_throughput(twice, dataclasses.replace(row, device="NVIDIA H100", size="full", source="assumed, not measured"))
    assert find_throughput(twice, "h100").assumed
    measured = dataclasses.replace(row, device="NVIDIA H100 80GB HBM3", size="full", source="measured by ...")
    write_throughput(twice, measured)
    assert find_throughput(twice, "h100") == measured
    assert "NVIDIA H100" not in [r.device for r in read_throughputs(twice)]


def test_the_repository_benchmarks_file_names_its_rows_sources():
    rows = read_throughputs(ROOT / "BENCHMARKS.md")
    h100 = find_throughput(ROOT / "BENCHMARKS.md", "H100")
    assert h100 in rows and h100.size == "full"
    assert "assumed" in h100.source or "measured by bench/" in h100.source
    h200 = find_throughput(ROOT / "BENCHMARKS.md", "H200")      # the first GPU run's row, found by its model
    assert not h200.assumed and h200.trials_per_gpu >= 1 and h200.imagenet_images > 0


def test_the_data_plane_and_the_benchmarks_import_no_ray_or_mlflow():
    """bench/gpu_suite.py runs where neither is installed (a lent GPU's image): what it imports must not need them."""
    code = ("import sys; import synthaug.generation.server, synthaug.pools.store, synthaug.models.classifier, synthaug.diffusion.sampling, "
            "synthaug.diffusion.training, synthaug.generation.generators, synthaug.models.labeller, synthaug.training.benchmarks; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
