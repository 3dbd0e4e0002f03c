"""Every relative link and ``#anchor`` in README.md, CONTRIBUTING.md and docs/*.md resolves.

A link to a file must name one that exists; an anchor must be a heading's slug on the page it
points at, by GitHub's rules: lowercase, punctuation dropped except ``-`` and ``_``, spaces to
``-``, and a repeated heading's slug suffixed ``-1``, ``-2``… Links in code are not links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kit.paths import REPO

PAGES = sorted([REPO / "README.md", REPO / "CONTRIBUTING.md", *(REPO / "docs").glob("*.md")])

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, …


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (its inline code and links reduced to their text)."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's slug on ``page``, duplicates numbered as GitHub numbers them."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The targets of the page's links, outside code; a link's text may wrap onto another line."""
    prose = "\n".join(INLINE_CODE.sub("", line) for line in prose_lines(page.read_text()))
    return LINK.findall(prose)


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if not target or EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor on {linked.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_docs_are_there() -> None:
    names = {p.name for p in PAGES}
    assert {"README.md", "CONTRIBUTING.md", "architecture.md", "configuration.md"} <= names


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        (
            "Bad days: overload, timeouts, a failing store",
            "bad-days-overload-timeouts-a-failing-store",
        ),
        ("A static export (`output: 'export'`)", "a-static-export-output-export"),
        (
            "Using it with an existing Next.js CloudFront setup",
            "using-it-with-an-existing-nextjs-cloudfront-setup",
        ),
        ("Redis / Valkey store", "redis--valkey-store"),
        ("`next-image purge`", "next-image-purge"),
        ("1. Build the layers (optional)", "1-build-the-layers-optional"),
        (
            "Files for a host without a function: `warm --out`",
            "files-for-a-host-without-a-function-warm---out",
        ),
    ],
)
def test_slugs_follow_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_repeated_heading_is_numbered_and_a_wrong_anchor_is_broken(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Notes\n\n## Setup\n\n## Setup\n\n```sh\n# not a heading\n```\n\n"
        "[a](#setup) [b](#setup-1) [c](#setup-2) [d](#not-a-heading) [e](other.md) "
        "`[f](#in-code)` [g](https://example.com/#x) [wrapped\ntext](#wrapped)\n"
    )
    assert anchors(page) == {"notes", "setup", "setup-1"}
    assert broken_links(page) == [
        "#setup-2: no heading with that anchor on page.md",
        "#not-a-heading: no heading with that anchor on page.md",
        "other.md: no such file",
        "#wrapped: no heading with that anchor on page.md",
    ]


# A file of the repository named in inline code: `handler/request/miss.py`, `tests/kit/`…
NAMED_PATH = re.compile(
    r"`((?:handler|infra|layers|tests|bench|devtools|events|docs|release)/[A-Za-z0-9_./-]+)`"
)
# What a make target, a test or a bench writes: the folders .gitignore names (layers/dist/…).
GENERATED = tuple(
    line.strip().rstrip("/")
    for line in (REPO / ".gitignore").read_text().splitlines()
    if "/" in line.strip().rstrip("/") and not line.startswith("#") and "*" not in line
)
READMES = [
    REPO / "events" / "README.md",
    REPO / "bench" / "README.md",
    REPO / "infra" / "README.md",
]


@pytest.mark.parametrize("page", PAGES + READMES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_named_file_exists(page: Path) -> None:
    """A moved module leaves no stale path behind in the prose that points readers at it."""
    named = {match[1].rstrip("/") for match in NAMED_PATH.finditer(page.read_text())}
    missing = {
        path
        for path in named
        if "<" not in path
        and not any(path == made or path.startswith(made + "/") for made in GENERATED)
        and not (REPO / path).exists()
    }
    assert missing == set()


def test_the_readme_stays_short() -> None:
    """The README is what a user needs first (issue #20: at most 200 lines); depth is in docs/."""
    assert len((REPO / "README.md").read_text().splitlines()) <= 200
