"""python -m synthaug.pools list | export POOL... --to FILE | import FILE, each with --cache DIR.

    python -m synthaug.pools list                                  # a line a pool in ./.synthaug
    python -m synthaug.pools export 3f2a9c 81be07 --to pools.tar   # ids or unique prefixes of them
    python -m synthaug.pools import pools.tar --cache /mnt/shared/synthaug

What the file holds and what an import checks: synthaug.pools.transfer. Bad input, an unknown pool
or a file that does not match is one line and exit 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from synthaug.core.storage import DEFAULT_CACHE, folder_problem


class _OneLine(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def parser() -> argparse.ArgumentParser:
    top = _OneLine(prog="python -m synthaug.pools", description=__doc__.split("\n")[0])
    commands = top.add_subparsers(dest="command", required=True, parser_class=_OneLine)
    listing = commands.add_parser("list", help="the pools in the cache, a line each")
    export = commands.add_parser("export", help="pools, their manifests, generator and labeller into one file")
    export.add_argument("pools", nargs="+", metavar="POOL", help="a pool id (24 hex) or a unique prefix of one")
    export.add_argument("--to", required=True, type=Path, help="the file to write (.tar; .tar.gz or .tgz compressed)")
    imported = commands.add_parser("import", help="check a file whole, then add its pools to the cache")
    imported.add_argument("file", type=Path)
    for command in (listing, export, imported):
        command.add_argument("--cache", type=Path, default=Path(DEFAULT_CACHE),
                             help=f"the cache a sweep's --cache names (default ./{DEFAULT_CACHE})")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from synthaug.pools.transfer import Refused, export_pools, import_pools, list_pools

    try:
        if args.command == "list":
            lines = list_pools(args.cache)
            print("\n".join(lines) if lines else f"no pools in {args.cache / 'pools'}")
        elif args.command == "export":
            print(export_pools(args.cache, args.pools, args.to), flush=True)
        else:
            problem = folder_problem(args.cache)
            if problem:
                raise Refused(f"--cache {problem}")
            print("\n".join(import_pools(args.file, args.cache)), flush=True)
    except Refused as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
