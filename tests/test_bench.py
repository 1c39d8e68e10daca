"""The benchmark suite runs every part on a CPU (--size tiny), writes BENCHMARKS.md's table, and --dry-run
divides a sweep's work by the throughputs it wrote (not by a constant in the code)."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from synthaug.benchmarks import find_throughput, read_throughputs, write_throughput

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("classifier", "idle", "sampling", "ddpm", "warmup", "sharing", "plan")


def dry_run(benchmarks: Path, device: str, cwd: Path) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "replace_pct.py"), "--preset", "paper",
                          "--dry-run", "--gpus", "4", "--benchmarks", str(benchmarks), "--gpu-model", device],
                         cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def hours(text: str) -> dict[str, float]:
    found = re.search(r"generators \+ labellers ([0-9.]+) GPU-h, pools ([0-9.]+) GPU-h, trials ([0-9.]+) GPU-h", text)
    return dict(zip(("generators", "pools", "trials"), map(float, found.groups())))


def test_the_gpu_suite_runs_tiny_on_a_cpu_and_the_dry_run_reads_its_figures(tmp_path):
    out_file = tmp_path / "BENCHMARKS.md"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--size", "tiny", "--device", "cpu",
                          "--out", str(out_file)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "6/6 parts measured" in run.stdout
    text = out_file.read_text()
    table = [cells for cells in (line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| "))
             if cells[0].strip() in PARTS]
    assert {cells[0].strip() for cells in table} >= set(PARTS), text
    plans = [c for c in table if c[0].strip() == "plan"]
    assert len(plans) == 5, plans                                   # one a sweep script with a dry run
    for cells in table:     # every figure measured: a number; only the plan of E2a may fail (no DiT offline)
        if "imagenet_targeted" in cells[1]:
            assert "failed" not in cells[2] or "download it once" in cells[5], cells
        else:
            assert re.match(r" [0-9][0-9,.]* ", cells[2]) and float(cells[2].split()[0].replace(",", "")) > 0, cells

    [row] = read_throughputs(out_file)
    assert row.size == "tiny" and row.device.startswith("cpu") and "measured by bench/gpu_suite.py" in row.source
    assert min(row.classifier_images, row.ddpm_steps, row.unet_image_evals) > 0
    assert find_throughput(out_file, "CPU") == row

    # The estimate divides by the row: twice the throughput, half the GPU-hours; another device's row, untouched
    first = hours(dry_run(out_file, "cpu", tmp_path))
    twice = tmp_path / "twice.md"
    twice.write_text(text)
    write_throughput(twice, dataclasses.replace(row, classifier_images=2 * row.classifier_images,
                                                ddpm_steps=2 * row.ddpm_steps,
                                                unet_image_evals=2 * row.unet_image_evals))
    write_throughput(twice, dataclasses.replace(row, device="NVIDIA X", size="full", source="assumed"))
    assert len(read_throughputs(twice)) == 2
    printed = dry_run(twice, "cpu", tmp_path)
    assert "the throughputs of cpu" in printed and "--size tiny run's throughputs" in printed
    second = hours(printed)
    for part, value in first.items():
        assert abs(second[part] - value / 2) <= 0.011 + 0.01 * value, (part, first, second)
    assert hours(dry_run(twice, "nvidia x", tmp_path)) != second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BENCHMARKS.md", "twice.md"]   # dry runs wrote nothing

    # A measured row replaces the assumed row of a device its name contains, and is found before it
    write_throughput(twice, dataclasses.replace(row, device="NVIDIA H100", size="full", source="assumed, not measured"))
    assert find_throughput(twice, "h100").assumed
    measured = dataclasses.replace(row, device="NVIDIA H100 80GB HBM3", size="full", source="measured by ...")
    write_throughput(twice, measured)
    assert find_throughput(twice, "h100") == measured
    assert [r.device for r in read_throughputs(twice)] == [row.device, "NVIDIA X", "NVIDIA H100 80GB HBM3"]


def test_the_repository_benchmarks_file_names_its_rows_sources():
    rows = read_throughputs(ROOT / "BENCHMARKS.md")
    h100 = find_throughput(ROOT / "BENCHMARKS.md", "H100")
    assert h100 in rows and h100.size == "full"
    assert "assumed" in h100.source or "measured by bench/gpu_suite.py" in h100.source


def test_the_data_plane_and_the_benchmarks_import_no_ray_or_mlflow():
    """bench/gpu_suite.py runs where neither is installed (a lent GPU's image): what it imports must not need them."""
    code = ("import sys; import synthaug.server, synthaug.pools, synthaug.classifier, synthaug.diffusion.sampling, "
            "synthaug.diffusion.training, synthaug.generators, synthaug.labeller, synthaug.benchmarks; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
