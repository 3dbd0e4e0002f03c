"""picomatch semantics: hostname and pathname globs, manifest regex sources, a differential table.

Next's code: ``matchRemotePattern`` (``packages/next/src/shared/lib/match-remote-pattern.ts``)
tests ``makeRe(hostname)`` and ``makeRe(pathname ?? '**', {dot: true})``; ``writeImagesManifest``
(``packages/next/src/build/index.ts``) writes the same regex sources to ``images-manifest.json``.

``PICOMATCH_CASES`` was produced by running the real picomatch 4.0.4 ``makeRe(glob, {dot}).test``
over the candidate strings below (hostnames with default options, pathnames with ``dot: true``).
"""

from __future__ import annotations

import re

import pytest

from handler.globs import compile_glob
from handler.linear_regex import LinearRegex

HOSTS = (
    "example.com",
    "sub.example.com",
    "a.b.example.com",
    "example.com.",
    ".example.com",
    "Example.com",
    "avatars.sfo1.example.com",
    "avatars.a.b.example.com",
    "more.avatars.x.example.com",
    "avatars..example.com",
    "cdn1.example.com",
    "cdn12.example.com",
    "a.com",
    ".com",
    "ab.com",
    "x-cdn.example.com",
    "-cdn.example.com",
    "img.a.com",
    "img.b.com",
    "img.c.com",
    "a.example.com",
    "b.example.com",
    "[ab].example.com",
    "x.a.com",
    "x.b.com",
    "a.x.b",
    "a.b",
    "x.com",
    "foo.com",
    "s5.x.com",
    "sa.x.com",
    "b.x.com",
    "a.x.com",
    "ex*ample.com",
    "exaample.com",
    "a.{b}.c",
    "a.b.c",
    "127.0.0.1",
    "[::1]",
    "xn--bcher-kva.de",
    "a/b",
)
PATHS = (
    "/",
    "/a/bx",
    "/a/b/x",
    "a/x",
    "/a/b/c/y",
    "/a/y",
    "/a/x/y",
    "/a.png",
    "/b.png",
    "/a/b/b",
    "//",
    "/act123",
    "/act123/",
    "/act123/x/y",
    "/act123x",
    "/act1234/a",
    "/act123/usr4/pic.jpg",
    "/act123/a/b/pic.jpg",
    "/images/a.png",
    "/images/.hidden",
    "/images/a/b.png",
    "/images/a.png/",
    "/images/",
    "/images",
    "/a/b/x.png",
    "/a/c/y.png",
    "/a/d/x.png",
    "/a/b/.png",
    "/a/x.png",
    "/a/xy.png",
    "/a/a.png",
    "/a/[ab].png",
    "/a/c.png",
    "/x",
    "/a/x",
    "//x",
    "a/b/x",
    "x.png",
    "/x.png",
    "/a/b/x.png",
    "/a/b",
    "/a/x/b",
    "/a/x/y/b",
    "/a",
    "/a/",
    "/a/b/c",
    "/a/.png",
    "/a/b.png/",
    "/x/a",
    "/x/a/b",
    "/x",
    "/_next/static/media/a.b.jpg",
    "/_next/static/media",
    "/_next/static/mediax",
    "/a/{b}",
    "/a/b/c/d",
    "/a/a/c",
    "/a/c",
    "/a/d",
    "/.x",
    "/.",
    "/a/b%2F..%2Fc",
    "/a/..",
    "/a/b/c/x",
    "/a/b/c/x/c",
    "/a/b/x/c/y",
    "/a*b",
    "/ab",
    "/]",
    "/a",
    "/b/c/d",
    "/c/d",
    "/a/x/",
    "/ä/x",
    "/a b/x",
    "/%C3%A4/x",
)
SUBDOMAINS = (
    "sub.example.com",
    "a.b.example.com",
    "avatars.sfo1.example.com",
    "avatars.a.b.example.com",
    "more.avatars.x.example.com",
    "avatars..example.com",
    "cdn1.example.com",
    "cdn12.example.com",
    "x-cdn.example.com",
    "-cdn.example.com",
    "a.example.com",
    "b.example.com",
    "[ab].example.com",
)


def all_but(pool: tuple[str, ...], *rejected: str) -> tuple[str, ...]:
    """The candidates picomatch accepts when it accepts nearly all of them."""
    return tuple(s for s in pool if s not in rejected)


