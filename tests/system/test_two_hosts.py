"""Two ``next-image serve`` processes on one Redis, as two hosts behind a load balancer."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from kit import imagegen
from kit.serving import serving
from kit.support import Route
from kit.upstream_server import Server

QUERY = "/_next/image?url=%2Fphoto.jpg&w=640&q=75"
WEBP = {"accept": "image/webp"}


def transforms(client: httpx.Client) -> int:
    """How many transforms this process ran, from its Prometheus histogram's count."""
    text = client.get("/metrics").text
    match = re.search(r"^next_image_transform_seconds_count (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


def test_identical_misses_on_two_hosts_transform_once(
    redis_url: str, upstream: Server, tmp_path: Path
) -> None:
    upstream.routes["/photo.jpg"] = Route(
        body=imagegen.noise_jpeg(1200, 900), headers={"Content-Type": "image/jpeg"}, delay=0.5
    )
    flags = ("--store", "redis", "--redis-url", redis_url, "--origin", upstream.url(""))
    env = {"NEXT_IMAGE_PREFIX": f"two-hosts-{tmp_path.name}/"}
    with serving(*flags, env=env) as first, serving(*flags, env=env) as second:
        hosts = [first, second]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: hosts[i % 2].get(QUERY, headers=WEBP), range(16)))
        assert [a.status_code for a in answers] == [200] * 16
        assert len({a.content for a in answers}) == 1
        decoded = imagegen.decode(answers[0].content)
        assert (decoded.format, decoded.width) == ("webp", 640)
        assert transforms(first) + transforms(second) == 1
        assert upstream.hits["/photo.jpg"] == 1

        # A variant the first host produces is a HIT on the second.
        other = "/_next/image?url=%2Fphoto.jpg&w=750&q=75"
        assert first.get(other, headers=WEBP).headers["x-nextjs-cache"] == "MISS"
        assert second.get(other, headers=WEBP).headers["x-nextjs-cache"] == "HIT"


def test_identical_misses_on_two_workers_of_one_folder_transform_once(
    upstream: Server, tmp_path: Path
) -> None:
    upstream.routes["/photo.jpg"] = Route(
        body=imagegen.noise_jpeg(1200, 900), headers={"Content-Type": "image/jpeg"}, delay=0.5
    )
    flags = ("--workers", "2", "--store", "filesystem", "--cache-dir", str(tmp_path / "cache"))
    with serving(*flags, "--origin", upstream.url("")) as service:
        port = service.base_url.port

        def fresh_connection(_: int) -> httpx.Response:  # so the kernel spreads them
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                return client.get(QUERY, headers=WEBP)

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(fresh_connection, range(16)))
        assert [a.status_code for a in answers] == [200] * 16
        assert len({a.content for a in answers}) == 1
        assert transforms(service) == 1  # summed over both workers
        assert upstream.hits["/photo.jpg"] == 1
