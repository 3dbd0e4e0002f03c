"""Cold misses: our Lambda handler against OpenNext's image function, on the same 49 events.

OpenNext (``@opennextjs/aws``, pinned in ``bench/opennext/package.json``) builds a minimal Next.js
16.4.6 app (``bench/opennext/``) into ``.open-next/image-optimization-function``: Next's own
image optimizer (sharp) behind an API Gateway v2 / Function URL adapter, reading sources from an
S3 bucket (``BUCKET_NAME``, ``BUCKET_KEY_PREFIX``). It keeps no variants: every request that
reaches it is transformed. Ours (``handler.entry.lambda_handler``) keeps variants in an S3 bucket.

Both run as one Lambda instance would, each in its own process (``node bench/opennext/driver.mjs``
and this script's ``ours`` mode), against one moto S3 server in this process, on the same events:
7 ukui-wallpapers photos (3640-3840 px JPEG/PNG) x 7 widths (``bench/hits.py``'s), q=75, under a
WebP-only and an AVIF+WebP ``Accept``. Each pass has fresh buckets and a fresh instance:

  opennext  cold: the first 49 requests of a new instance; warm: the same 49 again in that
            instance (it transforms again, which is what a CloudFront miss costs it);
  ours      cold: empty variant bucket, every request a MISS; warm: a new instance over the
            variants the cold pass wrote, every request an S3 HIT.

With ``--fast-first-view SECONDS``, a third product runs on the AVIF events: ours with
``NEXT_IMAGE_FAST_FIRST_VIEW`` set (``ours-ffv``). Its cold pass answers a slow AVIF miss with
WebP and asks for the AVIF by an asynchronous invocation of itself, which a loopback Lambda API
records (``devtools/lambda_api.py``); those invocations then run on a new instance, timed apart
as ``deferred`` (on AWS they run on other instances, after the visitors have their answers),
before the warm pass, which must find every AVIF.

Rounds alternate which product goes first. Every answer must be a 200 image of the asked width in
the negotiated format (decoded with pyvips). Reports per pass the seconds for 49 requests, the
per-request p50, bytes out, and ours/OpenNext; ours also reports its S3 calls and stage times
(``bench/lambda_cold_warm.py``'s recorder). ``--json-out`` keeps every duration for
``bench/cost.py``.

    .venv/bin/python bench/opennext.py [--rounds 2] [--accept webp --accept avif]
        [--cpus 1] [--ours-env VIPS_CONCURRENCY=1] [--fast-first-view 0.25]
        [--json-out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.moto_server import moto_server

if TYPE_CHECKING:
    from devtools.lambda_api import Invocation

REPO = Path(__file__).resolve().parent.parent
PROJECT = REPO / "bench" / "opennext"
FUNCTION = PROJECT / ".open-next" / "image-optimization-function"
PREFIX = "_assets"  # where OpenNext's deployers (SST, its reference CDK) put the assets
PHOTO_COUNT = 7
TYPES = {"webp": "image/webp", "avif": "image/avif"}
LOADERS = {"image/webp": "webpload", "image/avif": "heifload"}
PASSES = ("cold", "warm")
PRODUCTS = ("opennext", "ours")
FAST_FIRST_VIEW = "ours-ffv"
REGION = "us-east-1"
# Our transforms run on threads at nice 10 (handler/pipeline/low_priority.py), so that hits are
# answered first. On Lambda nothing else competes; on this shared machine other work would take
# their CPU. Both functions run at nice 10, so that neither gets a larger share of the machine.
LOW_PRIORITY = 10


@dataclass(frozen=True)
class Answer:
    ms: float
    cpu_ms: float  # the process's CPU time (all threads): what ~1 vCPU of Lambda would take
    status: int
    type: str
    bytes: int


# --- events ---------------------------------------------------------------------------------


def image_event(path: str, width: int, accept: str) -> dict[str, Any]:
    """A Function URL GET of ``/_next/image`` for ``path`` at ``width``, q=75."""
    from handler.commands.invoke import function_url_event

    query = f"url={path.replace('/', '%2F')}&w={width}&q=75"
    return function_url_event(query, accept, host="bench.lambda-url.us-east-1.on.aws")


def make_events(names: list[str], accept: str) -> list[dict[str, Any]]:
    from bench.common import HOT_WIDTHS

    return [image_event(f"/photos/{name}", w, accept) for name in names for w in HOT_WIDTHS]


def asked_width(event: dict[str, Any]) -> int:
    return int(event["rawQueryString"].split("&w=", 1)[1].split("&", 1)[0])


# --- S3 -------------------------------------------------------------------------------------


def seeded_buckets(endpoint: str, label: str, photos: list[tuple[str, bytes]]) -> dict[str, str]:
    """A fresh assets bucket holding the photos under ``_assets/photos/`` (and an empty variant
    bucket); returns their names."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    buckets = {"assets": f"{label}-assets", "variants": f"{label}-variants"}
    for bucket in buckets.values():
        client.create_bucket(Bucket=bucket)
    for name, data in photos:
        kind = "image/png" if name.endswith(".png") else "image/jpeg"
        key = f"{PREFIX}/photos/{name}"
        client.put_object(Bucket=buckets["assets"], Key=key, Body=data, ContentType=kind)
    return buckets


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
    }


