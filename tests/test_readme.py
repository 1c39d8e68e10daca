"""Every command README.md shows is exercised by the suite: run here in a form that needs no GPU, network or
hours (--dry-run, --help, or the one line it stops with on a machine without a GPU), or mapped to the test that
runs it. A command the README gains that is neither fails here, naming it.

Commands are the lines of README's indented code blocks whose first word is a program (continued lines joined,
comments and a trailing `&` dropped) and its inline code spans that start with one; the Architecture and
Layout blocks hold no command.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ("python", "pytest", "pip", "mlflow", "ray", "ssh", "export", "bash", "OUT=")

# How each command is exercised. DRY_RUN and HELP: run here with that flag added (a sweep's --dry-run prints its
# plan, starting and writing nothing); REFUSED: run here as written, with the GPUs hidden, and it must stop in one
# line (exit 2) before decoding data or starting Ray; "tests/...::test_...": that test runs it; NOT_OFFLINE: it
# needs AWS or the network, and the reason says what covers its parts.
DRY_RUN, HELP, REFUSED = "--dry-run", "--help", "refused without a GPU"
TEST_JOB = "tests/test_job_submit.py::test_the_readme_install_and_a_job_submitted_to_a_token_authenticated_head"
TEST_CLUSTER_YAML = "tests/test_cluster.py::test_cluster_yaml_passes_rays_own_validation_and_is_safe_as_shipped"
COMMANDS: dict[str, str] = {
    'pip install -e ".[dev]" -c constraints.txt': TEST_JOB,
    'pip install -e ".[cluster]" -c constraints.txt': TEST_JOB,
    "pytest": "tests/test_readme.py::test_every_readme_command_is_run_here_or_mapped_to_its_test",   # the suite
    "pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu126":
        "NOT_OFFLINE: the network (PyTorch's CUDA 12.6 index); constraints.txt pins the same versions",
    "python sweeps/study.py --preset smoke --data shapes": DRY_RUN,
    "python analysis/significance.py --experiment long_tail --sweep NAME":
        "tests/test_study.py::test_tiny_study_runs_to_finished_then_a_rerun_retrains_nothing",
    "python sweeps/replace_pct.py --preset smoke --seeds 2": DRY_RUN,
    "python sweeps/replace_pct.py --preset smoke --seeds 2 --data cifar10": DRY_RUN,
    "python sweeps/replace_pct.py --preset paper --data cifar10": DRY_RUN,
    "python sweeps/replace_pct.py --preset paper --seeds 6 --dry-run --gpus 32": DRY_RUN,
    "python sweeps/replace_pct.py --preset paper --gpus 32 --dry-run": DRY_RUN,
    "python sweeps/replace_pct.py --preset paper --grid recipe=study,strong": DRY_RUN,
    "python sweeps/replace_pct.py --preset paper --data cifar10 --checkpoint ddpm-uncond=cifar10_uncond_50M_500K.pt":
        "tests/test_released.py::test_a_released_cifar10_file_serves_ddpm_uncond_and_samples_32x32",
    "python sweeps/imagenet_targeted.py --preset paper --data cifar10 --checkpoint imagenet=imagenet64_cond_270M_250K.pt":
        "tests/test_released.py::test_the_paper_dry_run_says_which_generator_serves_e2a",
    "python sweeps/train_generators.py --preset tiny":
        "tests/test_generator_training.py::test_the_job_trains_data_parallel_and_alone_then_a_sweep_trains_nothing",
    "python sweeps/train_generators.py --preset paper --data cifar10": REFUSED,
    "python sweeps/train_generators.py --preset paper --generators ddpm-cond --gpus-per-generator 4 --address auto":
        "tests/test_generator_training.py::test_the_job_trains_data_parallel_and_alone_then_a_sweep_trains_nothing",
    "python -m synthaug.pools list":
        "tests/test_pool_transfer.py::test_python_m_synthaug_pools_lists_the_pools_of_a_cache",
    "python -m synthaug.pools export 3f2a9c41 81be07d2 --to pools.tar.gz":
        "tests/test_pool_transfer.py::test_an_exported_pool_imports_byte_for_byte_with_its_generator_and_labeller",
    "python -m synthaug.pools import pools.tar.gz --cache /mnt/shared/synthaug":
        "tests/test_sweep.py::test_tiny_sweep_logs_every_trial_resumes_and_reuses_pools",
    "mlflow ui --host 127.0.0.1 --backend-store-uri sqlite:///$PWD/mlflow.db": HELP,
    "mlflow server": HELP,
    "python analysis/significance.py --experiment replace_pct":
        "tests/test_significance.py::test_cli_writes_the_report_and_logs_an_analysis_run",
    "python analysis/figures.py --experiment replace_pct":
        "tests/test_figures.py::test_cli_draws_every_figure_and_logs_an_analysis_run",
    "python analysis/fidelity.py --preset smoke": "tests/test_fidelity.py::test_tiny_cli_run_writes_the_report",
    "python analysis/sample_count.py --experiment sample_count": HELP,
    "python analysis/study_report.py --sweep long_tail --sweep replace_pct":
        "tests/test_study_report.py::test_the_report_of_two_tiny_sweeps_has_every_claim_and_its_page_shows_every_row_and_figure",
    "python bench/gpu_suite.py": "tests/test_bench.py::test_on_device_runs_every_stage_tiny_on_a_cpu_and_the_dry_run_reads_its_figures",
    "OUT=/tmp/b bash bench/on_device.sh":
        "tests/test_bench.py::test_on_device_runs_every_stage_tiny_on_a_cpu_and_the_dry_run_reads_its_figures",
    "OUT=/tmp/b bash bench/on_device.sh --size tiny --device cpu":
        "tests/test_bench.py::test_on_device_runs_every_stage_tiny_on_a_cpu_and_the_dry_run_reads_its_figures",
    "python bench/trainer.py": HELP,
    "python bench/sampling.py": HELP,
    "python bench/sweep_overhead.py": HELP,
    "ray get-auth-token --generate": TEST_JOB,
    "ray start": "tests/test_waits.py::test_address_auto_joins_only_a_ray_started_with_ray_start",
    "ray job submit": TEST_JOB,
    "export RAY_AUTH_MODE=token": TEST_JOB,
    "ray up cluster.yaml": TEST_CLUSTER_YAML,
    "ray up cluster.yaml --no-restart": TEST_CLUSTER_YAML,
    "ray up": TEST_CLUSTER_YAML,
    "ray dashboard cluster.yaml": HELP,
    "ray exec cluster.yaml 'hostname -I'": HELP,
    "ray attach cluster.yaml": HELP,
    "ray down cluster.yaml": HELP,
    "ray down": HELP,
    "ray rsync-down cluster.yaml /home/ubuntu/mlflow ./cluster-mlflow": HELP,
    "ray rsync-down cluster.yaml /mnt/shared/ray_results ./cluster-results": HELP,
    "ray job logs --follow <id>": HELP,
    "ssh -i <the key ray up made, in ~/.ssh> -L 5000:HEAD:5000 ubuntu@$(ray get-head-ip cluster.yaml) -N":
        "NOT_OFFLINE: an SSH tunnel to the AWS head; its `ray get-head-ip` is run here with --help",
    "ray job submit --address http://127.0.0.1:8265 --working-dir . -- python sweeps/train_generators.py --preset paper "
    "--address auto --mlflow-uri http://HEAD:5000 --cache /mnt/shared/synthaug --gpus-per-generator 8": TEST_JOB,
    "ray job submit --address http://127.0.0.1:8265 --working-dir . -- python sweeps/replace_pct.py --preset paper "
    "--gpus 8 --address auto --mlflow-uri http://HEAD:5000 --cache /mnt/shared/synthaug --storage "
    "/mnt/shared/ray_results": TEST_JOB,
}


def readme_commands(text: str) -> list[str]:
    """The commands of README.md's text, in order, each once."""
    found, block, pending = [], False, ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        code = re.match(r"^ {4,}(\S.*)$", line)
        if code and (block or i == 0 or not lines[i - 1].strip()):
            block = True
            command = f"{pending} {code.group(1).strip()}" if pending else code.group(1)
            pending = ""
            if command.rstrip().endswith("\\"):
                pending = command.rstrip()[:-1].rstrip()
                continue
            found.append(command)
        elif line.strip():
            block = False
    found += [m.group(1) for m in re.finditer(r"`((?:python|pytest|pip|mlflow|ray) [^`]+|pytest)`", text)]
    commands = []
    for command in found:
        command = " ".join(re.sub(r"\s#\s.*$", "", command).split()).removesuffix(" &").strip()
        if command.startswith(PROGRAMS) and command not in commands:
            commands.append(command)
    return commands


