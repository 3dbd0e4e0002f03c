"""LinearRegex gives ``re.search``'s answers (today's semantics) in time linear in the text.

``MANIFEST_CASES`` is picomatch's own answers, read from ``picomatch_tables.json``: Next 16.4.6's
compiled picomatch ``makeRe(glob, {dot})``, its regex source (what ``images-manifest.json`` holds)
and which ``CANDIDATES`` its ``.test`` accepts. ``tests/e2e/picomatch_tables.mjs`` regenerates
them under Node, and ``make e2e`` checks the file against it.
"""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.contract import linear_regex
from handler.contract.linear_regex import LinearRegex
from kit.paths import DATA

TABLES = json.loads((DATA / "picomatch_tables.json").read_text())
CANDIDATES: tuple[str, ...] = tuple(TABLES["linear_regex"]["candidates"])

# (glob, picomatch's regex source, the candidates picomatch accepts), hostname globs made with
# default options and pathname ones with ``{dot: true}``. The last ones are syntax our globs refuse
# but a manifest may hold (an unbounded lookahead is linear too).
MANIFEST_CASES = [
    (c["glob"], c["source"], tuple(c["accepted"])) for c in TABLES["linear_regex"]["cases"]
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