# --- the two products -------------------------------------------------------------------------


def build_opennext() -> None:
    """``npm ci`` and ``open-next build`` once (about a minute); the output is kept."""
    if (FUNCTION / "index.mjs").is_file():
        return
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
    if not (PROJECT / "node_modules" / "@opennextjs" / "aws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PROJECT, check=True, env=env)
    subprocess.run(["npm", "run", "open-next"], cwd=PROJECT, check=True, env=env)


def run_pass(
    product: str,
    buckets: dict[str, str],
    endpoint: str,
    events: Path,
    out: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One instance of ``product`` in its own process: its cold and warm passes."""
    if product == "opennext":
        command = ["node", str(PROJECT / "driver.mjs"), str(FUNCTION), str(events), str(out), "2"]
        env = {"BUCKET_NAME": buckets["assets"], "BUCKET_KEY_PREFIX": PREFIX}
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "ours", str(events), str(out)]
        env = {
            "NEXT_IMAGE_BUCKET": buckets["variants"],
            "NEXT_IMAGE_ASSETS_BUCKET": buckets["assets"],
            "NEXT_IMAGE_ASSETS_PREFIX": f"{PREFIX}/",
            "NEXT_IMAGE_CONFIG": '{"formats": ["image/avif", "image/webp"]}',
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
        } | dict(item.split("=", 1) for item in args.ours_env)
        if product == FAST_FIRST_VIEW:
            env["NEXT_IMAGE_FAST_FIRST_VIEW"] = str(args.fast_first_view)
    command = ["nice", "-n", str(LOW_PRIORITY), *command]
    if args.cpus:
        command = ["taskset", "-c", args.cpus, *command]
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, **aws_env(endpoint), **env},
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def ours(events_path: Path, out: Path) -> int:
    """This process is one instance of our Lambda function: the init (import) is timed, then a
    cold pass on it and a warm pass on a new instance; prints JSON like driver.mjs's."""
    started = time.perf_counter()
    from handler.entry.lambda_handler import build_handler, lambda_settings

    init_ms = (time.perf_counter() - started) * 1000
    import resource

    from bench.common import Recorder, summary
    from handler.commands.invoke import FakeContext, response_body, response_headers
    from handler.stores.s3_client import s3_client, s3_source_client

    events = json.loads(events_path.read_text())
    recorder = Recorder()
    recorder.install(s3_client(), s3_source_client())
    passes, s3 = [], []
    deferred: dict[str, Any] = {}
    with self_invocations() as calls:
        for index in range(len(PASSES)):
            if index == 1 and calls:
                deferred = produce(calls)
            handle = build_handler(lambda_settings())
            answers, records = [], []
            recorder.take()
            for number, event in enumerate(events):
                begun, cpu = time.perf_counter(), time.process_time()
                response = handle(event, FakeContext())
                ms = (time.perf_counter() - begun) * 1000
                cpu_ms = (time.process_time() - cpu) * 1000
                body = response_body(response)
                (out / f"{index}-{number}").write_bytes(body)
                headers = response_headers(response)
                answers.append(
                    {
                        "ms": ms,
                        "cpu_ms": cpu_ms,
                        "status": response["statusCode"],
                        "type": headers.get("content-type", ""),
                        "bytes": len(body),
                        "cache": headers.get("x-nextjs-cache", ""),
                    }
                )
                records.append(recorder.take())
            passes.append(answers)
            s3.append(summary(records))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "init_ms": init_ms,
                "passes": passes,
                "s3": s3,
                "max_rss_kib": rss,
                "deferred": deferred,
            }
        )
    )
    return 0


@contextmanager
def self_invocations() -> Iterator[list[Invocation]]:
    """With fast first view on, the function's asynchronous calls to itself go to a loopback
    Lambda API that records them; yields the calls recorded."""
    from devtools.lambda_api import recording_lambda_api

    if not float(os.environ.get("NEXT_IMAGE_FAST_FIRST_VIEW", "0")):
        yield []
        return
    with recording_lambda_api() as (url, calls):
        os.environ["AWS_ENDPOINT_URL_LAMBDA"] = url
        os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "bench"
        yield calls


