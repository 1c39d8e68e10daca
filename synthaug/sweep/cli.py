"""What the analysis scripts share on the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from synthaug.core.storage import DEFAULT_CACHE


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as one 'error: ...' line and exit code 2, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command that runs on Ray takes: where data, the cluster, runs and the cache are."""
    parser.add_argument("--data", default=None, help="shapes, cifar10, or a class-folder folder/.tar/.tar.gz "
                                                      "(default: the preset's)")
    parser.add_argument("--address", default=None, help="a Ray cluster (default: start a local Ray)")
    parser.add_argument("--mlflow-uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI, "
                                                           "else sqlite:///<cwd>/mlflow.db)")
    parser.add_argument("--cache", default=DEFAULT_CACHE,
                        help=f"data, generators and pools (default ./{DEFAULT_CACHE})")


def worker_environment() -> dict:
    """The runtime_env every command that runs on Ray starts it with: remote progress bars a line in 10 s,
    the documented settings (trial gate, forced device, deterministic algorithms) and the driver's code
    commit, on every node."""
    from synthaug.core.devices import DETERMINISTIC_ENV, DEVICE_ENV
    from synthaug.core.gates import TRIAL_GATE
    from synthaug.core.provenance import COMMIT_ENV, export_commit

    export_commit()
    documented = (TRIAL_GATE, DEVICE_ENV, DETERMINISTIC_ENV, COMMIT_ENV)
    return {"env_vars": {"TQDM_MININTERVAL": "10", **{k: os.environ[k] for k in documented if os.environ.get(k)}}}


WAIT_FOR_GPUS_S = "900"     # --wait-for-gpus


def add_gpu_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """--gpus and --wait-for-gpus: what a command that runs on a cluster asks its autoscaler for."""
    parser.add_argument("--gpus", default=None, help=f"GPUs the {what} waits for (default: the preset's; 0 runs on "
                                                      "CPUs, even on a cluster with GPUs)")
    parser.add_argument("--wait-for-gpus", default=WAIT_FOR_GPUS_S, help=f"seconds to wait for them to join, on a "
                        f"cluster (--address; default {WAIT_FOR_GPUS_S}): a local Ray gains no GPUs by waiting")


def start_ray(address: str | None, namespace: str | None = None) -> None:
    """Connect to the cluster at `address`, or start a Ray of this command's own ("local": even when another
    one, a `ray start` or a test's cluster, runs on this machine), with worker_environment()."""
    import ray

    if (address not in (None, "auto") and "RAY_AUTH_MODE" not in os.environ and _auth_token_found()
            and _asks_for_token(address)):
        # A head started with `ray start` asks for its token (Ray 2.6x). ray.init sends it for address
        # "auto" only; for an address given it needs token mode, which Ray reads once a process (as
        # ray.init's own switch for "auto" does: the environment, then its config read again). Only when
        # the cluster asks: a driver in token mode refuses a tokenless cluster's raylets (they cannot
        # reach the objects it owns), so a token file left in ~/.ray must not switch it on for every head.
        from ray._raylet import Config

        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")

    if address:
        ray.init(address=address, namespace=namespace, runtime_env=worker_environment())
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, namespace=namespace,
                 runtime_env=worker_environment())


def _asks_for_token(address: str) -> bool:
    """Whether the head at `address` refuses a call without a token (a ray:// address: assumed so)."""
    if "://" in address:
        return True
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=address).internal_kv_get(b"synthaug-auth-probe", None, timeout=10)
    except AuthenticationError:
        return True
    except Exception as err:  # noqa: BLE001 - not an answer about tokens: ray.init reports the real problem
        return "Unauthenticated" in str(err)
    return False


def _auth_token_found() -> bool:
    """A Ray authentication token where Ray looks for one: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(
        os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").is_file()


def sweep_parser(prog: str, description: str) -> OneLineParser:
    """The flags every script that analyses one sweep's runs takes."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--experiment", required=True, help="MLflow experiment (the sweep script's name)")
    parser.add_argument("--sweep", help="sweep name (tag synthaug.sweep); default: the newest in the experiment")
    parser.add_argument("--baseline", help="key=value[,key=value]; default: the configuration without synthetic data")
    parser.add_argument("--metric", default="test_acc", help="final metric to analyse (default test_acc)")
    parser.add_argument("--mlflow-uri", help="tracking URI; default $MLFLOW_TRACKING_URI, else ./mlflow.db")
    parser.add_argument("--no-log", action="store_true", help="do not log an analysis run to MLflow")
    return parser


def load_sweep(args: argparse.Namespace, with_predictions: bool = False, folders: Sequence[str] = ()):
    """(tracking uri, Trials, significance Result) for sweep_parser's flags, or None after printing
    the one-line error of bad input (the script then exits 2). `folders`: flags whose value, when it
    exists, must be a folder."""
    import functools

    from synthaug.analysis.configurations import parse_baseline
    from synthaug.analysis.results import InputError, load_predictions, load_trials
    from synthaug.analysis.significance import analyse
    from synthaug.core.tracking import resolve_tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")    # keeps stderr to errors
    uri = resolve_tracking_uri(args.mlflow_uri)
    try:
        for flag in folders:
            value = getattr(args, flag)
            if value and Path(value).exists() and not Path(value).is_dir():
                raise InputError(f"--{flag}: {value!r} is not a folder")
        baseline = parse_baseline(args.baseline) if args.baseline is not None else None
        trials = load_trials(uri, args.experiment, args.sweep, args.metric)
        predictions = functools.partial(load_predictions, uri) if with_predictions else None
        result = analyse(trials, baseline, predictions=predictions)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    return uri, trials, result
