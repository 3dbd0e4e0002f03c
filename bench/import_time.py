"""Lambda init cost: import ``handler.entry.lambda_handler`` in fresh processes, median of N.

Each run is a new interpreter with a Lambda-like environment (S3 store and assets bucket named),
timing the import itself; ``-X importtime`` is run once more to show where the time goes.

    python bench/import_time.py [-n 11] [--json] [--top 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo
from bench.common import BUDGET_MS, REPO, import_ms, lambda_env


def heaviest_imports(top: int) -> list[tuple[int, str]]:
    """``-X importtime`` cumulative microseconds of the slowest top-level imports."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import handler.entry.lambda_handler"],
        cwd=REPO,
        env=lambda_env(),
        check=True,
        capture_output=True,
    )
    rows = []
    for line in out.stderr.decode().splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=11)
    parser.add_argument("--top", type=int, default=15, help="heaviest imports to list")
    parser.add_argument("--json", action="store_true", help="one JSON line, no breakdown")
    args = parser.parse_args()
    times = import_ms(args.runs)
    result = {
        "runs": args.runs,
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "budget_ms": BUDGET_MS,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"import handler.entry.lambda_handler, {args.runs} fresh processes: {result}")
    print("heaviest imports (-X importtime, cumulative ms):")
    for micros, name in heaviest_imports(args.top):
        print(f"  {micros / 1000:8.1f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