# (glob, dot, the candidates picomatch 4.0.4 makeRe(glob, {dot}).test() accepts)
PICOMATCH_CASES = [
    ("example.com", False, ("example.com",)),
    ("*.example.com", False, SUBDOMAINS),
    ("**.example.com", False, SUBDOMAINS),
    (
        "avatars.*.example.com",
        False,
        ("avatars.sfo1.example.com", "avatars.a.b.example.com", "avatars..example.com"),
    ),
    ("**", False, all_but(HOSTS, ".example.com", ".com")),
    ("*", False, all_but(HOSTS, ".example.com", ".com", "a/b")),
    ("cdn?.example.com", False, ("cdn1.example.com",)),
    ("?.com", False, ("a.com", "x.com")),
    ("*-cdn.example.com", False, ("x-cdn.example.com", "-cdn.example.com")),
    ("img.{a,b}.com", False, ("img.a.com", "img.b.com")),
    ("[ab].example.com", False, ("a.example.com", "b.example.com", "[ab].example.com")),
    ("*.{a,b}.com", False, ("img.a.com", "img.b.com", "x.a.com", "x.b.com")),
    ("a.**.b", False, ("a.x.b",)),
    (
        "{*,x}.com",
        False,
        all_but(
            HOSTS,
            "example.com.",
            "a.x.b",
            "a.b",
            "a.{b}.c",
            "a.b.c",
            "127.0.0.1",
            "[::1]",
            "xn--bcher-kva.de",
            "a/b",
        ),
    ),
    ("s[0-9].x.com", False, ("s5.x.com",)),
    ("[^a].x.com", False, ("b.x.com",)),
    ("ex\\*ample.com", False, ("ex*ample.com",)),
    ("a.{b}.c", False, ("a.{b}.c",)),
    ("**", True, all_but(PATHS, "/.", "/a/..")),
    ("/a/**x", True, ("/a/bx", "/a/x")),
    ("/**.png", True, ("/a.png", "/b.png", "/x.png")),
    ("**.png/x", True, ()),
    ("/a/b**", True, ("/a/bx", "/a/b", "/a/b.png/", "/a/b%2F..%2Fc")),
    (
        "{a,**}/x",
        True,
        (
            "/a/b/x",
            "a/x",
            "/x",
            "/a/x",
            "//x",
            "a/b/x",
            "/x",
            "/a/b/c/x",
            "/ä/x",
            "/a b/x",
            "/%C3%A4/x",
        ),
    ),
    ("/a/{**,x}/y", True, ("/a/b/c/y", "/a/x/y", "/a/b/x/c/y")),
    (
        "/*/**",
        True,
        all_but(
            PATHS,
            "/",
            "a/x",
            "/a.png",
            "/b.png",
            "/act123",
            "/act123x",
            "/images",
            "/x",
            "a/b/x",
            "x.png",
            "/x.png",
            "/a",
            "/x",
            "/.x",
            "/.",
            "/a/..",
            "/a*b",
            "/ab",
            "/]",
            "/a",
        ),
    ),
    ("*/**", True, all_but(PATHS, "x.png", "/.", "/a/..")),
    ("/a/*/**/b", True, ("/a/b/b", "/a/x/b", "/a/x/y/b")),
    (
        "/act123/**",
        True,
        ("/act123", "/act123/", "/act123/x/y", "/act123/usr4/pic.jpg", "/act123/a/b/pic.jpg"),
    ),
    ("/act123/*/pic.jpg", True, ("/act123/usr4/pic.jpg",)),
    ("/images/*", True, ("/images/a.png", "/images/.hidden", "/images/a.png/")),
    ("/a/{b,c}/*.png", True, ("/a/b/x.png", "/a/c/y.png", "/a/b/.png", "/a/b/x.png")),
    ("/a/?.png", True, ("/a/x.png", "/a/a.png", "/a/c.png")),
    ("/a/[ab].png", True, ("/a/a.png", "/a/[ab].png")),
    ("/**/x", True, ("/a/b/x", "/a/x", "//x", "/a/b/c/x", "/ä/x", "/a b/x", "/%C3%A4/x")),
    ("**/x.png", True, ("/a/b/x.png", "/a/d/x.png", "/a/x.png", "x.png", "/x.png", "/a/b/x.png")),
    ("/a/**/b", True, ("/a/b/b", "/a/b", "/a/x/b", "/a/x/y/b")),
    (
        "/a/**/**",
        True,
        (
            "/a/bx",
            "/a/b/x",
            "/a/b/c/y",
            "/a/y",
            "/a/x/y",
            "/a/b/b",
            "/a/b/x.png",
            "/a/c/y.png",
            "/a/d/x.png",
            "/a/b/.png",
            "/a/x.png",
            "/a/xy.png",
            "/a/a.png",
            "/a/[ab].png",
            "/a/c.png",
            "/a/x",
            "/a/b/x.png",
            "/a/b",
            "/a/x/b",
            "/a/x/y/b",
            "/a",
            "/a/",
            "/a/b/c",
            "/a/.png",
            "/a/b.png/",
            "/a/{b}",
            "/a/b/c/d",
            "/a/a/c",
            "/a/c",
            "/a/d",
            "/a/b%2F..%2Fc",
            "/a/b/c/x",
            "/a/b/c/x/c",
            "/a/b/x/c/y",
            "/a",
            "/a/x/",
        ),
    ),
    (
        "/a/**.png",
        True,
        ("/a/x.png", "/a/xy.png", "/a/a.png", "/a/[ab].png", "/a/c.png", "/a/.png"),
    ),
    ("/a/*.png", True, ("/a/x.png", "/a/xy.png", "/a/a.png", "/a/[ab].png", "/a/c.png", "/a/.png")),
    ("/x/*/**", True, ("/x/a/b",)),
    ("/_next/static/media/**", True, ("/_next/static/media/a.b.jpg", "/_next/static/media")),
    ("/a/b", True, ("/a/b",)),
    ("/a/{b}", True, ("/a/{b}",)),
    ("/a/[^b]/c", True, ("/a/a/c",)),
    ("/a/[a-c]", True, ("/a/b", "/a/c")),
    ("/.*", True, ("/.x",)),
    (
        "/a/{*.png,b}",
        True,
        ("/a/x.png", "/a/xy.png", "/a/a.png", "/a/[ab].png", "/a/c.png", "/a/b", "/a/.png"),
    ),
    (
        "/a/**/*.png",
        True,
        (
            "/a/b/x.png",
            "/a/c/y.png",
            "/a/d/x.png",
            "/a/b/.png",
            "/a/x.png",
            "/a/xy.png",
            "/a/a.png",
            "/a/[ab].png",
            "/a/c.png",
            "/a/b/x.png",
            "/a/.png",
        ),
    ),
    ("*.png", True, ("x.png",)),
    (
        "/a/b/**/c/**",
        True,
        ("/a/b/c/y", "/a/b/c", "/a/b/c/d", "/a/b/c/x", "/a/b/c/x/c", "/a/b/x/c/y"),
    ),
    ("/a\\*b", True, ("/a*b",)),
    ("/[]a]", True, ("/a", "/a/", "/]", "/a")),
    ("/{a,b/c}/d", True, ("/a/d", "/b/c/d")),
    ("/a/*/", True, ("/a/b.png/", "/a/x/")),
    ("/ä/*", True, ("/ä/x",)),
    ("/a b/*", True, ("/a b/x",)),
]