def test_every_readme_command_is_run_here_or_mapped_to_its_test():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 30, commands                  # the parser found the code blocks
    unmapped = [c for c in commands if c not in COMMANDS]
    assert not unmapped, f"README commands neither run by tests/test_readme.py nor mapped to a test: {unmapped}"
    for command, how in COMMANDS.items():
        if how.startswith("tests/"):
            path, name = how.split("::")
            assert f"def {name}(" in (ROOT / path).read_text(), f"{command}: {how} is not a test"
    stale = [c for c in COMMANDS if c not in commands]
    assert not stale, f"commands mapped here that README no longer shows: {stale}"


def _argv(command: str, flag: str) -> list[str]:
    argv = command.split()[2:]                            # after "python <script>"
    return argv if flag in argv or flag == REFUSED else [*argv, flag]


def test_the_readme_sweep_commands_dry_run(tmp_path, monkeypatch, capsys):
    """Each sweep command of README as written, with --dry-run: its plan, nothing started or written."""
    monkeypatch.chdir(tmp_path)
    for command in [c for c, how in COMMANDS.items() if how == DRY_RUN]:
        script = ROOT / command.split()[1]
        monkeypatch.setattr(sys, "argv", [str(script), *_argv(command, DRY_RUN)])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(script), run_name="__main__")
        out = capsys.readouterr().out
        assert stop.value.code == 0 and "(dry run: nothing started, nothing written)" in out, (command, out[-2000:])
        assert "trials = " in out and "estimate" in out, command
    assert os.listdir(tmp_path) == []


