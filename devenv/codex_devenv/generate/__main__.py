"""python -m codex_devenv.generate [--check]: write (or check) every generated file."""

from __future__ import annotations

import argparse
import sys

from ..assets import REPO_ROOT
from . import stale, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codex_devenv.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is missing or stale")
    args = parser.parse_args(argv)
    if args.check:
        old = stale()
        for path in old:
            print(f"stale: {path.relative_to(REPO_ROOT)}", file=sys.stderr)
        if old:
            print("run `make generate`", file=sys.stderr)
        return 1 if old else 0
    for path in write():
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
