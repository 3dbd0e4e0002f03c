"""picomatch semantics: hostname and pathname globs, manifest regex sources, a differential table.

Next's code: ``matchRemotePattern`` (``packages/next/src/shared/lib/match-remote-pattern.ts``)
tests ``makeRe(hostname)`` and ``makeRe(pathname ?? '**', {dot: true})``; ``writeImagesManifest``
(``packages/next/src/build/index.ts``) writes the same regex sources to ``images-manifest.json``.

``PICOMATCH_CASES`` and ``MANIFEST_SOURCES`` are picomatch's own answers, read from
``picomatch_tables.json``: Next 16.4.6's compiled picomatch ``makeRe(glob, {dot})``, its ``.test``
over the candidate strings (hostnames with default options, pathnames with ``dot: true``) and its
``.source``. ``tests/e2e/picomatch_tables.mjs`` regenerates them under Node, and ``make e2e``
checks the file against it.
"""

from __future__ import annotations

import json
import re

import pytest

from handler.contract.globs import compile_glob
from handler.contract.linear_regex import LinearRegex
from kit.paths import DATA

TABLES = json.loads((DATA / "picomatch_tables.json").read_text())["globs"]
HOSTS: tuple[str, ...] = tuple(TABLES["hosts"])
PATHS: tuple[str, ...] = tuple(TABLES["paths"])
# (glob, dot, the candidates picomatch's makeRe(glob, {dot}).test() accepts: of PATHS with dot,
# of HOSTS without)
PICOMATCH_CASES = [(c["glob"], c["dot"], tuple(c["accepted"])) for c in TABLES["cases"]]
# (glob, dot, picomatch's makeRe(glob, {dot}).source, as in a 16.4.6 images-manifest.json)
MANIFEST_SOURCES = [(c["glob"], c["dot"], c["source"]) for c in TABLES["sources"]]


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


# Regex sources of picomatch's ``makeRe``: ours must accept exactly the same strings.
@pytest.mark.parametrize(("glob", "dot", "source"), MANIFEST_SOURCES)
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
