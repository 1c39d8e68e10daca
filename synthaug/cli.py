"""What the analysis scripts share on the command line."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as one 'error: ...' line and exit code 2, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


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
