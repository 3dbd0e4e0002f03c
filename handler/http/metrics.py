"""The metrics, defined once: Prometheus on ``next-image serve``, CloudWatch EMF on Lambda.

Each ``MetricSpec`` is one Prometheus metric, and its ``emf`` views are the CloudWatch metrics
that count the same samples (the first release's EMF names and units, so Lambda dashboards keep
working). ``measure`` turns one request's record into samples; the EMF observer
(``handler.http.observability``) and ``PrometheusMetrics`` both read them, so the two cannot
drift. prometheus_client is imported only by serve-only code: Lambda's cold start never pays.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from handler.contract.errors import CATEGORIES

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from starlette.requests import Request

    from handler.model import Observer, RequestRecord
    from handler.request.coordinator import Coordinator

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often each worker writes its gauges for the others' scrapes (multiprocess mode only).
GAUGE_SAMPLE_SECONDS = 1.0

Kind = Literal["counter", "histogram", "gauge"]
M = TypeVar("M", "Counter", "Histogram")
AppLifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class EmfView:
    """A CloudWatch metric: the samples whose labels fully match the ``where`` regexes, in
    ``unit`` (a Powertools ``MetricUnit`` value), multiplied by ``scale``."""

    name: str
    unit: str
    where: tuple[tuple[str, str], ...] = ()
    scale: float = 1.0

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(re.fullmatch(pattern, labels[label]) for label, pattern in self.where)

    def value(self, sample: float) -> float:
        """Rounded so a seconds-to-milliseconds round trip shows the record's own number."""
        return round(sample * self.scale, 3)


@dataclass(frozen=True, eq=False)  # each is one object: hashed by identity, cheaply
class MetricSpec:
    """One Prometheus metric (``name`` as exposed) and the EMF metrics derived from it."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    emf: tuple[EmfView, ...] = ()


def _count(name: str, label: str = "", pattern: str = "") -> EmfView:
    return EmfView(name, "Count", ((label, pattern),) if label else ())


REQUESTS = MetricSpec(
    "next_image_requests_total",
    "counter",
    "/_next/image requests by HTTP status and cache result (hit, miss, stale, or none)",
    labels=("status", "cache"),
    emf=(
        _count("Requests"),
        _count("Hits", "cache", "hit"),
        _count("Misses", "cache", "miss"),
        _count("Stale", "cache", "stale"),
        _count("Errors", "status", "5.."),
        _count("Rejected", "status", "4.."),
        _count("Redirects", "status", "302"),
    ),
)
ERRORS = MetricSpec(
    "next_image_errors_total",
    "counter",
    "Requests answered with an error, by category of failure",
    labels=("category",),
    # One EMF count per category, as Hits/Misses are per cache result: the views hold no labels.
    emf=tuple(
        _count(f"{category.capitalize()}Errors", "category", category) for category in CATEGORIES
    ),
)
REQUEST_SECONDS = MetricSpec(
    "next_image_request_seconds",
    "histogram",
    "Time to answer a /_next/image request",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    emf=(EmfView("TotalMs", "Milliseconds", scale=1000),),
)
TRANSFORM_SECONDS = MetricSpec(
    "next_image_transform_seconds",
    "histogram",
    "Time of the transform stage (plan, wait for a slot, encode) of requests that ran one",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    emf=(EmfView("TransformMs", "Milliseconds", scale=1000),),
)
OUTPUT_BYTES = MetricSpec(
    "next_image_output_bytes",
    "histogram",
    "Size of the optimized image each answered request served or revalidated",
    buckets=(1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6, 16e6),
    emf=(EmfView("OutputBytes", "Bytes"),),
)
TRANSFORMS_RUNNING = MetricSpec(
    "next_image_transforms_running",
    "gauge",
    "Transforms holding an admission slot now",
)
TRANSFORMS_QUEUED = MetricSpec(
    "next_image_transforms_queued",
    "gauge",
    "Requests waiting for a transform slot now",
)
STORE_ERRORS = MetricSpec(
    "next_image_store_errors_total",
    "counter",
    "Store calls that failed or timed out, by operation (each answered without the cache)",
    labels=("operation",),
)

METRICS = (
    REQUESTS,
    ERRORS,
    REQUEST_SECONDS,
    TRANSFORM_SECONDS,
    OUTPUT_BYTES,
    TRANSFORMS_RUNNING,
    TRANSFORMS_QUEUED,
    STORE_ERRORS,
)


ChildKey = tuple[MetricSpec, tuple[tuple[str, str], ...]]  # a metric and its label values


class Measurement(NamedTuple):
    spec: MetricSpec
    value: float
    labels: Mapping[str, str] = {}


def measure(record: RequestRecord) -> list[Measurement]:
    """The samples of one ``/_next/image`` request (gauges and store errors are not per request)."""
    labels = {
        "status": str(record.get("status", 0)),
        "cache": str(record.get("cache", "none")).lower(),
    }
    samples = [
        Measurement(REQUESTS, 1.0, labels),
        Measurement(REQUEST_SECONDS, record.get("total_ms", 0.0) / 1000),
    ]
    if "error_category" in record:
        samples.append(Measurement(ERRORS, 1.0, {"category": record["error_category"]}))
    transform_ms = record.get("stages_ms", {}).get("transform")
    if transform_ms is not None:
        samples.append(Measurement(TRANSFORM_SECONDS, transform_ms / 1000))
    if record.get("output_bytes"):
        samples.append(Measurement(OUTPUT_BYTES, float(record["output_bytes"])))
    return samples


def prepare_for_workers() -> None:
    """Give ``serve --workers N`` one folder of metric files that every worker writes and a
    scrape of any worker reads (prometheus_client's multiprocess mode).

    Called in the parent before the workers start, so they inherit the variable. A folder named
    by the operator is emptied of a previous run's files (their counts and dead processes'
    gauges would otherwise be added in); without one, a fresh temporary folder is made and
    removed when the parent exits.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        return
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="next-image-metrics-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = path


