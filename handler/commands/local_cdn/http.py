"""Requests and responses as CloudFront sees them: ordered, lower-case headers and raw query pairs.

Query names and values stay percent-encoded as the viewer sent them, as in a CloudFront Function's
event; cookies are kept apart from the other headers for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

Pairs = list[tuple[str, str]]


def parse_query(raw: str) -> Pairs:
    """``a=1&b&a=2`` -> ``[("a", "1"), ("b", ""), ("a", "2")]``, nothing decoded."""
    pairs: Pairs = []
    for part in raw.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


def format_query(pairs: Pairs) -> str:
    return "&".join(f"{name}={value}" if value else name for name, value in pairs)


def parse_cookies(headers: Pairs) -> Pairs:
    """Every ``name=value`` of every ``Cookie`` header, in order."""
    cookies: Pairs = []
    for name, value in headers:
        if name == "cookie":
            for part in value.split(";"):
                key, sep, val = part.strip().partition("=")
                if key or sep:
                    cookies.append((key, val))
    return cookies


def format_cookies(cookies: Pairs) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies)


def get(headers: Pairs, name: str) -> str | None:
    """All values of a header, joined as one (``None`` when absent)."""
    values = [v for n, v in headers if n == name]
    return ", ".join(values) if values else None


def without(headers: Pairs, *names: str) -> Pairs:
    return [(n, v) for n, v in headers if n not in names]


@dataclass(frozen=True)
class ViewerRequest:
    method: str
    uri: str  # the path, percent-encoded as received
    query: Pairs = field(default_factory=list)
    headers: Pairs = field(default_factory=list)  # lower-case names; no Cookie header
    cookies: Pairs = field(default_factory=list)
    body: bytes = b""
    client_ip: str = "127.0.0.1"
    client_port: int = 0
    http_version: str = "1.1"
    scheme: str = "http"

    def header(self, name: str) -> str | None:
        return get(self.headers, name)

    def with_uri(self, uri: str) -> ViewerRequest:
        return replace(self, uri=uri)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Pairs = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return get(self.headers, name)

    def with_headers(self, headers: Pairs) -> Response:
        return replace(self, headers=headers)
