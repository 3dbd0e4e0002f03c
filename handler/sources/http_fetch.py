"""What the HTTP sources share: one hop's GET under a hard deadline, and a decoded, capped body.

Next decodes ``Content-Encoding`` itself and counts the DECODED bytes against
``maximumResponseBody`` (``decodeResponseBody`` and ``fetchExternalImage`` in
``packages/next/src/server/image-optimizer.ts``), so httpx's own decoding is bypassed: raw chunks
go through our decoders with bounded output, and the download stops as soon as the cap is passed.
"""

from __future__ import annotations

import functools
import ssl
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import anyio
import brotli

if TYPE_CHECKING:  # httpx loads on the first fetch: its import (and its CLI's) would cost the
    import httpx  # Lambda init phase ~40 ms, and most requests never fetch

from handler.contract import errors
from handler.contract.errors import ImageError
from handler.model import Upstream

_MAX_CODINGS = 5
_CHUNK = 64 * 1024  # output bound per decoder step, so a compression bomb never balloons memory


class _DecodeError(Exception):
    """A corrupt or truncated content-coded body."""


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying context per process: building it (certifi load) costs tens of ms."""
    import httpx

    return httpx.create_ssl_context()


def _caused_by_tls(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


@asynccontextmanager
async def hop_deadline(timeout: float) -> AsyncIterator[None]:
    """Bound one hop (DNS, connect, headers, whole body) and turn network failures into errors.

    Timeouts are 504 as in Next; refused/reset connections are 502 and worth a retry (Next: 500).
    A TLS failure is 502 too, but retrying cannot fix a bad certificate.
    """
    import httpx

    try:
        with anyio.fail_after(timeout):
            yield
    except TimeoutError as exc:
        raise ImageError(504, errors.UPSTREAM_TIMEOUT, category="timeout", transient=True) from exc
    except httpx.TransportError as exc:
        transient = not _caused_by_tls(exc)
        raise ImageError(
            502, errors.UPSTREAM_INVALID, category="upstream", transient=transient
        ) from exc


@asynccontextmanager
async def open_get(
    candidates: Sequence[httpx.URL],
    headers: Mapping[str, str],
    *,
    sni_hostname: str | None = None,
) -> AsyncIterator[httpx.Response]:
    """GET the first candidate URL that accepts a connection; stream the response, then close.

    The transport is used without a client: exactly ``headers`` are sent (plus ``Host`` when
    absent), with no client default, cookie, redirect handling or environment proxy. Each hop gets
    its own connection, so one is never reused for another hostname sharing a pinned address.
    """
    import httpx

    extensions = {"sni_hostname": sni_hostname} if sni_hostname else {}
    async with httpx.AsyncHTTPTransport(verify=_ssl_context(), trust_env=False) as transport:

        async def send(url: httpx.URL) -> httpx.Response:
            request = httpx.Request("GET", url, headers=headers, extensions=extensions)
            response = await transport.handle_async_request(request)
            response.request = request
            return response

        async def send_first() -> httpx.Response:
            for url in candidates[:-1]:
                try:
                    return await send(url)
                except httpx.ConnectError:
                    continue  # like Node's lookup-all: try the next checked address
            return await send(candidates[-1])

        response = await send_first()
        try:
            yield response
        finally:
            await response.aclose()


def first_header(response: httpx.Response, name: str) -> str | None:
    """The first value of a header Node keeps only once (``etag``, ``location``)."""
    values = response.headers.get_list(name)
    return values[0] if values else None


async def read_upstream(
    response: httpx.Response, *, conditional: bool, limit: int, message: str
) -> Upstream:
    """Turn a final (non-redirect) response into an ``Upstream`` or Next's error for it.

    A 304 is only acceptable as the answer to our own ``If-None-Match``. An upstream 4xx is
    passed on, as Next does; an upstream 5xx is answered 502 (Next passes it on too, but then a
    500 could be the upstream's or ours) and marked transient, worth a retry. Any other status
    (a 3xx, LinkedIn's 999) is a protocol fault that ``ImageError`` answers 502, not retried.
    """
    cache_control = response.headers.get("cache-control")
    etag = first_header(response, "etag")
    status = response.status_code
    if status == 304 and conditional:
        return Upstream(b"", cache_control, etag, not_modified=True)
    if not 200 <= status < 300:
        failing = 500 <= status <= 599
        raise ImageError(
            502 if failing else status, message, category="upstream", transient=failing
        )
    body = await _read_body(response, limit=limit, message=message)
    return Upstream(body, cache_control, etag)


async def _read_body(response: httpx.Response, *, limit: int, message: str) -> bytes:
    """The decoded body: 413 past ``limit`` (equal is fine), 400 when empty, 502 when corrupt.

    A corrupt coding is the upstream's fault (Next: 500, which we keep for our own bugs).
    """
    stages = _decoders_for(response.headers.get("content-encoding"), message)
    body = bytearray()
    try:
        async with aclosing(_decode(response.aiter_raw(), stages)) as pieces:
            async for piece in pieces:
                body += piece
                if len(body) > limit:
                    raise ImageError(413, message, category="upstream")
    except _DecodeError as exc:
        raise ImageError(502, message, category="upstream") from exc
    if not body:
        raise ImageError(400, message, category="upstream")
    return bytes(body)


class _Decoder(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def finish(self) -> Iterator[bytes]: ...


def _decoders_for(content_encoding: str | None, message: str) -> list[_Decoder]:
    """Decoders in the order to apply them; none if any coding is unknown (Next passes it raw)."""
    if content_encoding is None or not content_encoding.strip():
        return []
    codings = [coding.strip() for coding in content_encoding.lower().split(",")]
    if len(codings) > _MAX_CODINGS:
        raise ImageError(400, message, category="upstream")
    if any(coding not in _DECODERS for coding in codings):
        return []
    return [_DECODERS[coding]() for coding in reversed(codings)]


async def _decode(
    chunks: AsyncIterator[bytes], stages: Sequence[_Decoder]
) -> AsyncGenerator[bytes, None]:
    async for chunk in chunks:
        for piece in _through(stages, chunk):
            yield piece
    for index, stage in enumerate(stages):
        for piece in stage.finish():
            for out in _through(stages[index + 1 :], piece):
                yield out


def _through(stages: Sequence[_Decoder], data: bytes) -> Iterator[bytes]:
    if not stages:
        if data:
            yield data
        return
    for piece in stages[0].feed(data):
        yield from _through(stages[1:], piece)


class _ZlibDecoder:
    """Streaming inflate with bounded output per step.

    gzip: like Node, a further member starting with 0x1f is decoded too. deflate: zlib-wrapped or
    raw, chosen as Next does by the first byte's low nibble (8 means zlib).
    """

    def __init__(self, *, gzip: bool) -> None:
        self._gzip = gzip
        self._inflater: zlib._Decompress | None = None

    def _start(self, first_byte: int) -> zlib._Decompress:
        if self._gzip:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        wrapped = first_byte & 0x0F == 0x08
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data:
                if self._inflater is not None and self._inflater.eof:
                    if not (self._gzip and data[0] == 0x1F):
                        return  # bytes after the end of the stream are ignored, as Node does
                    self._inflater = None
                inflater = self._inflater = self._inflater or self._start(data[0])
                out = inflater.decompress(data, _CHUNK)
                while out:
                    yield out
                    out = (
                        b""
                        if inflater.eof
                        else inflater.decompress(inflater.unconsumed_tail, _CHUNK)
                    )
                data = inflater.unused_data
        except zlib.error as exc:
            raise _DecodeError(str(exc)) from exc

    def finish(self) -> Iterator[bytes]:
        """Raise if the stream was cut short; an empty body is left to the emptiness check."""
        if self._inflater is not None and not self._inflater.eof:
            raise _DecodeError("unexpected end of file")
        yield from ()


class _BrotliDecoder:
    def __init__(self) -> None:
        self._decompressor = brotli.Decompressor()
        self._fed = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._fed = True
        try:
            out = self._decompressor.process(data, output_buffer_limit=_CHUNK)
            while out:
                yield out
                out = self._decompressor.process(b"", output_buffer_limit=_CHUNK)
        except brotli.error as exc:
            raise _DecodeError(str(exc)) from exc

    def finish(self) -> Iterator[bytes]:
        if self._fed and not self._decompressor.is_finished():
            raise _DecodeError("unexpected end of file")
        yield from ()


_DECODERS: dict[str, Callable[[], _Decoder]] = {
    "gzip": functools.partial(_ZlibDecoder, gzip=True),
    "x-gzip": functools.partial(_ZlibDecoder, gzip=True),
    "deflate": functools.partial(_ZlibDecoder, gzip=False),
    "br": _BrotliDecoder,
}
