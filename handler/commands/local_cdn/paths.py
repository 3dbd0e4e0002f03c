"""Which cache behaviour a request falls under, with CloudFront's path-pattern rules.

AWS's CloudFront Developer Guide ("Cache behavior settings", "Path pattern"): behaviours are
tried in the distribution's order and the default (``*``) last; a pattern matches the whole
path, not its query string; matching is case sensitive; ``*`` stands for any run of characters
(``/`` included) and ``?`` for exactly one; a leading ``/`` in the pattern makes no difference.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Protocol, TypeVar


class HasPattern(Protocol):
    @property
    def path_pattern(self) -> str: ...


B = TypeVar("B", bound=HasPattern)


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    if not pattern.startswith("/"):
        pattern = "/" + pattern
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def matches(pattern: str, path: str) -> bool:
    """Whether ``path`` (the URI path, as the viewer sent it) matches ``pattern``."""
    return _compile(pattern).fullmatch(path) is not None


def select(behaviours: Sequence[B], path: str) -> B:
    """The first behaviour whose pattern matches; the last one is the default (``*``)."""
    for behaviour in behaviours:
        if matches(behaviour.path_pattern, path):
            return behaviour
    return behaviours[-1]
