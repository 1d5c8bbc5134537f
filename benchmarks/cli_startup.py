"""How long ``convstore --version`` and ``convstore --help`` take, as a user's shell
runs them: a fresh process each time, the console script of the virtualenv.

    python benchmarks/cli_startup.py [--runs 10]

Prints the range (min-max) and median of each, with the bare interpreter
(``python -c pass``) and ``import sqlalchemy`` beside them for scale. Not a test: the
figures move with the machine's load; docs/cli.md gives measured ranges.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _script() -> list[str]:
    """The ``convstore`` console script next to this interpreter, or ``-m sessions.cli``."""
    script = Path(sys.executable).with_name("convstore")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sessions.cli"]


def timed(argv: list[str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="processes per command")
    args = parser.parse_args()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import sqlalchemy'": [sys.executable, "-c", "import sqlalchemy"],
        "convstore --version": [*_script(), "--version"],
        "convstore --help": [*_script(), "--help"],
        "convstore history --help": [*_script(), "history", "--help"],
    }
    print(f"{args.runs} runs each; load average {os.getloadavg()[0]:.1f} at the start")
    for name, argv in cases.items():
        seconds = timed(argv, args.runs)
        print(
            f"{name:<32} {min(seconds):.3f}-{max(seconds):.3f} s"
            f"  (median {statistics.median(seconds):.3f} s)"
        )


if __name__ == "__main__":
    main()
