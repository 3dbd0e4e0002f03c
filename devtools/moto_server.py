"""moto on loopback for the tests, the benches and the layer check: S3 (and the other services
moto stands in for) over real HTTP, and boto3 clients for such a loopback endpoint."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server on a free loopback port until the block ends, its per-request access log
    quiet; yields its URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def loopback_client(service: str, endpoint: str) -> Any:
    """A boto3 client for ``service`` at ``endpoint`` (moto, local-cdn's CloudFront API), in
    us-east-1 with the test credentials."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