# runs each (script, argv) of its JSON argument as `python script argv` would, in one process (torch imported
# once), and prints a JSON list of [exit code, stdout, stderr]
SCRIPTS = """
import contextlib, io, json, runpy, sys
found = []
for script, argv in json.loads(sys.argv[1]):
    sys.argv, out, err, code = [script, *argv], io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 2
    found.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(found))
"""


def test_the_readme_commands_that_need_a_gpu_or_a_network_answer_help_or_refuse_in_one_line(tmp_path):
    """--help for the commands that need a cluster, AWS or hours (each flag the README passes is one it lists);
    the paper generator job on a machine with no GPU stops in one line, exit 2, before any data or Ray."""
    import json

    from click.testing import CliRunner
    from mlflow.cli import cli as mlflow_cli
    from ray.scripts.scripts import cli as ray_cli

    scripts, expected = [], []
    for command, how in COMMANDS.items():
        words = [w for w in command.split() if not w.startswith(("<", "'", "/", "./", "cluster.yaml", "sqlite:"))]
        flags = [w for w in words if w.startswith("--")]
        if how == HELP and words[0] in ("mlflow", "ray"):
            sub = [w for w in words[1:] if not w.startswith("-") and w != "127.0.0.1"]
            result = CliRunner().invoke(mlflow_cli if words[0] == "mlflow" else ray_cli, [*sub, "--help"])
            assert result.exit_code == 0 and "usage" in result.output.lower(), (command, result.output)
            assert all(f in result.output for f in flags), (command, [f for f in flags if f not in result.output])
        elif how in (HELP, REFUSED):
            scripts.append([str(ROOT / words[1]), _argv(command, how)])
            expected.append((command, how, flags))
    assert CliRunner().invoke(ray_cli, ["get-head-ip", "--help"]).exit_code == 0   # inside the README's ssh line

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}"}
    proc = subprocess.run([sys.executable, "-c", SCRIPTS, json.dumps(scripts)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (command, how, flags), (code, out, err) in zip(expected, json.loads(proc.stdout.strip().splitlines()[-1])):
        if how == HELP:
            assert code == 0 and "usage" in out.lower(), (command, out, err[-2000:])
            assert all(f in out for f in flags), (command, [f for f in flags if f not in out])
        else:       # the paper preset's GPU, on a machine without one: one line, exit 2, nothing decoded or written
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1, (command, err[-2000:])
            assert "asks for 1 GPU(s) and this machine has 0" in lines[0] and "--gpus 0" in lines[0], lines
    assert os.listdir(tmp_path) == []
