"""CloudFront's invalidation API on loopback, for ``next-image purge --distribution-id`` through
``AWS_ENDPOINT_URL_CLOUDFRONT``: served by ``next-image local-cdn`` and the tests.

``CreateInvalidation`` and ``GetInvalidation`` of the 2020-05-31 REST API, in the shapes botocore
parses. Paths are applied before the ``201`` (``Completed``: a local edge has no propagation); a
repeated ``CallerReference`` answers the earlier invalidation, or ``409`` with other paths; a bad
path is ``400 InvalidArgument``, an unknown distribution ``404``. Nothing is authenticated."""

from __future__ import annotations

import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn
from xml.sax.saxutils import escape

from handler.commands.loopback import serving

VERSION = "2020-05-31"
NAMESPACE = f"http://cloudfront.amazonaws.com/doc/{VERSION}/"
MAX_PATH = 4000
_CREATE = re.compile(rf"^/{VERSION}/distribution/([^/]+)/invalidation$")
_GET = re.compile(rf"^/{VERSION}/distribution/([^/]+)/invalidation/([^/]+)$")

Apply = Callable[[str, tuple[str, ...]], None]  # distribution id, paths


@dataclass(frozen=True)
class Invalidation:
    id: str
    distribution_id: str
    paths: tuple[str, ...]
    caller_reference: str
    create_time: str

    def xml(self) -> bytes:
        items = "".join(f"<Path>{escape(path)}</Path>" for path in self.paths)
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Invalidation xmlns="{NAMESPACE}">'
            f"<Id>{self.id}</Id><Status>Completed</Status>"
            f"<CreateTime>{self.create_time}</CreateTime><InvalidationBatch>"
            f"<Paths><Quantity>{len(self.paths)}</Quantity><Items>{items}</Items></Paths>"
            f"<CallerReference>{escape(self.caller_reference)}</CallerReference>"
            "</InvalidationBatch></Invalidation>"
        ).encode()


@dataclass
class CloudFrontApi:
    """The running API: its URL and every invalidation it has made, in order."""

    url: str = ""
    invalidations: list[Invalidation] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def xml(self) -> bytes:
        kind = "Sender" if self.status < 500 else "Receiver"
        return (
            f'<?xml version="1.0"?>\n<ErrorResponse xmlns="{NAMESPACE}"><Error>'
            f"<Type>{kind}</Type><Code>{self.code}</Code>"
            f"<Message>{escape(self.message)}</Message></Error>"
            f"<RequestId>{secrets.token_hex(16)}</RequestId></ErrorResponse>"
        ).encode()


def _text(element: ET.Element, path: str) -> str:
    found = element.find(path)
    return (found.text or "") if found is not None else ""


def parse_batch(body: bytes) -> tuple[tuple[str, ...], str]:
    """The paths and caller reference of an ``InvalidationBatch`` document."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ApiError(400, "MalformedXML", f"the request body is not XML: {exc}") from None
    for element in root.iter():  # the namespace is the API's; match on local names
        element.tag = element.tag.rsplit("}", 1)[-1]
    if root.tag != "InvalidationBatch":
        raise ApiError(400, "MalformedInput", f"expected an InvalidationBatch, got {root.tag}")
    paths = tuple(path.text or "" for path in root.findall("./Paths/Items/Path"))
    quantity = _text(root, "./Paths/Quantity")
    if not quantity.isdigit() or int(quantity) != len(paths):
        raise ApiError(400, "InconsistentQuantities", "Paths.Quantity is not the number of paths")
    if not paths:
        raise ApiError(400, "InvalidArgument", "an invalidation needs at least one path")
    for path in paths:
        if not path.startswith("/") or "*" in path[:-1] or len(path) > MAX_PATH:
            raise ApiError(400, "InvalidArgument", f"Your request contains an invalid path {path}")
    reference = _text(root, "./CallerReference")
    if not reference:
        raise ApiError(400, "InvalidArgument", "CallerReference is required")
    return paths, reference


@contextmanager
def cloudfront_api(
    distribution_ids: Collection[str], apply: Apply, host: str = "127.0.0.1", port: int = 0
) -> Iterator[CloudFrontApi]:
    """Serve the API for these distributions on ``host:port`` (0: a free port) until the block
    ends; ``apply`` runs each new invalidation's paths before it is answered."""
    api = CloudFrontApi()

    def create(distribution_id: str, body: bytes) -> Invalidation:
        paths, reference = parse_batch(body)
        with api.lock:
            for earlier in api.invalidations:
                if (earlier.distribution_id, earlier.caller_reference) == (
                    distribution_id,
                    reference,
                ):
                    if earlier.paths == paths:
                        return earlier
                    raise ApiError(
                        409,
                        "InvalidationBatchAlreadyExists",
                        f"CallerReference {reference} was used for other paths",
                    )
            invalidation = Invalidation(
                "I" + secrets.token_hex(7).upper(),
                distribution_id,
                paths,
                reference,
                time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            )
            apply(distribution_id, paths)
            api.invalidations.append(invalidation)
        return invalidation

    def find(distribution_id: str, invalidation_id: str) -> Invalidation:
        with api.lock:
            for invalidation in api.invalidations:
                if (invalidation.distribution_id, invalidation.id) == (
                    distribution_id,
                    invalidation_id,
                ):
                    return invalidation
        raise ApiError(404, "NoSuchInvalidation", "The specified invalidation does not exist.")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            match = _CREATE.match(self.path.split("?", 1)[0])
            self._answer(lambda: self._create(match, body), 201)

        def do_GET(self) -> None:
            match = _GET.match(self.path.split("?", 1)[0])
            self._answer(lambda: self._get(match), 200)

        def _create(self, match: re.Match[str] | None, body: bytes) -> Invalidation:
            if match is None:
                self._not_found()
            self._known(match.group(1))
            return create(match.group(1), body)

        def _get(self, match: re.Match[str] | None) -> Invalidation:
            if match is None:
                self._not_found()
            self._known(match.group(1))
            return find(match.group(1), match.group(2))

        def _known(self, distribution_id: str) -> None:
            if distribution_id not in distribution_ids:
                raise ApiError(
                    404, "NoSuchDistribution", "The specified distribution does not exist."
                )

        def _not_found(self) -> NoReturn:
            raise ApiError(404, "NotFound", f"local-cdn's CloudFront API has no {self.path}")

        def _answer(self, work: Callable[[], Invalidation], status: int) -> None:
            try:
                invalidation = work()
            except ApiError as error:
                self._send(error.status, error.xml())
                return
            location = f"{api.url}/{VERSION}/distribution/{invalidation.distribution_id}"
            self._send(status, invalidation.xml(), location + f"/invalidation/{invalidation.id}")

        def _send(self, status: int, body: bytes, location: str | None = None) -> None:
            self.send_response(status)
            self.send_header("content-type", "text/xml")
            self.send_header("x-amz-request-id", secrets.token_hex(16))
            if location is not None:
                self.send_header("location", location)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    with serving(ThreadingHTTPServer((host, port), Handler)) as api.url:
        yield api
