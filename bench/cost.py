"""What a million requests cost at the image function: ours (S3 variant cache) against OpenNext's
(no variant cache), from the durations ``bench/opennext.py`` measured.

Two kinds of request reach the function (CloudFront answers the rest, at the same price for both):
  miss         an image never made: ours transforms and writes it to S3 (a MISS); OpenNext
               transforms;
  warm repeat  the same image again after CloudFront's TTL or an eviction: ours reads it from S3
               (a HIT); OpenNext transforms it again.

Each is priced at the construct's default memory and architecture (read from
``infra/next_image_cdk/construct.py``) and at OpenNext's default image function (1536 MB, arm64:
SST's ``Nextjs`` component and OpenNext's build, which installs sharp for arm64), on both
architectures: Lambda duration (each request rounded up to 1 ms) x memory, the request charge,
and S3 requests (ours: the GETs and PUTs ``bench/lambda_cold_warm.py``'s recorder counted per
miss and per hit; OpenNext: one GET of the source).

Durations: ``--basis wall`` (default) takes the wall times measured on this machine as they are,
at every memory size: the assumption is that a Lambda function at that memory runs as fast as
this machine did, which it does not exactly (Lambda's CPU share grows with memory, one vCPU at
1,769 MB; Graviton is not this CPU). ``--basis cpu`` takes each request's CPU time instead and
spreads it over Lambda's vCPU share, at most one (``cpu / min(1, memory / 1769)``): steadier on a
busy machine, and it charges a smaller memory setting for its slower CPU.

    .venv/bin/python bench/cost.py --results results.json [--basis cpu]
    .venv/bin/python bench/cost.py --ours-ms 250 --ours-hit-ms 15 --opennext-ms 170 \\
        --ours-miss-s3 2.14 1.29 --ours-hit-s3 1.14 0
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONSTRUCT = REPO / "infra" / "next_image_cdk" / "construct.py"

# AWS list prices, us-east-1, first usage tier, as published on the AWS Lambda and Amazon S3
# pricing pages (2025; unchanged since arm64 Lambda launched in September 2021).
PRICES_AS_OF = "2025"
LAMBDA_GB_SECOND = {"arm64": 0.0000133334, "x86_64": 0.0000166667}
LAMBDA_REQUEST = 0.20 / 1e6
S3_PUT = 0.005 / 1000  # PUT, COPY, POST, LIST
S3_GET = 0.0004 / 1000  # GET, HEAD and the rest
S3_GB_MONTH = 0.023  # S3 Standard storage, first 50 TB
MB_PER_VCPU = 1769  # Lambda: one vCPU's worth of CPU at 1,769 MB
OPENNEXT_MEMORY_MB, OPENNEXT_ARCH = 1536, "arm64"
MILLION = 1_000_000
PRODUCTS = ("ours", "OpenNext")
PUT_OPERATIONS = ("PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "List")


@dataclass(frozen=True)
class Workload:
    """One kind of request: its measured durations and the S3 requests it makes."""

    ms: list[float]  # wall time per request
    cpu_ms: list[float]  # CPU time per request (empty when only a mean wall time was given)
    s3_gets: float
    s3_puts: float

    def billed_ms(self, memory_mb: int, basis: str) -> float:
        """Mean billed duration per request: each one rounded up to a whole millisecond."""
        if basis == "cpu":
            share = min(1.0, memory_mb / MB_PER_VCPU)
            return statistics.fmean(math.ceil(ms / share) for ms in self.cpu_ms)
        return statistics.fmean(math.ceil(ms) for ms in self.ms)

    def s3_per_million(self) -> float:
        return (self.s3_gets * S3_GET + self.s3_puts * S3_PUT) * MILLION

    def per_million(self, memory_mb: int, arch: str, basis: str) -> float:
        seconds = self.billed_ms(memory_mb, basis) / 1000
        duration = seconds * memory_mb / 1024 * LAMBDA_GB_SECOND[arch]
        return (duration + LAMBDA_REQUEST) * MILLION + self.s3_per_million()


def construct_defaults() -> tuple[int, str]:
    """``memory_mib`` and ``architecture`` of ``NextImageOptimizerProps``, read from its source
    (importing the CDK app takes seconds)."""
    tree = ast.parse(CONSTRUCT.read_text())
    props = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == "NextImageOptimizerProps"
    )
    defaults = {
        node.target.id: ast.literal_eval(node.value)
        for node in props.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id in ("memory_mib", "architecture")
        and node.value
    }
    return int(defaults["memory_mib"]), str(defaults["architecture"])


def s3_requests(calls: dict[str, float]) -> tuple[float, float]:
    """GET-priced and PUT-priced S3 requests per request, from the recorder's ``Operation
    record`` counts."""
    puts = sum(n for name, n in calls.items() if name.startswith(PUT_OPERATIONS))
    return sum(calls.values()) - puts, puts


def from_results(path: Path, accept: str) -> dict[str, Workload]:
    """Every round's per-request figures for one Accept, pooled."""
    runs = [run for run in json.loads(path.read_text())["runs"] if run["accept"] == accept]
    if not runs:
        raise SystemExit(f"{path}: no runs with Accept {accept}")

    def pooled(product: str, kind: str, gets: float, puts: float) -> Workload:
        passes = [run[product][kind] for run in runs]
        ms = [ms for figures in passes for ms in figures["ms"]]
        cpu = [ms for figures in passes for ms in figures["cpu_ms"]]
        return Workload(ms, cpu, gets, puts)

    def ours_s3(kind: str) -> tuple[float, float]:
        counts = [s3_requests(run["ours"]["s3"][kind]["s3_calls"]) for run in runs]
        return statistics.fmean(g for g, _ in counts), statistics.fmean(p for _, p in counts)

    return {
        "ours miss": pooled("ours", "cold", *ours_s3("cold")),
        "ours warm repeat": pooled("ours", "warm", *ours_s3("warm")),
        "OpenNext miss": pooled("opennext", "cold", 1, 0),
        "OpenNext warm repeat": pooled("opennext", "warm", 1, 0),
    }


