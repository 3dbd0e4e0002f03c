"""hasRemoteMatch / hasLocalMatch on WHATWG-parsed URLs.

Next's code: ``packages/next/src/shared/lib/match-remote-pattern.ts`` and
``packages/next/src/shared/lib/match-local-pattern.ts``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import quote

import ada_url
import pytest

from handler.contract.config import ImagesConfig, RemotePattern, load_images_config
from handler.contract.errors import ImageError
from handler.contract.linear_regex import LinearRegex
from handler.contract.patterns import MAX_HOSTNAME_LENGTH, has_local_match, has_remote_match
from handler.contract.validate import validate_params


def remote(patterns: list[object], url: str, domains: tuple[str, ...] = ()) -> bool:
    config = load_images_config(json.dumps({"remotePatterns": patterns}))
    return has_remote_match(domains, config.remote_patterns, ada_url.URL(url))


@pytest.mark.parametrize(
    ("pattern", "url", "expected"),
    [
        ({"hostname": "example.com"}, "https://example.com/a", True),
        ({"hostname": "example.com"}, "http://EXAMPLE.COM:8080/a?x", True),
        ({"hostname": "example.com"}, "https://sub.example.com/a", False),
        ({"hostname": "Example.com"}, "https://Example.com/a", False),  # host is lower-cased
        ({"hostname": "*.example.com"}, "https://a.b.example.com/", True),
        ({"hostname": "xn--bcher-kva.de"}, "https://bücher.de/", True),
        ({"hostname": "127.0.0.1"}, "http://0x7f.1/", True),
        ({"protocol": "https", "hostname": "h"}, "http://h/", False),
        ({"protocol": "https:", "hostname": "h"}, "https://h/", True),
        ({"hostname": "h", "port": ""}, "https://h:443/", True),
        ({"hostname": "h", "port": ""}, "https://h:8443/", False),
        ({"hostname": "h", "port": "8443"}, "https://h:8443/", True),
        ({"hostname": "h", "search": ""}, "https://h/x?", True),
        ({"hostname": "h", "search": ""}, "https://h/x?a=1", False),
        ({"hostname": "h", "search": "?a=1"}, "https://h/x?a=1", True),
        ({"hostname": "h"}, "https://h/x?anything", True),
        ({"hostname": "h", "pathname": "/act123/**"}, "https://h/act123", True),
        ({"hostname": "h", "pathname": "/act123/**"}, "https://h/act123/../x", False),
        ({"hostname": "h", "pathname": "/a/**"}, "https://h/a/b%2F..%2Fc", True),
        ({"hostname": "h", "pathname": "/a/*"}, "https://h/a/%2e%2e/b", False),
        # URL-string patterns behave like Next's URL objects: port '' and search ''
        ("https://example.com/account/**", "https://example.com/account/a.png", True),
        ("https://example.com/account/**", "https://example.com/account/a.png?v=1", False),
        ("https://example.com/account/**", "https://example.com:8443/account/a", False),
        ("https://example.com/account/**", "http://example.com/account/a", False),
        ("https://example.com", "https://example.com/", True),
        ("https://example.com", "https://example.com/a.png", False),
    ],
)
def test_remote_patterns(pattern: object, url: str, expected: bool) -> None:
    assert remote([pattern], url) is expected


def test_any_pattern_may_match() -> None:
    patterns = [{"hostname": "a.com"}, {"hostname": "b.com", "pathname": "/img/**"}]
    assert remote(patterns, "https://b.com/img/x.png")
    assert not remote(patterns, "https://b.com/x.png")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://example.com:21/x?y", True),
        ("https://EXAMPLE.com/", True),
        ("https://example.com./", False),
        ("https://sub.example.com/", False),
    ],
)
def test_domains_are_exact_hostname_matches(url: str, expected: bool) -> None:
    assert remote([], url, domains=("example.com",)) is expected


LONGEST_HOSTNAME = ".".join(["a" * 63] * 3 + ["b" * 61])


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [(LONGEST_HOSTNAME, True), ("c" + LONGEST_HOSTNAME, False), ("x" * 2101, False)],
)
def test_hostnames_longer_than_dns_allows_match_nothing(hostname: str, expected: bool) -> None:
    assert len(LONGEST_HOSTNAME) == MAX_HOSTNAME_LENGTH == 253
    url = f"https://{hostname}/a.png"
    assert remote([{"hostname": "**"}], url) is expected
    assert remote([], url, domains=(hostname,)) is expected


def test_a_long_hostname_is_refused_before_any_pattern_runs() -> None:
    seen: list[str] = []

    class Spy(LinearRegex):
        def search(self, text: str) -> bool:
            seen.append(text)
            return True

    pattern = RemotePattern(Spy("h"), Spy("/"))
    assert not has_remote_match((), [pattern], ada_url.URL("https://" + "h" * 254 + "/a.png"))
    assert seen == []
    assert has_remote_match((), [pattern], ada_url.URL("https://" + "h" * 253 + "/a.png"))
    assert seen == ["h" * 253, "/a.png"]


def test_manifest_regex_patterns_match() -> None:
    manifest = {
        "version": 1,
        "images": {
            "remotePatterns": [
                {
                    "protocol": "http",
                    "hostname": "^(?:^(?:localhost)$)$",
                    "port": "3918",
                    "pathname": r"^(?:(?!(?:^|\/)\.{1,2}(?:\/|$))"
                    r"(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?)\/?)$",
                }
            ]
        },
    }
    config = load_images_config(json.dumps(manifest))
    match = [
        has_remote_match((), config.remote_patterns, ada_url.URL(u))
        for u in (
            "http://localhost:3918/a/b.png",
            "http://localhost:3919/a/b.png",
            "https://localhost:3918/a/b.png",
            "http://localhost.x:3918/a",
        )
    ]
    assert match == [True, False, False, False]


DEFAULT_LOCAL = load_images_config(None).local_patterns
ASSETS = load_images_config('{"localPatterns": [{"pathname": "/assets/**"}]}').local_patterns
NO_QUERY = load_images_config(
    '{"localPatterns": [{"pathname": "/assets/**", "search": ""}]}'
).local_patterns


@pytest.mark.parametrize(
    ("patterns", "url", "expected"),
    [
        (DEFAULT_LOCAL, "/a.png", True),
        (DEFAULT_LOCAL, "/deep/a b/ü.png", True),
        (DEFAULT_LOCAL, "/a.png?v=1", False),
        (DEFAULT_LOCAL, "/a.png?", True),
        (None, "/a.png?v=1", True),
        (ASSETS, "/assets/a.png?v=1", True),  # no search key: any query
        (ASSETS, "/assets/../secret.png", False),
        (ASSETS, "/assets/%2e%2e/secret.png", False),
        (ASSETS, "/other/a.png", False),
        (ASSETS, "/_next/static/media/a.png", True),  # appended by normalisation
        (ASSETS, "/_next/static/immutable/media/a.png", True),
        (ASSETS, "/_next/static/media/a.png?v=1", False),
        (NO_QUERY, "/assets/a.png", True),
        (NO_QUERY, "/assets/a.png?v=1", False),
    ],
)
def test_local_patterns(patterns: object, url: str, expected: bool) -> None:
    assert has_local_match(patterns, url) is expected  # type: ignore[arg-type]


def test_local_match_raises_on_unparsable_url() -> None:
    with pytest.raises(ValueError):
        has_local_match(DEFAULT_LOCAL, "/\\[")


# Hostile configs x hostile inputs, at the longest input accepted (`url` is at most 3072 UTF-16
# units). With `re`, `*-*-*.example.com` took 21 s to refuse 2,101 dashes. Every call must now take
# a few ms: 20 ms is the bound, the best of three calls on three different texts (so no per-text
# cache helps), because CI shares two cores.
LONGEST_URL = 3072
CALL_BUDGET = 0.020
HOSTILE_HOSTNAMES = [
    "*-*-*.example.com",
    "*-*-*-*-*.example.com",
    "**.example.com",
    "*.*.*.*.*.*.*.*.example.com",
    "**-**-**-**.example.com",
]
HOSTILE_PATHNAMES = [
    "/img/*-*-*-*.png",
    "**",
    "/**/**/**/**/x.png",
    "/a/**/b/**/c/**/d/**",
    "**/*-*-*-*-*-*.png",
    "/*/*/*/*/*/*/*/*.png",
    "/{*,**}-{*,**}/{a,*}.png",
]
# images-manifest.json holds regex sources: nested stars, and picomatch's own negation.
HOSTILE_SOURCES = [
    r"^(?:(?:[^/]*?)*?(?:[^/]*?-)*?x)$",
    r"^(?:(?:(?:a|-|\.)*)*(?:-|\.)*y)$",
    r"^(?:\/(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?\/)*(?:[^/]*?-)+\.png)$",
    r"^(?!^(?:\/a(?:\/(?!\.{1,2}(?:\/|$))(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?)|$))$).*$",
]
UNITS = ["-", "a-", ".", "-.", "./", "a/", "/.", "/", "-/a", "..-"]


def hostile(length: int, prefix: str = "") -> list[list[str]]:
    """Per hostile shape, three different texts of exactly ``length`` characters."""
    body = length - len(prefix) - 1
    return [[prefix + (unit * body)[:body] + end for end in "xyz"] for unit in UNITS]


def best_of_3(call: Callable[[str], object], texts: list[str]) -> float:
    """The CPU time of this thread, which is what the event loop would be blocked for; wall time
    on a shared 2-core machine also counts the time other processes held the CPU."""
    timings = []
    for text in texts:
        start = time.thread_time()
        call(text)
        timings.append(time.thread_time() - start)
    return min(timings)


@pytest.mark.parametrize("glob", HOSTILE_HOSTNAMES)
def test_hostile_hostname_globs_match_in_linear_time(glob: str) -> None:
    (pattern,) = load_images_config(
        json.dumps({"remotePatterns": [{"hostname": glob}]})
    ).remote_patterns
    for texts in hostile(2101):  # the length: longer than DNS allows, yet linear
        assert best_of_3(pattern.hostname.search, texts) < CALL_BUDGET, texts[0][:20]


@pytest.mark.parametrize("glob", HOSTILE_PATHNAMES)
def test_hostile_pathname_globs_match_in_linear_time(glob: str) -> None:
    config = load_images_config(json.dumps({"localPatterns": [{"pathname": glob}]}))
    pathname = config.local_patterns[0].pathname  # type: ignore[index]
    for prefix in ("/", "/img/", "/a/"):
        for texts in hostile(LONGEST_URL, prefix):
            assert best_of_3(pathname.search, texts) < CALL_BUDGET, texts[0][:20]


@pytest.mark.parametrize("source", HOSTILE_SOURCES)
def test_hostile_manifest_sources_match_in_linear_time(source: str) -> None:
    manifest = {"version": 1, "images": {"localPatterns": [{"pathname": source}]}}
    pathname = load_images_config(json.dumps(manifest)).local_patterns[0].pathname  # type: ignore[index]
    for prefix in ("/", "/a/"):
        for texts in hostile(LONGEST_URL, prefix):
            assert best_of_3(pathname.search, texts) < CALL_BUDGET, texts[0][:20]


def validate_time(config: ImagesConfig, urls: list[str]) -> float:
    def validate(url: str) -> None:
        try:
            validate_params(f"url={quote(url, safe='/:')}&w=640&q=75", None, config)
        except ImageError as err:
            assert err.message == '"url" parameter is not allowed'

    return best_of_3(validate, urls)


@pytest.mark.parametrize("hostname", HOSTILE_HOSTNAMES)
def test_validate_params_stays_fast_on_hostile_remote_patterns(hostname: str) -> None:
    patterns = [{"hostname": hostname, "pathname": glob} for glob in HOSTILE_PATHNAMES]
    config = load_images_config(json.dumps({"remotePatterns": patterns}))
    for host in ("-" * 2101, "a-" * 126 + "a", "a-b-c-d-e.example.com"):
        for paths in hostile(LONGEST_URL - len(f"https://{host}"), "/img/"):
            urls = [f"https://{host}{path}" for path in paths]
            assert validate_time(config, urls) < CALL_BUDGET, urls[0][:40]


def test_validate_params_stays_fast_on_hostile_local_patterns() -> None:
    patterns = [{"pathname": glob} for glob in HOSTILE_PATHNAMES]
    config = load_images_config(json.dumps({"localPatterns": patterns}))
    for prefix in ("/x", "/img/", "/a/"):  # not "/": "//" would be refused before any pattern
        for urls in hostile(LONGEST_URL, prefix):
            assert validate_time(config, urls) < CALL_BUDGET, urls[0][:20]
