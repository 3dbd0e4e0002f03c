"""Metrics: Prometheus ``/metrics`` on the service, EMF on Lambda, both from
``handler.http.metrics``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from handler.commands.invoke import response_body
from handler.entry.settings import Settings
from handler.entry.wiring import build_app
from handler.http.metrics import (
    METRICS,
    MULTIPROC_ENV,
    TRANSFORMS_RUNNING,
    MetricSpec,
    prepare_for_workers,
)
from handler.http.observability import RequestObserver, make_logger, make_metrics
from handler.request import transforms as transforms_module
from handler.request.coordinator import Coordinator
from kit import imagegen
from kit.lambda_events import function_url, invoke
from kit.paths import REPO
from kit.prometheus import parse, requests_by_label, scrape
from kit.serving import answering
from kit.support import free_port, wait_for, wait_until

IMAGE = "/_next/image?url=%2Ftest.jpg&w=640&q=75"
WEBP = {"accept": "image/webp"}


def test_miss_hit_and_rejection_are_counted(public_dir: Path) -> None:
    client = TestClient(build_app(Settings(public_dir=str(public_dir)), service=True))
    miss = client.get(IMAGE, headers=WEBP)
    hit = client.get(IMAGE, headers=WEBP)
    assert (miss.headers["x-nextjs-cache"], hit.headers["x-nextjs-cache"]) == ("MISS", "HIT")
    assert client.get("/_next/image?w=640&q=75").status_code == 400

    samples = scrape(client)
    assert requests_by_label(samples) == {("200", "miss"): 1, ("200", "hit"): 1, ("400", "none"): 1}
    assert samples[("next_image_request_seconds_count", ())] == 3
    assert samples[("next_image_transform_seconds_count", ())] == 1  # the hit ran none
    assert samples[("next_image_output_bytes_count", ())] == 2
    assert samples[("next_image_output_bytes_sum", ())] == 2 * len(miss.content)
    assert samples[("next_image_transforms_running", ())] == 0
    assert not any(name == "next_image_store_errors_total" for name, _ in samples)


@pytest.fixture(scope="module")
def small_picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small picture: the test holds its transform as long as it needs to scrape and overload
    the app meanwhile."""
    root = tmp_path_factory.mktemp("public")
    (root / "small.png").write_bytes(imagegen.png(64, 64))
    return root


@asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Coordinator]]:
    app = build_app(settings, service=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
        yield c, app.state.coordinator


@pytest.mark.anyio
async def test_gauges_during_a_transform_and_a_503_when_the_queue_is_full(
    small_picture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = threading.Event()  # the transform waits for it: it runs as long as the test needs
    real = transforms_module.run_transform

    def run_transform(*args: Any, **kwargs: Any) -> Any:
        held.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(transforms_module, "run_transform", run_transform)
    settings = Settings(public_dir=str(small_picture), max_transforms=1, max_queue=1)
    async with service(settings) as (client, coordinator):
        # A light transform, held: a heavy one on the niced transform threads could outlast the
        # request's budget beside a CPU hog.
        running = asyncio.ensure_future(client.get("/_next/image?url=/small.png&w=384&q=75"))
        try:
            await wait_until(lambda: coordinator.admission.running)
            queued = asyncio.ensure_future(client.get("/_next/image?url=/small.png&w=640&q=75"))
            await wait_until(lambda: coordinator.admission.queued)
            during = parse((await client.get("/metrics")).text)
            rejected = await client.get("/_next/image?url=/small.png&w=750&q=75")
            assert running.done() is False
        finally:
            held.set()
        answers = await asyncio.gather(running, queued)
        after = parse((await client.get("/metrics")).text)

    assert rejected.status_code == 503
    assert [answer.status_code for answer in answers] == [200, 200]
    assert during[("next_image_transforms_running", ())] == 1
    assert during[("next_image_transforms_queued", ())] == 1
    assert requests_by_label(during) == {}
    assert requests_by_label(after) == {("200", "miss"): 2, ("503", "none"): 1}
    assert after[("next_image_transforms_running", ())] == 0
    assert after[("next_image_transforms_queued", ())] == 0
    assert after[("next_image_transform_seconds_count", ())] == 2  # the 503 never started one
    assert after[("next_image_output_bytes_count", ())] == 2


def test_store_errors_are_counted_by_operation(public_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    settings = Settings(public_dir=str(public_dir), store="filesystem", cache_dir=str(cache))
    client = TestClient(build_app(settings, service=True))
    shutil.rmtree(cache)  # it holds the shared size record (.usage) already
    cache.write_bytes(b"")  # a file where the folder was: reads miss, writes fail
    response = client.get(IMAGE, headers=WEBP)
    assert (response.status_code, response.headers["x-nextjs-cache"]) == (200, "MISS")
    assert client.get("/readyz").status_code == 503

    samples = scrape(client)
    errors = {
        dict(labels)["operation"]: value
        for (name, labels), value in samples.items()
        if name == "next_image_store_errors_total"
    }
    # The two writes of a public-folder miss (its source is not kept) fail, then the readiness
    # probe's ping does.
    assert errors == {"put_variant": 1, "put_pointer": 1, "ping": 1}
    assert requests_by_label(samples) == {("200", "miss"): 1}


def test_metrics_only_on_the_service(public_dir: Path) -> None:
    settings = Settings(public_dir=str(public_dir))
    assert TestClient(build_app(settings)).get("/metrics").status_code == 404
    event = function_url("GET", "", {})
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/metrics"
    response = invoke(settings, event)
    assert (response["statusCode"], response_body(response)) == (404, b"Not Found")


def test_lambda_import_leaves_prometheus_client_out() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXT_IMAGE_")}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, handler.entry.lambda_handler; print('prometheus_client' in sys.modules)",
        ],
        cwd=REPO,
        env=env | {"NEXT_IMAGE_BUCKET": "b", "AWS_DEFAULT_REGION": "us-east-1"},
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


def _record(
    status: int, cache: str | None, transform_ms: float | None, output: int
) -> dict[str, Any]:
    record: dict[str, Any] = {"status": status, "stages_ms": {}, "total_ms": 20.5}
    if cache:
        record["cache"] = cache
    if transform_ms is not None:
        record["stages_ms"]["transform"] = transform_ms
    if output:
        record["output_bytes"] = output
    return record


COUNT, MS, BYTES = "Count", "Milliseconds", "Bytes"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            _record(200, "MISS", 12.34, 1234),
            {
                "Requests": (COUNT, 1),
                "Misses": (COUNT, 1),
                "TransformMs": (MS, 12.34),
                "TotalMs": (MS, 20.5),
                "OutputBytes": (BYTES, 1234),
            },
        ),
        (
            _record(304, "HIT", None, 50),
            {
                "Requests": (COUNT, 1),
                "Hits": (COUNT, 1),
                "TotalMs": (MS, 20.5),
                "OutputBytes": (BYTES, 50),
            },
        ),
        (
            _record(200, "STALE", None, 99),
            {
                "Requests": (COUNT, 1),
                "Stale": (COUNT, 1),
                "TotalMs": (MS, 20.5),
                "OutputBytes": (BYTES, 99),
            },
        ),
        (
            _record(302, "MISS", 0.07, 5_000_000),
            {
                "Requests": (COUNT, 1),
                "Misses": (COUNT, 1),
                "Redirects": (COUNT, 1),
                "TransformMs": (MS, 0.07),
                "TotalMs": (MS, 20.5),
                "OutputBytes": (BYTES, 5_000_000),
            },
        ),
        (
            _record(400, None, None, 0),
            {"Requests": (COUNT, 1), "Rejected": (COUNT, 1), "TotalMs": (MS, 20.5)},
        ),
        (
            _record(504, None, 30000.01, 0),
            {
                "Requests": (COUNT, 1),
                "Errors": (COUNT, 1),
                "TransformMs": (MS, 30000.01),
                "TotalMs": (MS, 20.5),
            },
        ),
    ],
    ids=["miss", "304-hit", "stale", "redirect", "rejected", "timeout"],
)
def test_emf_names_units_and_values_are_the_first_releases(
    record: dict[str, Any], expected: dict[str, tuple[str, float]]
) -> None:
    """The Lambda dashboards' metrics, exactly as before ``handler.http.metrics`` defined them."""
    metrics = make_metrics()
    metrics.clear_metrics()
    RequestObserver(make_logger(), metrics)(Request({"type": "http", "headers": []}), record)
    blob: dict[str, Any] = dict(metrics.serialize_metric_set())
    metrics.clear_metrics()
    units = {m["Name"]: m["Unit"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    emitted = {name: (unit, blob[name]) for name, unit in units.items()}
    assert emitted == {name: (unit, [value]) for name, (unit, value) in expected.items()}


def test_lambda_invocation_emits_the_emf_of_its_request(
    public_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the real handler: one EMF blob per invocation, with that request's metrics."""
    settings = Settings(public_dir=str(public_dir), max_inline_bytes=100)  # so 302s
    invoke(settings, function_url("GET", IMAGE.split("?")[1], WEBP))
    invoke(settings, function_url("GET", "w=640&q=75", WEBP))
    blobs = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]
    names = [{m["Name"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]} for blob in blobs]
    assert names == [
        {"Requests", "Misses", "Redirects", "TransformMs", "TotalMs", "OutputBytes"},
        {"Requests", "Rejected", "ValidationErrors", "TotalMs"},
    ]
    assert [blob["Requests"] for blob in blobs] == [[1.0], [1.0]]


def test_prepare_for_workers_makes_a_fresh_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "")
    monkeypatch.delenv(MULTIPROC_ENV)
    prepare_for_workers()
    folder = Path(os.environ[MULTIPROC_ENV])
    assert folder.is_dir() and not any(folder.iterdir())


def test_prepare_for_workers_empties_a_named_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    named = tmp_path / "metrics"
    named.mkdir()
    (named / "counter_123.db").write_bytes(b"old")
    (named / "gauge_livesum_123.db").write_bytes(b"old")
    (named / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(named))
    prepare_for_workers()
    assert sorted(p.name for p in named.iterdir()) == ["notes.txt"]
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "new" / "metrics"))
    prepare_for_workers()
    assert (tmp_path / "new" / "metrics").is_dir()