@pytest.mark.parametrize(("glob", "dot", "accepted"), PICOMATCH_CASES)
def test_matches_picomatch(glob: str, dot: bool, accepted: tuple[str, ...]) -> None:
    regex = compile_glob(glob, dot=dot)
    candidates = PATHS if dot else HOSTS
    assert tuple(s for s in candidates if regex.search(s)) == accepted


@pytest.mark.parametrize(("glob", "dot", "accepted"), PICOMATCH_CASES)
def test_linear_matcher_matches_picomatch(glob: str, dot: bool, accepted: tuple[str, ...]) -> None:
    regex = LinearRegex(compile_glob(glob, dot=dot).pattern)  # what the config matches URLs with
    candidates = PATHS if dot else HOSTS
    assert tuple(s for s in candidates if regex.search(s)) == accepted


# Hostname globs (``makeRe`` with default options), as ``matchRemotePattern`` tests them.
@pytest.mark.parametrize(
    ("glob", "matches", "rejects"),
    [
        ("example.com", ["example.com"], ["sub.example.com", "example.com.", "Example.com"]),
        ("*.example.com", ["a.example.com", "a.b.example.com"], ["example.com"]),
        ("**.example.com", ["a.example.com", "x.y.z.example.com"], ["example.com"]),
        (
            "avatars.*.example.com",
            ["avatars.sfo1.example.com", "avatars.a.b.example.com"],
            ["more.avatars.x.example.com"],
        ),
        ("**", ["example.com", "a.b.c", "127.0.0.1"], []),
        ("*", ["example.com", "a.b.c", "127.0.0.1"], []),
    ],
)
def test_hostname_table(glob: str, matches: list[str], rejects: list[str]) -> None:
    regex = compile_glob(glob, dot=False)
    assert [h for h in matches if regex.search(h)] == matches
    assert [h for h in rejects if regex.search(h)] == []


