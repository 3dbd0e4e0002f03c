"""LinearRegex gives ``re.search``'s answers (today's semantics) in time linear in the text.

``MANIFEST_CASES`` was produced by running picomatch 4.0.4 ``makeRe(glob, {dot})``: its regex
source (what ``images-manifest.json`` holds) and which ``CANDIDATES`` its ``.test`` accepts.
"""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler import linear_regex
from handler.linear_regex import LinearRegex

CANDIDATES = (
    "/a/b",
    "/a/c",
    "/a/b.png",
    "/a/x.png",
    "/a/x.jpg",
    "/a/.x",
    "/a/./b",
    "/a/../b",
    "/a",
    "/a/",
    "/a/b/c",
    "/a/b/b/x",
    "/a/x/b/y",
    "/x",
    "/a/bb",
    "/a/bc.png",
    "/img/a-b-c-d.png",
    "/img/a-b-c.png",
    "/img/.a-b-c-d.png",
    "/2",
    "/a/2",
    "a.b-c-d.example.com",
    "a-b-c.example.com",
    "-.-.-.example.com",
    "x.example.com",
    "example.com",
    "cdn1.example.com",
    "img.a.com",
    "abc",
    "ab c",
)
HOSTS = tuple(c for c in CANDIDATES if not c.startswith("/"))
PATHS = tuple(c for c in CANDIDATES if c.startswith("/"))

# (glob, picomatch's regex source, the candidates picomatch accepts)
MANIFEST_CASES = [
    (
        "*-*-*.example.com",
        r"^(?:(?!\.)(?=.)[^/]*?-[^/]*?-[^/]*?\.example\.com)$",
        ("a.b-c-d.example.com", "a-b-c.example.com", "-.-.-.example.com"),
    ),
    (
        "**.example.com",
        r"^(?:(?!\.)(?:(?:(?!(?:^|\/)\.).)*?)\.example\.com\/?)$",
        tuple(c for c in HOSTS if c.endswith(".example.com")),
    ),
    ("cdn?.example.com", r"^(?:^(?:cdn[^/]\.example\.com)$)$", ("cdn1.example.com",)),
    ("img.{a,b}.com", r"^(?:img\.(a|b)\.com)$", ("img.a.com",)),
    (
        "**",
        r"^(?:(?!(?:^|\/)\.{1,2}(?:\/|$))(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?)\/?)$",
        tuple(c for c in CANDIDATES if c not in ("/a/./b", "/a/../b")),
    ),
    (
        "/img/*-*-*-*.png",
        r"^(?:\/img\/(?!\.{1,2}(?:\/|$))(?=.)[^/]*?-[^/]*?-[^/]*?-[^/]*?\.png)$",
        ("/img/a-b-c-d.png", "/img/.a-b-c-d.png"),
    ),
    (
        "/a/**/b/**",
        r"^(?:\/a(?:\/(?!\.{1,2}(?:\/|$))(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?)\/|\/|$)b"
        r"(?:\/(?!\.{1,2}(?:\/|$))(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?)|$))$",
        ("/a/b", "/a/b/c", "/a/b/b/x", "/a/x/b/y"),
    ),
    ("**/x", r"^(?:(?:^|\/|(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?)\/)x)$", ("/a/b/b/x", "/x")),
    (
        "/a/**/*.{png,jpg}",
        r"^(?:\/a(?:\/(?!\.{1,2}(?:\/|$))(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?)\/|\/|$)"
        r"(?!\.{1,2}(?:\/|$))(?=.)[^/]*?\.(png|jpg))$",
        ("/a/b.png", "/a/x.png", "/a/x.jpg", "/a/bc.png"),
    ),
    (
        "/a/*/**",
        r"^(?:\/a\/(?!\.{1,2}(?:\/|$))(?=.)[^/]*?\/(?!\.{1,2}(?:\/|$))"
        r"(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?))$",
        ("/a/b/c", "/a/b/b/x", "/a/x/b/y"),
    ),
    # Syntax our globs refuse but a manifest may hold: an unbounded lookahead is linear too.
    (
        "!/a/**",
        r"^(?!^(?:\/a(?:\/(?!\.{1,2}(?:\/|$))(?:(?:(?!(?:^|\/)\.{1,2}(?:\/|$)).)*?)|$))$).*$",
        tuple(c for c in CANDIDATES if not c.startswith("/a") or c in ("/a/./b", "/a/../b")),
    ),
    (
        "/a/!(*.png)",
        r"^(?:\/a\/(?:(?!(?:[^/]*?\.png)$))[^/]*?)$",
        ("/a/b", "/a/c", "/a/x.jpg", "/a/.x", "/a/", "/a/bb", "/a/2"),
    ),
    (
        "/a/+(b|c)*",
        r"^(?:\/a\/(?:b|c)+[^/]*?\/?)$",
        ("/a/b", "/a/c", "/a/b.png", "/a/bb", "/a/bc.png"),
    ),
    ("/a/{1..3}", r"^(?:\/a\/[1-3])$", ("/a/2",)),
    ("/[[:alpha:]]", r"^(?:\/[a-zA-Z]\/?)$", ("/a", "/a/", "/x")),
    ("a\\bc", r"^(?:^(?:a\bc)$)$", ()),
]


