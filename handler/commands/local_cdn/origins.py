"""What CloudFront sends an origin, and the app's custom origin, proxied to ``--app-origin``.

The origin request is built by ``edge``; each origin kind (``lambda_url``, ``s3``, here the
app's) only carries it. Timeouts and connection attempts are the origin's own settings
("Origin response timeout", "Connection attempts" in AWS's CloudFront Developer Guide): a
connection that cannot be made after every attempt is a 502, a response that does not come in
time a 504, as CloudFront answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

from handler.commands.local_cdn.http import Pairs, Response
from handler.commands.local_cdn.template import CustomOrigin


@dataclass(frozen=True)
class OriginRequest:
    method: str
    path: str  # the URI after any viewer-request function, percent-encoded
    query: str  # the forwarded query string, without "?"
    headers: Pairs  # exactly what CloudFront forwards, Host included
    body: bytes = b""
    viewer_ip: str = "127.0.0.1"


class OriginFailure(Exception):
    """No usable answer from the origin: CloudFront answers ``status`` (502 or 504) itself."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Fetcher(Protocol):
    """One origin of the distribution, as CloudFront reaches it."""

    @property
    def host(self) -> str:
        """The ``Host`` CloudFront sends when the viewer's is not forwarded."""
        ...

    async def fetch(self, request: OriginRequest) -> Response: ...

    async def aclose(self) -> None: ...


# Bodies are framed by the proxy itself; these never cross it.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class AppFetcher:
    """The default behaviour's origin: the app at ``base_url`` stands in for its domain."""

    def __init__(self, origin: CustomOrigin, base_url: str) -> None:
        self.origin = origin
        self._base = httpx.URL(base_url.rstrip("/"))
        timeout = httpx.Timeout(origin.read_timeout, connect=origin.connect_timeout)
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)

    @property
    def host(self) -> str:
        return self._base.netloc.decode("ascii")

    async def fetch(self, request: OriginRequest) -> Response:
        target = self._base.raw_path.rstrip(b"/") + (self.origin.path + request.path).encode()
        if request.query:
            target += b"?" + request.query.encode()
        headers = [(n, v) for n, v in request.headers if n not in _FRAMING]
        built = self._client.build_request(
            request.method,
            self._base.copy_with(raw_path=target),
            headers=headers,
            content=request.body or None,
        )
        # Only what CloudFront forwards: none of httpx's default request headers.
        forwarded = {n for n, _ in headers} | {"host", "content-length", "transfer-encoding"}
        for name in [n for n in built.headers if n.lower() not in forwarded]:
            del built.headers[name]
        attempts = max(self.origin.attempts, 1)
        for attempt in range(attempts):
            try:
                sent = await self._client.send(built, stream=True)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt + 1 == attempts:
                    raise OriginFailure(502, f"cannot connect to {self.host}: {exc}") from exc
            except httpx.TimeoutException as exc:
                raise OriginFailure(504, f"{self.host} did not answer in time") from exc
            except httpx.HTTPError as exc:
                raise OriginFailure(502, f"{self.host} answered badly: {exc}") from exc
        try:
            body = b"".join([chunk async for chunk in sent.aiter_raw()])
        except httpx.TimeoutException as exc:
            raise OriginFailure(504, f"{self.host} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise OriginFailure(502, f"{self.host} broke off its response: {exc}") from exc
        finally:
            await sent.aclose()
        headers = [(n.lower(), v) for n, v in sent.headers.multi_items()]
        return Response(sent.status_code, headers, body)

    async def aclose(self) -> None:
        await self._client.aclose()
