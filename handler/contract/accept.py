"""Output format negotiation: Next's ``getSupportedMimeType`` over ``@hapi/accept`` ``mediaType``.

Reproduced step by step because the result is part of the cache key and the quirks are visible:
wildcards never select a format (the raw header must contain the chosen type verbatim, case
included), equal q values sort alphabetically (avif before webp), and a type listed with ``q=0``
is excluded from wildcards.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cmp_to_key

from handler.contract import errors
from handler.contract.errors import ImageError

_QUOTED = re.compile(r'="([^"]*)"')
_TCHAR = r"[A-Za-z0-9_!#$%&'*+\-.^`|~]"
# hapi's regex, with its precedence quirk kept: only the first branch is anchored at the start.
_VALID_MEDIA = re.compile(rf"^(?:\*/\*)|(?:{_TCHAR}+/\*)|(?:{_TCHAR}+/{_TCHAR}+)\Z")
_JS_FLOAT = re.compile(
    r"[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]*"
    r"([+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))"
)


@dataclass
class _Range:
    token: str
    type: str
    subtype: str
    q: float
    params: str  # ";k=v" for the parameters before q, as hapi appends them
    specificity: int
    pos: int


def negotiate(accept: str | None, formats: Sequence[str]) -> str:
    """The configured format the browser explicitly asked for, or ``''`` to keep the source type.

    Deliberate deviation: for ``image/webp;level=1`` Next returns that parameterised string (and
    then encodes nothing); we return the bare format. A malformed parameter (``image/webp;foo``,
    ``image/webp;q=``), where Next answers 500, is a 400 here.
    """
    raw = accept or ""
    if not formats:  # hapi would return the header's own top type; we only emit known formats
        return ""
    chosen = _media_type(raw, formats)
    return chosen.split(";", 1)[0] if chosen and chosen in raw else ""


def _media_type(raw: str, preferences: Sequence[str]) -> str:
    header, quoted = _normalise(raw)
    mentioned: set[str] = set()
    ranges = []
    for pos, part in enumerate(header.split(",")):
        if not part:
            continue
        token, *pairs = part.split(";")
        token = token.lower()
        if not _VALID_MEDIA.search(token):
            continue
        mentioned.add(token)
        media = _parse_range(token, pairs, quoted, pos)
        if media.q:
            ranges.append(media)
    ranges.sort(key=cmp_to_key(_compare))
    by_lower = {p.lower(): p for p in preferences}
    for media in ranges:
        if media.type == "*":
            picks = [p for low, p in by_lower.items() if low not in mentioned]
        elif media.subtype == "*":
            picks = [
                p
                for low, p in by_lower.items()
                if low.split("/")[0] == media.type and low not in mentioned
            ]
        else:
            picks = [by_lower[media.token] + media.params] if media.token in by_lower else []
        if picks:
            return picks[0]
    return ""


def _normalise(raw: str) -> tuple[str, dict[str, str]]:
    """Protect quoted values, then drop every space and tab (hapi's normalisation)."""
    quoted: dict[str, str] = {}

    def stash(match: re.Match[str]) -> str:
        key = f'"{len(quoted) + 1}'
        quoted[key] = match[1]
        return "=" + key

    header = _QUOTED.sub(stash, raw or "*/*")
    return header.replace(" ", "").replace("\t", ""), quoted


def _parse_range(token: str, pairs: list[str], quoted: dict[str, str], pos: int) -> _Range:
    q = 1.0
    params: dict[str, str] = {}
    seen_q = False
    for pair in pairs:
        kv = pair.split("=")
        if len(kv) != 2 or not kv[1]:
            raise ImageError(400, errors.ACCEPT_INVALID, category="validation")
        key, value = kv
        if key in ("q", "Q"):
            seen_q = True
            q = _q_value(value)
        elif not seen_q:  # parameters after q are accept-extensions, not counted
            params[key] = f'"{quoted.get(value, "undefined")}"' if value[0] == '"' else value
    type_, subtype = token.split("/")[:2]
    suffix = "".join(f";{k}={v}" for k, v in params.items())
    return _Range(token, type_, subtype, q, suffix, len(params), pos)


def _q_value(text: str) -> float:
    """JS ``parseFloat``, then hapi's clamp: NaN, infinities, > 1 and (0, 0.001) become 1."""
    match = _JS_FLOAT.match(text)
    value = float(match[1].replace("Infinity", "inf")) if match else float("nan")
    if not -float("inf") < value < float("inf") or value > 1 or (value < 0.001 and value != 0):
        return 1.0
    return value


def _compare(a: _Range, b: _Range) -> int:
    if a.q != b.q:
        return -1 if a.q > b.q else 1
    for key in ("type", "subtype"):
        left, right = getattr(a, key), getattr(b, key)
        if left != right:
            if left == "*":
                return 1
            if right == "*":
                return -1
            return -1 if left < right else 1
    if a.specificity != b.specificity:
        return b.specificity - a.specificity
    return a.pos - b.pos
