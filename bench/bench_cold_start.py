"""Cold start: the wall time of ``python -c 'import function_app'`` and of
``python -m scanner_core --help``, each in a fresh interpreter, against the
interpreter alone (``python -c pass``). Medians of N runs, interleaved.

Run from the repo root: ``.venv/bin/python bench/bench_cold_start.py [--runs N] [--json PATH]``.
What is imported (not how long it takes) is asserted by tests/test_cold_start.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "interpreter (python -c pass)": [sys.executable, "-c", "pass"],
    "import azure.functions": [sys.executable, "-c", "import azure.functions"],  # the floor (issue 18)
    "import function_app": [sys.executable, "-c", "import function_app"],
    "python -m scanner_core --help": [sys.executable, "-m", "scanner_core", "--help"],
}


def measure(runs: int) -> dict[str, float]:
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, check=True)
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    subprocess.run(COMMANDS["import function_app"], cwd=REPO_ROOT, check=True)  # warm the page cache
    medians = measure(args.runs)
    for name, value in medians.items():
        print(f"{name:<32} {value * 1000:7.1f} ms (median of {args.runs})")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "median_seconds": medians}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