WORKER = """
import sys, uvicorn
from handler.entry.settings import Settings
from handler.entry.wiring import build_app
app = build_app(Settings(public_dir=sys.argv[2]), service=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


KILLED_WORKER = f"""
import os
from prometheus_client import Gauge
Gauge("{TRANSFORMS_RUNNING.name}", "", multiprocess_mode="livesum").set(3)
print(os.getpid(), flush=True)
os._exit(0)
"""


@contextmanager
def worker(public: Path, folder: Path) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    """One uvicorn process of the service, as each ``serve --workers`` worker runs it."""
    port = free_port()
    command = [sys.executable, "-c", WORKER, str(port), str(public)]
    with answering(command, port, "/healthz", {MULTIPROC_ENV: str(folder)}) as running:
        yield running


def running(client: httpx.Client) -> float:
    return parse(client.get("/metrics").text)[("next_image_transforms_running", ())]


def test_workers_share_one_scrape(public_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    with worker(public_dir, folder) as (first, first_process):
        with worker(public_dir, folder) as (second, second_process):
            assert first.get(IMAGE, headers=WEBP).headers["x-nextjs-cache"] == "MISS"
            assert first.get(IMAGE, headers=WEBP).headers["x-nextjs-cache"] == "HIT"
            assert second.get(IMAGE, headers=WEBP).headers["x-nextjs-cache"] == "MISS"
            assert second.get("/_next/image?w=640&q=75").status_code == 400
            expected = {("200", "miss"): 2, ("200", "hit"): 1, ("400", "none"): 1}
            for client in (first, second):
                samples = parse(client.get("/metrics").text)
                assert requests_by_label(samples) == expected
                assert samples[("next_image_transform_seconds_count", ())] == 2
            # Each worker writes its gauges for the others' scrapes every GAUGE_SAMPLE_SECONDS:
            # one sampled mid-transform says 1 until its next sample, however long that takes.
            for client in (first, second):
                wait_for(lambda c=client: running(c) == 0, "gauges sampled after the transforms")
            assert (folder / f"gauge_livesum_{second_process.pid}.db").exists()
        # The second worker shut down: its gauges leave the sums, its counts stay.
        assert not (folder / f"gauge_livesum_{second_process.pid}.db").exists()
        assert (folder / f"counter_{second_process.pid}.db").exists()
        assert requests_by_label(parse(first.get("/metrics").text)) == expected
        assert (folder / f"gauge_livesum_{first_process.pid}.db").exists()

        # A worker killed outright with a transform in flight: a scrape drops its gauges.
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_WORKER],
            env=os.environ | {MULTIPROC_ENV: str(folder)},
            check=True,
            capture_output=True,
            text=True,
        )
        assert (folder / f"gauge_livesum_{killed.stdout.strip()}.db").exists()
        samples = parse(first.get("/metrics").text)
        assert samples[("next_image_transforms_running", ())] == 0
        assert not (folder / f"gauge_livesum_{killed.stdout.strip()}.db").exists()


def markdown_table(specs: tuple[MetricSpec, ...]) -> str:
    """docs/observability.md's metrics table, as ``handler.http.metrics`` defines it."""

    def emf(spec: MetricSpec) -> str:
        views = []
        for view in spec.emf:
            where = "".join(f" {label}=`{pattern}`" for label, pattern in view.where)
            unit = "" if view.unit == "Count" else f" ({view.unit})"
            views.append(f"`{view.name}`{where}{unit}")
        return ", ".join(views) or "—"

    rows = [
        "| Prometheus (`/metrics`) | Type | Labels | CloudWatch EMF (Lambda) | What |",
        "|---|---|---|---|---|",
    ]
    for spec in specs:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "—"
        rows.append(f"| `{spec.name}` | {spec.kind} | {labels} | {emf(spec)} | {spec.help} |")
    return "\n".join(rows) + "\n"


def test_readme_table_matches_the_definitions() -> None:
    table = markdown_table(METRICS)
    page = REPO / "docs" / "observability.md"
    assert table in page.read_text(), f"{page.name}'s metrics table should be:\n{table}"