def from_flags(args: argparse.Namespace, workloads: dict[str, Workload]) -> dict[str, Workload]:
    """Mean wall times given on the command line replace the measured ones."""
    given = {
        "ours miss": (args.ours_ms, args.ours_miss_s3),
        "ours warm repeat": (args.ours_hit_ms, args.ours_hit_s3),
        "OpenNext miss": (args.opennext_ms, [1, 0]),
        "OpenNext warm repeat": (args.opennext_ms, [1, 0]),
    }
    result = dict(workloads)
    for name, (ms, s3) in given.items():
        if ms is None:
            continue
        if s3 is None and name not in workloads:
            raise SystemExit(f"{name}: give its S3 requests (--ours-miss-s3/--ours-hit-s3)")
        gets, puts = s3 if s3 is not None else (workloads[name].s3_gets, workloads[name].s3_puts)
        result[name] = Workload([ms], [], gets, puts)
    return result


def table(workloads: dict[str, Workload], basis: str) -> list[dict[str, Any]]:
    """$ per million misses and warm repeats for each product, memory and architecture."""
    memory, arch = construct_defaults()
    settings = [(memory, a) for a in (arch, "x86_64" if arch == "arm64" else "arm64")]
    settings += [(OPENNEXT_MEMORY_MB, a) for a in (OPENNEXT_ARCH, "x86_64")]
    rows = []
    for product in PRODUCTS:
        for setting in dict.fromkeys(settings):
            memory_mb, architecture = setting
            miss, warm = workloads[f"{product} miss"], workloads[f"{product} warm repeat"]
            if basis == "cpu" and not (miss.cpu_ms and warm.cpu_ms):
                raise SystemExit("--basis cpu needs --results (CPU times per request)")
            rows.append(
                {
                    "product": product,
                    "memory_mb": memory_mb,
                    "arch": architecture,
                    "default": (memory_mb, architecture)
                    == ((memory, arch) if product == "ours" else (OPENNEXT_MEMORY_MB, "arm64")),
                    "miss_ms": round(miss.billed_ms(memory_mb, basis), 1),
                    "warm_ms": round(warm.billed_ms(memory_mb, basis), 1),
                    "per_million_misses": round(miss.per_million(*setting, basis), 2),
                    "per_million_warm": round(warm.per_million(*setting, basis), 2),
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]], workloads: dict[str, Workload], basis: str) -> None:
    print(f"AWS us-east-1 list prices ({PRICES_AS_OF}); durations: {basis}")
    print(
        "| function | memory | arch | billed ms: miss / warm | $ per 1M misses | "
        "$ per 1M warm repeats |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        mark = " (default)" if row["default"] else ""
        print(
            f"| {row['product']}{mark} | {row['memory_mb']} MB | {row['arch']} | "
            f"{row['miss_ms']:.0f} / {row['warm_ms']:.0f} | "
            f"{row['per_million_misses']:,.2f} | {row['per_million_warm']:,.2f} |"
        )
    for name, load in workloads.items():
        print(
            f"S3 requests per {name}: {load.s3_gets:.2f} GET, {load.s3_puts:.2f} PUT "
            f"(${load.s3_per_million():.2f} per million)"
        )
    ours, theirs = (next(r for r in rows if r["product"] == p and r["default"]) for p in PRODUCTS)
    extra = ours["per_million_misses"] - theirs["per_million_misses"]
    saved = theirs["per_million_warm"] - ours["per_million_warm"]
    if extra > 0 < saved:
        print(
            f"at the defaults, ours costs the same per image once it is requested "
            f"{extra / saved:.1f} more times after its miss, and less from then on"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="bench/opennext.py --json-out file")
    parser.add_argument("--accept", choices=("webp", "avif"), default="avif")
    parser.add_argument("--basis", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--ours-ms", type=float, help="ours, mean ms per miss")
    parser.add_argument("--ours-hit-ms", type=float, help="ours, mean ms per warm repeat (HIT)")
    parser.add_argument("--opennext-ms", type=float, help="OpenNext, mean ms per request")
    parser.add_argument("--ours-miss-s3", type=float, nargs=2, metavar=("GETS", "PUTS"))
    parser.add_argument("--ours-hit-s3", type=float, nargs=2, metavar=("GETS", "PUTS"))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()

    workloads = from_results(args.results, args.accept) if args.results else {}
    workloads = from_flags(args, workloads)
    missing = {"ours miss", "ours warm repeat", "OpenNext miss"} - workloads.keys()
    if missing:
        raise SystemExit(f"no figures for {sorted(missing)}: give --results or the --*-ms flags")
    rows = table(workloads, args.basis)
    if args.json:
        print(json.dumps(rows))
    else:
        print_table(rows, workloads, args.basis)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