@pytest.mark.parametrize(("glob", "source", "accepted"), MANIFEST_CASES)
def test_manifest_sources_match_picomatch(
    glob: str, source: str, accepted: tuple[str, ...]
) -> None:
    regex = LinearRegex(source)
    assert tuple(c for c in CANDIDATES if regex.search(c)) == accepted


@pytest.mark.parametrize(("glob", "source", "accepted"), MANIFEST_CASES)
def test_manifest_sources_match_re(glob: str, source: str, accepted: tuple[str, ...]) -> None:
    regex, oracle = LinearRegex(source), re.compile(source)
    for text in (*CANDIDATES, "", "/", "a\nb/x", "/a/b\n", "\n"):
        assert regex.search(text) is (oracle.search(text) is not None), text


ATOMS = (
    "a",
    "b",
    r"\.",
    "/",
    ".",
    "[^/]",
    "[ab]",
    r"[^a-c\d]",
    r"\d",
    r"\w",
    r"\s",
    r"\n",
    "^",
    "$",
    r"\A",
    r"\Z",
    r"\b",
    r"\B",
    "(?<=a)",
    "(?<!/)",
    r"(?<=\.\w)",
)


def _regexes() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map(lambda ab: f"(?:{ab[0]}|{ab[1]})"),
            st.tuples(inner, st.sampled_from(["*", "*?", "+", "?", "{2}", "{0,3}?"])).map(
                lambda item: f"(?:{item[0]}){item[1]}"
            ),
            inner.map(lambda body: f"({body})"),
            st.tuples(st.sampled_from(["(?=", "(?!"]), inner).map(lambda la: f"{la[0]}{la[1]})"),
        )

    return st.recursive(st.sampled_from(ATOMS), extend, max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(_regexes(), st.lists(st.text(alphabet="ab./-\n1 _é", max_size=10), max_size=12))
def test_agrees_with_re(source: str, texts: list[str]) -> None:
    regex, oracle = LinearRegex(source), re.compile(source)
    for text in texts:
        assert regex.search(text) is (oracle.search(text) is not None), (source, text)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab./-", max_size=40))
def test_lookbehinds_of_fixed_width(text: str) -> None:
    source = r"(?<=a\.)b|(?<![ab]/)-(?<=\.-)|^(?<!a)\.(?<=^\.)"
    assert LinearRegex(source).search(text) is (re.search(source, text) is not None)


@pytest.mark.parametrize(
    "source",
    [r"(a)\1", r"(a)?(?(1)b|c)", r"(?>a*)a", r"a*+", r"(?i)a", r"(?i:a)b", r"(?s).", "a{20000}"],
)
def test_constructs_without_a_linear_match_are_refused(source: str) -> None:
    with pytest.raises(ValueError):
        LinearRegex(source)


def test_bad_syntax_is_re_error() -> None:
    with pytest.raises(re.error):
        LinearRegex("(")


def test_a_full_cache_starts_over_with_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    # "a" then 12 characters: a DFA needs 2**13 states for it, far more than the cache keeps.
    monkeypatch.setattr(linear_regex, "_MAX_CACHED", 64)
    source = "^(?:[ab]*a[ab]{12})$"
    regex, oracle, rng = LinearRegex(source), re.compile(source), random.Random(7)
    for _ in range(50):
        text = "".join(rng.choice("ab") for _ in range(rng.randint(10, 60)))
        assert regex.search(text) is (oracle.search(text) is not None)
    assert regex._dfa._cached <= 64


def test_equal_sources_compare_equal_as_re_patterns_do() -> None:
    assert LinearRegex("^a$") == LinearRegex("^a$")
    assert LinearRegex("^a$") != LinearRegex("^b$")
    assert len({LinearRegex("^a$"), LinearRegex("^a$")}) == 1