class PrometheusMetrics:
    """``next-image serve``'s metrics: the app's observer, the store's failure hook, and the
    ``/metrics`` body.

    With ``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is first imported, each worker
    writes its samples to files there and a scrape of any worker merges them; its gauges are
    rewritten every ``GAUGE_SAMPLE_SECONDS`` for the others' scrapes and leave the sums when it
    shuts down. Otherwise the samples live in this app's own registry, so several apps in one
    process (tests) count apart. ``also`` is an observer to call after this one.
    """

    def __init__(self, coordinator: Coordinator, *, also: Observer | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
        from prometheus_client.multiprocess import MultiProcessCollector

        self._admission = coordinator.admission
        self._also = also
        registry = CollectorRegistry()
        self._counters: dict[MetricSpec, Counter] = {}
        self._histograms: dict[MetricSpec, Histogram] = {}
        self._gauges: dict[MetricSpec, Gauge] = {}
        # Each labelled child's observe or inc, found once rather than per request.
        self._children: dict[ChildKey, Callable[[float], None]] = {}
        for spec in METRICS:
            if spec.kind == "counter":
                self._counters[spec] = Counter(spec.name, spec.help, spec.labels, registry=registry)
            elif spec.kind == "histogram":
                self._histograms[spec] = Histogram(
                    spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets
                )
            else:  # each worker's own count; a scrape sums those of the live workers
                self._gauges[spec] = Gauge(
                    spec.name,
                    spec.help,
                    spec.labels,
                    registry=registry,
                    multiprocess_mode="livesum",
                )
        self._multiprocess: bool = values.ValueClass._multiprocess
        self._scraped = registry
        self._stop = threading.Event()
        if self._multiprocess:
            self._scraped = CollectorRegistry()
            MultiProcessCollector(self._scraped)  # type: ignore[no-untyped-call]
            sampler = threading.Thread(
                target=_sample_gauges, args=(weakref.ref(self), self._stop), daemon=True
            )
            sampler.start()
        coordinator.store.on_failure = self._store_failed

    def __call__(self, request: Request, record: RequestRecord) -> None:
        for sample in measure(record):
            key = (sample.spec, tuple(sample.labels.items()))
            child = self._children.get(key)
            if child is None:  # a few per metric: statuses, cache results, categories
                if sample.spec.kind == "histogram":
                    child = _child(self._histograms[sample.spec], sample.labels).observe
                else:
                    child = _child(self._counters[sample.spec], sample.labels).inc
                self._children[key] = child
            child(sample.value)
        if self._also is not None:
            self._also(request, record)

    def render(self) -> bytes:
        """The scrape, in Prometheus text format, with this process's gauges read just now."""
        from prometheus_client import generate_latest

        self.sample_gauges()
        if self._multiprocess:
            _forget_killed_workers(Path(os.environ[MULTIPROC_ENV]))
        return generate_latest(self._scraped)

    def sample_gauges(self) -> None:
        self._gauges[TRANSFORMS_RUNNING].set(self._admission.running)
        self._gauges[TRANSFORMS_QUEUED].set(self._admission.queued)

    def around(self, lifespan: AppLifespan) -> AppLifespan:
        """The app's lifespan, then ``close`` once the server has shut down.

        Not ``atexit``: uvicorn ends a worker by re-raising the SIGTERM it handled.
        """

        @asynccontextmanager
        async def lifespan_then_close(app: Any) -> AsyncIterator[Any]:
            async with lifespan(app) as state:
                yield state
            self.close()

        return lifespan_then_close

    def close(self) -> None:
        """Stop sampling, and drop this worker's gauges from the live workers' sums."""
        self._stop.set()
        if self._multiprocess:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def _store_failed(self, operation: str) -> None:
        self._counters[STORE_ERRORS].labels(operation=operation).inc()


def _child(metric: M, labels: Mapping[str, str]) -> M:
    return metric.labels(**labels) if labels else metric


def _sample_gauges(ref: weakref.ref[PrometheusMetrics], stop: threading.Event) -> None:
    """A worker's transforms start and end between scrapes of other workers: write them often."""
    while not stop.wait(GAUGE_SAMPLE_SECONDS):
        metrics = ref()
        if metrics is None:
            return
        metrics.sample_gauges()
        del metrics  # hold no reference while waiting, so an unused app can be collected


def _forget_killed_workers(folder: Path) -> None:
    """A worker killed outright (the OOM killer) never shut down: drop its gauges all the same,
    or its last in-flight transforms would stay in the sums."""
    from prometheus_client.multiprocess import mark_process_dead

    for path in folder.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if not _alive(pid):
            mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