# Pathname globs (``makeRe`` with ``{dot: true}``), as both pattern matchers test them.
@pytest.mark.parametrize(
    ("glob", "matches", "rejects"),
    [
        ("**", ["/", "/a", "/a/b/c.png", "/.hidden"], ["/a/./b", "/a/../b", "/.."]),
        ("/act123/**", ["/act123", "/act123/x/y"], ["/act123x", "/act1234/a"]),
        ("/act123/*/pic.jpg", ["/act123/usr4/pic.jpg"], ["/act123/a/b/pic.jpg"]),
        ("/images/*", ["/images/a.png", "/images/.hidden"], ["/images/a/b.png"]),
        ("/a/{b,c}/*.png", ["/a/b/x.png", "/a/c/x.png"], ["/a/d/x.png", "/a/b/x.jpg"]),
        ("/a/?.png", ["/a/x.png"], ["/a/xy.png", "/a/.png/"]),
        ("/a/[ab].png", ["/a/a.png", "/a/b.png"], ["/a/c.png"]),
        ("/a/**", ["/a/b%2F..%2Fc"], ["/b"]),
    ],
)
def test_pathname_table(glob: str, matches: list[str], rejects: list[str]) -> None:
    regex = compile_glob(glob, dot=True)
    assert [p for p in matches if regex.search(p)] == matches
    assert [p for p in rejects if regex.search(p)] == []


# Regex sources of picomatch's ``makeRe`` (as in a 16.4.6 images-manifest.json); ours must accept
# exactly the same strings.
@pytest.mark.parametrize(
    ("glob", "dot", "source"),
    [
        ("localhost", False, r"^(?:^(?:localhost)$)$"),
        ("example.com", False, r"^(?:^(?:example\.com)$)$"),
        ("*.example.com", False, r"^(?:(?!\.)(?=.)[^/]*?\.example\.com\/?)$"),
        ("**.example.com", False, r"^(?:(?!\.)(?:(?:(?!(?:^|\/)\.).)*?)\.example\.com\/?)$"),
        (
            "**",
            True,
            r"^(?:(?!(?:^|\/)\.{1,2}(?:\/|$))(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?)\/?)$",
        ),
    ],
)
def test_same_language_as_manifest_source(glob: str, dot: bool, source: str) -> None:
    ours, theirs = compile_glob(glob, dot=dot), re.compile(source)
    extra = ("localhost", "localhost.", "", ".x", "a/", "/a/")
    for candidate in (*HOSTS, *PATHS, *extra):
        assert bool(ours.search(candidate)) == bool(theirs.search(candidate)), candidate


def test_regex_end_anchor_ignores_trailing_newline() -> None:
    assert compile_glob("example.com", dot=False).search("example.com\n") is None


@pytest.mark.parametrize(
    "glob",
    ["", "!/a/**", "/a/@(b|c)", "/a/(b)", "/a|b", '/"a"', "/a/{1..3}", "/a/***", "/[[:alpha:]]"],
)
def test_unsupported_syntax_is_rejected(glob: str) -> None:
    with pytest.raises(ValueError, match="glob"):
        compile_glob(glob, dot=True)


def test_unclosed_brace_is_rejected() -> None:
    with pytest.raises(ValueError, match="unclosed brace"):
        compile_glob("/a/{b,c", dot=True)