def produce(calls: list[Invocation]) -> dict[str, Any]:
    """Run the recorded invocations on a new instance, as Lambda would; their time and CPU."""
    from handler.commands.invoke import FakeContext
    from handler.entry.lambda_handler import build_handler, lambda_settings

    handle = build_handler(lambda_settings())
    begun, cpu = time.perf_counter(), time.process_time()
    produced = [handle(call.payload, FakeContext()).get("produced") for call in calls]
    if not all(produced):
        raise SystemExit(f"ours: {produced.count(False)} deferred AVIFs were not produced")
    return {
        "count": len(calls),
        "seconds": round(time.perf_counter() - begun, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }


# --- checking and reporting -------------------------------------------------------------------


def verify(product: str, answers: list[Answer], events: list[dict[str, Any]], out: Path) -> None:
    """Every answer a 200 image of the asked width, in the type the Accept header negotiates
    (or WebP for a fast first view, in the cold pass of ``ours-ffv``)."""
    import pyvips

    for pass_index, pass_answers in enumerate(chunks(answers, len(events))):
        for number, (answer, event) in enumerate(zip(pass_answers, events, strict=True)):
            accept = event["headers"]["accept"]
            wanted = TYPES["avif"] if "image/avif" in accept else TYPES["webp"]
            if product == FAST_FIRST_VIEW and pass_index == 0 and answer.type == TYPES["webp"]:
                wanted = TYPES["webp"]
            body = (out / f"{pass_index}-{number}").read_bytes()
            image = pyvips.Image.new_from_buffer(body, "")
            problem = (
                f"status {answer.status}"
                if answer.status != 200
                else f"type {answer.type}"
                if answer.type != wanted
                else f"decoded by {image.get('vips-loader')}"
                if not image.get("vips-loader").startswith(LOADERS[wanted])
                else f"width {image.width}"
                if image.width != asked_width(event)
                else ""
            )
            if problem:
                query = event["rawQueryString"]
                raise SystemExit(f"{product} pass {pass_index}: {query} ({accept}): {problem}")


def chunks(answers: list[Answer], size: int) -> list[list[Answer]]:
    return [answers[i : i + size] for i in range(0, len(answers), size)]


def figures(answers: list[Answer]) -> dict[str, Any]:
    durations = [a.ms for a in answers]
    return {
        "seconds": round(sum(durations) / 1000, 2),
        "cpu_seconds": round(sum(a.cpu_ms for a in answers) / 1000, 2),
        "p50_ms": round(statistics.median(durations), 1),
        "bytes": sum(a.bytes for a in answers),
        "ms": [round(ms, 2) for ms in durations],
        "cpu_ms": [round(a.cpu_ms, 2) for a in answers],
    }


def products_for(accept: str, args: argparse.Namespace) -> tuple[str, ...]:
    """Fast first view changes only AVIF misses: it runs on the AVIF events alone."""
    if args.fast_first_view and accept == "avif":
        return (*PRODUCTS, FAST_FIRST_VIEW)
    return PRODUCTS


def report(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds for each (accept, product, pass), and each of ours/OpenNext."""
    table: dict[str, Any] = {}
    for accept in sorted({run["accept"] for run in runs}):
        products = [p for p in (*PRODUCTS, FAST_FIRST_VIEW) if any(p in r for r in runs)]
        for kind in PASSES:
            row: dict[str, Any] = {}
            for product in products:
                mine = [r[product][kind] for r in runs if r["accept"] == accept and product in r]
                if not mine:
                    continue
                row[product] = {
                    key: statistics.median(m[key] for m in mine)
                    for key in ("seconds", "cpu_seconds", "p50_ms", "bytes")
                } | {"seconds_each": [m["seconds"] for m in mine]}
                if product == "opennext":
                    continue
                row[product] |= {
                    f"ratio_{key}": round(row[product][key] / row["opennext"][key], 3)
                    for key in ("seconds", "cpu_seconds")
                }
                deferred = [
                    r[product]["deferred"] for r in runs if r["accept"] == accept and product in r
                ]
                if kind == "cold" and any(deferred):
                    row[product]["deferred"] = {
                        key: statistics.median(d[key] for d in deferred)
                        for key in ("count", "seconds", "cpu_seconds")
                    }
            table[f"{accept} {kind}"] = row
    print(
        f"{'pass':<11} {'product':<9} {'wall s (each round)':<28} {'CPU s':>6} {'p50 ms':>7} "
        f"{'bytes':>9} {'ours/ON wall':>12} {'CPU':>6}"
    )
    for name, row in table.items():
        for product, cells in row.items():
            each = "/".join(f"{s:.2f}" for s in cells["seconds_each"])
            ratios = (
                f"{cells['ratio_seconds']:>12.3f} {cells['ratio_cpu_seconds']:>6.3f}"
                if product != "opennext"
                else ""
            )
            print(
                f"{name:<11} {product:<9} {cells['seconds']:>6.2f} ({each:<19}) "
                f"{cells['cpu_seconds']:>6.2f} {cells['p50_ms']:>7.1f} {cells['bytes']:>9,.0f} "
                + ratios
            )
            if "deferred" in cells:
                later = cells["deferred"]
                print(
                    f"{'':<11} {'':<9} + {later['count']:.0f} deferred AVIFs on other instances: "
                    f"{later['seconds']:.2f} s, {later['cpu_seconds']:.2f} CPU s"
                )
    return table


def measure(args: argparse.Namespace) -> int:
    from bench.common import CACHE, prepare_photos

    build_opennext()
    photos = [(p.name, p.data) for p in prepare_photos(None, CACHE / "ukui", 0)[:PHOTO_COUNT]]
    names = [name for name, _ in photos]
    from bench.common import ACCEPTS

    runs: list[dict[str, Any]] = []
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for accept in args.accept:
                events = make_events(names, ACCEPTS[accept])
                events_path = Path(tmp) / f"events-{accept}.json"
                events_path.write_text(json.dumps(events))
                load = os.getloadavg()[0]
                run: dict[str, Any] = {"round": round_index, "accept": accept, "load1": load}
                products = products_for(accept, args)
                order = products if round_index % 2 == 0 else products[::-1]
                for product in order:
                    label = f"{product}-{accept}-r{round_index}"
                    out = Path(tmp) / label
                    out.mkdir()
                    buckets = seeded_buckets(endpoint, label, photos)
                    raw = run_pass(product, buckets, endpoint, events_path, out, args)
                    answers = [Answer(**_answer(a)) for p in raw["passes"] for a in p]
                    verify(product, answers, events, out)
                    shutil.rmtree(out)
                    run[product] = {
                        kind: figures(chunk)
                        for kind, chunk in zip(PASSES, chunks(answers, len(events)), strict=True)
                    } | {"init_ms": round(raw["init_ms"], 1), "max_rss_kib": raw["max_rss_kib"]}
                    if product != "opennext":
                        run[product]["s3"] = dict(zip(PASSES, raw["s3"], strict=True))
                        run[product]["deferred"] = raw["deferred"]
                        run[product]["first_views_webp"] = sum(
                            a["type"] == TYPES["webp"] for a in raw["passes"][0]
                        )
                        caches = {a["cache"] for a in raw["passes"][0]} | {
                            "/" + a["cache"] for a in raw["passes"][1]
                        }
                        if caches != {"MISS", "/HIT"}:
                            raise SystemExit(f"ours: expected cold MISS, warm HIT: {caches}")
                print(
                    f"round {round_index} {accept}: load {load:.2f}, "
                    + ", ".join(
                        f"{p} {run[p]['cold']['seconds']:.2f}/{run[p]['warm']['seconds']:.2f} s"
                        for p in products
                    ),
                    file=sys.stderr,
                )
                runs.append(run)
    summary = {
        "table": report(runs),
        "runs": runs,
        "versions": versions(),
        "cpus": args.cpus,
        "ours_env": args.ours_env,
    }
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=1))
    return 0


def _answer(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: raw[key] for key in ("ms", "cpu_ms", "status", "type", "bytes")}


def versions() -> dict[str, str]:
    """What ran: OpenNext, Next.js and sharp in the function, libvips under pyvips."""
    import pyvips

    def npm(path: Path) -> str:
        return str(json.loads((path / "package.json").read_text())["version"])

    modules = PROJECT / "node_modules"
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return {
        "@opennextjs/aws": npm(modules / "@opennextjs" / "aws"),
        "next": npm(modules / "next"),
        "sharp (function)": npm(FUNCTION / "node_modules" / "sharp"),
        "node": node.stdout.strip(),
        "libvips (ours)": ".".join(str(pyvips.version(i)) for i in range(3)),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "ours":
        return ours(Path(sys.argv[2]), Path(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--accept", action="append", choices=sorted(TYPES), default=None)
    parser.add_argument("--cpus", help="run both functions under taskset -c CPUS (e.g. 1)")
    parser.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for our function (e.g. VIPS_CONCURRENCY=1)",
    )
    parser.add_argument(
        "--fast-first-view",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also run ours with NEXT_IMAGE_FAST_FIRST_VIEW=SECONDS on the AVIF events",
    )
    parser.add_argument("--json-out", type=Path, help="write every figure here, for cost.py")
    args = parser.parse_args()
    args.accept = args.accept or ["webp", "avif"]
    return measure(args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # run as a script: the repo
    raise SystemExit(main())
