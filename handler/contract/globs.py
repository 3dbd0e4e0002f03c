"""picomatch ``makeRe`` semantics for the glob subset Next's image patterns use (there is no Python
picomatch): hostnames with default options, pathnames with ``{dot: true}``, as Next calls it.

Its quirks are kept: ``*`` crosses dots, ``/x/**`` also matches ``/x`` but ``/**/x`` not ``/x``,
``[ab]`` also matches the text ``[ab]``, a trailing ``*`` or ``[...]`` allows one trailing slash.
Extglobs, negation, quotes, ``|`` and brace ranges raise ``ValueError`` (regex syntax no allow-list
should rely on). The anchored regexes are searched like a manifest's regex sources, through
``handler.contract.linear_regex``, never ``re``, which backtracks on these lazy stars."""

from __future__ import annotations

import re
from dataclasses import dataclass

_STAR = "[^/]*?"
_ONE_CHAR = "(?=.)"
_NO_DOT = r"(?!\.)"
_NO_DOTS = r"(?!(?:^|/)\.{1,2}(?:/|$))"
_NO_DOT_SLASH = r"(?!\.?(?:/|$))"
_NO_DOTS_SLASH = r"(?!\.{1,2}(?:/|$))"
_FAST_SUFFIX = re.compile(r"(.*?)\.([A-Za-z0-9_]+)")
_BRACKET_SPECIALS = re.compile(r"[-*+?.^${}(|)\[\]]")
_UNSUPPORTED = re.compile(r"""[()|"]|\{[^}]*\.\.|\*{3}|\[:""")


def _globstar(dot: bool) -> str:
    return r"(?:(?:(?!(?:^|/)\.{1,2}(?:/|$)).)*?)" if dot else r"(?:(?:(?!(?:^|/)\.).)*?)"


def compile_glob(glob: str, *, dot: bool) -> re.Pattern[str]:
    """Compile one picomatch glob; ``dot`` is picomatch's option (True for pathnames)."""
    if not glob:
        raise ValueError("a glob must be a non-empty string")
    if glob.startswith("!") or _UNSUPPORTED.search(glob):
        raise ValueError(f"unsupported glob syntax (negation, extglob, ranges, ***): {glob!r}")
    source = _fast_path(glob, dot) if glob[0] in ".*" else None
    if source is None:
        source = _Parser(glob, dot).parse()
    return re.compile(f"^(?:{source})\\Z")


def _fast_path(glob: str, dot: bool) -> str | None:
    """picomatch's shortcut for globs starting with ``*``/``.``; it always allows a final ``/``."""
    body = _fast_create(glob, dot)
    return None if body is None else body + "/?"


def _fast_create(glob: str, dot: bool) -> str | None:
    nodot = _NO_DOTS if dot else _NO_DOT
    slash_dot = _NO_DOTS_SLASH if dot else _NO_DOT
    star, one, gs = _STAR, _ONE_CHAR, _globstar(dot)
    known = {
        "*": f"{nodot}{one}{star}",
        ".*": rf"\.{one}{star}",
        "*.*": rf"{nodot}{star}\.{one}{star}",
        "*/*": f"{nodot}{star}/{one}{slash_dot}{star}",
        "**": f"{nodot}{gs}",
        "**/*": f"(?:{nodot}{gs}/)?{slash_dot}{one}{star}",
        "**/*.*": rf"(?:{nodot}{gs}/)?{slash_dot}{star}\.{one}{star}",
        "**/.*": rf"(?:{nodot}{gs}/)?\.{one}{star}",
    }
    if glob in known:
        return known[glob]
    match = _FAST_SUFFIX.fullmatch(glob)
    if match is None:
        return None
    head = _fast_create(match[1], dot)
    return None if head is None else rf"{head}\.{match[2]}"


@dataclass
class _Token:
    kind: str  # bos, slash, dot, text, star, globstar, qmark, bracket, brace, comma
    out: str


