"""Run every bench/bench_*.py in its own process (``make bench``); ``--only codec,serving``."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated names, e.g. codec,serving")
    args = parser.parse_args()
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    if args.only:
        wanted = {f"bench_{n.removeprefix('bench_')}" for n in args.only.split(",")}
        names = [n for n in names if n in wanted]
    failed = []
    for name in names:
        print(f"=== {name}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        print(f"=== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in "
              f"{time.monotonic() - t0:.0f}s", flush=True)
        if rc:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
