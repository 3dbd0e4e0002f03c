"""Prometheus scrapes read back: every sample by name and labels, and the requests counter."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from handler.http.metrics import REQUESTS

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by sample name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests_by_label(samples: Samples) -> dict[tuple[str, str], float]:
    """``next_image_requests_total`` as {(status, cache): count}."""
    return {
        (dict(labels)["status"], dict(labels)["cache"]): value
        for (name, labels), value in samples.items()
        if name == REQUESTS.name
    }


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
    return parse(response.text)