class _Parser:
    """The token loop of picomatch's ``parse`` for the supported subset."""

    def __init__(self, glob: str, dot: bool) -> None:
        self.glob, self.dot, self.i = glob, dot, 0
        self.tokens = [_Token("bos", "")]
        self.braces: list[tuple[int, bool]] = []  # (token index of "{", saw a comma)

    def parse(self) -> str:
        glob = self.glob
        while self.i < len(glob):
            char = glob[self.i]
            self.i += 1
            if char == "\\":
                self._escape()
            elif char == "/":
                self._push("slash", "/")
            elif char == ".":
                mid_segment = not self.braces and self._prev.kind not in ("bos", "slash")
                self._push("text" if mid_segment else "dot", r"\.")
            elif char == "?":
                at_start = self._prev.kind in ("bos", "slash")
                self._push("qmark", "[^./]" if at_start and not self.dot else "[^/]")
            elif char == "[" and "]" in glob[self.i :]:
                self._bracket()
            elif char == "{":
                self.braces.append((len(self.tokens), False))
                self._push("brace", "(?:")
            elif char == "}" and self.braces:
                self._close_brace()
            elif char == "," and self.braces:
                self.braces[-1] = (self.braces[-1][0], True)
                self._push("comma", "|")
            elif char == "*":
                self._star()
            else:
                self._push("text", re.escape(char))
        if self.braces:
            raise ValueError(f"unclosed brace in glob {glob!r}")
        if self._prev.kind in ("star", "bracket"):
            self._push("maybe_slash", "/?")
        return "".join(token.out for token in self.tokens)

    @property
    def _prev(self) -> _Token:
        return self.tokens[-1]

    def _push(self, kind: str, out: str) -> None:
        prev = self.tokens[-1]
        closes_group = bool(self.braces) and kind in ("comma", "brace")
        if prev.kind == "globstar" and kind != "slash" and not closes_group:
            prev.kind, prev.out = "star", _STAR  # "/a/**.png" is "/a/*.png" in picomatch
        self.tokens.append(_Token(kind, out))

    def _escape(self) -> None:
        if self.i == len(self.glob):
            self._push("text", r"\\")
            return
        char = self.glob[self.i]
        if char not in "/.;":  # picomatch drops the backslash and re-reads these
            self.i += 1
            self._push("text", re.escape(char))

    def _bracket(self) -> None:
        """``[...]``: a class; if it has no regex specials, picomatch also accepts it literally."""
        glob = self.glob
        first = self.i + (
            2 if glob.startswith("^]", self.i) else 1 if glob.startswith("]", self.i) else 0
        )
        end = glob.find("]", first)
        if end < 0:  # only a leading literal "]": no class at all
            self._push("text", r"\[")
            return
        content = glob[self.i : end]
        self.i = end + 1
        body, k = [], 0
        while k < len(content):
            char = content[k]
            if char == "\\" and k + 1 < len(content):
                body.append(content[k : k + 2])
                k += 1
            elif (char == "^" and k == 0) or (char == "-" and 0 < k < len(content) - 1):
                body.append(char)
            else:
                body.append(re.escape(char) if char != "-" else r"\-")
            k += 1
        if content.startswith("^") and "/" not in content:
            body.append("/")
        cls = "[" + "".join(body) + "]"
        if _BRACKET_SPECIALS.search(content) is None:
            cls = f"(?:{re.escape('[' + content + ']')}|{cls})"
        self._push("bracket", cls)

    def _close_brace(self) -> None:
        start, had_comma = self.braces[-1]
        if had_comma:
            self._push("brace", ")")
        else:  # "{a}" is literal text in picomatch
            self.tokens[start].out = r"\{"
            self._push("brace", r"\}")
        self.braces.pop()

    def _star(self) -> None:
        if self._prev.kind == "star":
            self._globstar()
            return
        prev = self._prev
        if self.i == 1 or prev.kind in ("slash", "dot"):  # a star opening a path segment
            if prev.kind == "dot":
                prev.out += _NO_DOT_SLASH
            else:
                prev.out += _NO_DOTS_SLASH if self.dot else _NO_DOT
            if not self.glob.startswith("*", self.i):
                prev.out += _ONE_CHAR
        self._push("star", _STAR)

    def _globstar(self) -> None:
        """The second ``*`` of ``**``: picomatch's globstar cases, in its order."""
        glob, star, prior = self.glob, self.tokens[-1], self.tokens[-2]
        in_brace = bool(self.braces) and prior.kind in ("comma", "brace")
        if prior.kind not in ("slash", "bos") and not in_brace:
            self._push("star", "")  # "a**" is a plain star
            return
        while glob.startswith("/**", self.i) and glob[self.i + 3 : self.i + 4] in ("", "/"):
            self.i += 3  # "/**/**" collapses to "/**"
        gs = _globstar(self.dot)
        before = self.tokens[-3].kind if len(self.tokens) > 2 else ""
        inner_slash = prior.kind == "slash" and before != "bos"
        star.kind = "globstar"
        if inner_slash and before not in ("star", "globstar") and self.i == len(glob):
            prior.out = "(?:" + prior.out  # "/x/**" also matches "/x"
            star.out = gs + "|$)"
        elif inner_slash and glob.startswith("/", self.i):
            more = "|$" if self.i + 1 < len(glob) else ""
            prior.out = "(?:" + prior.out  # "/x/**/y" also matches "/x/y"
            star.out = f"{gs}/|/{more})"
            self.i += 1
            self._push("slash", "")
        elif prior.kind == "bos" and glob.startswith("/", self.i):
            prior.out, star.out = "", f"(?:^|/|{gs}/)"
            self.i += 1
            self._push("slash", "")
        else:
            star.out = gs
