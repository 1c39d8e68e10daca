"""What the analysis scripts share on the command line."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as one 'error: ...' line and exit code 2, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")
