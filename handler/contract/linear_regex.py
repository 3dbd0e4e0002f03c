"""Regex search in time linear in the text, for the image allow-lists.

``re`` backtracks (picomatch's regex for ``*-*-*.example.com`` takes seconds to refuse 2,000
dashes, on the event loop) and RE2 has no lookarounds, which picomatch's regexes use. So the same
sources are parsed by CPython's own parser and searched with a lazily built DFA, lookarounds
included, in O(len(text) * pattern size) (how: docs/architecture.md, "Linear-time patterns"). Only
whether a match exists is computed; backreferences, conditionals, atomic groups, possessive
repeats and flags raise ``ValueError``."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

_parser: Any = importlib.import_module("re._parser")  # CPython's own regex parser (untyped)
_c: Any = importlib.import_module("re._constants")

_MAX_INSTRUCTIONS = 10_000  # after expanding counted repeats such as x{2,500}
_MAX_CACHED = 20_000  # DFA states and transitions kept per DFA before its cache starts over

_CHAR, _SPLIT, _TEST, _MATCH = range(4)
_CATEGORIES = {
    _c.CATEGORY_DIGIT: r"\d",
    _c.CATEGORY_NOT_DIGIT: r"\D",
    _c.CATEGORY_SPACE: r"\s",
    _c.CATEGORY_NOT_SPACE: r"\S",
    _c.CATEGORY_WORD: r"\w",
    _c.CATEGORY_NOT_WORD: r"\W",
}
_FLIP = bytes.maketrans(b"\x00\x01", b"\x01\x00")
# Whether ``\B`` matches in an empty text differs between CPython versions: ask the running one.
_NON_BOUNDARY_IN_EMPTY = re.search(r"\B", "") is not None


class LinearRegex:
    """A compiled regex whose ``search`` agrees with ``re.search`` in linear time."""

    def __init__(self, source: str) -> None:
        parsed = _parser.parse(source)  # raises re.error for bad syntax
        if parsed.state.flags != re.UNICODE:
            raise ValueError(f"regex flags are not supported: {source!r}")
        self.pattern = source
        first = parsed.data[0] if parsed.data else None
        anchored = first in ((_c.AT, _c.AT_BEGINNING), (_c.AT, _c.AT_BEGINNING_STRING))
        self._dfa = _Dfa(parsed, restart=not anchored, reverse=False)

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r})"

    def __eq__(self, other: object) -> bool:  # like re.Pattern, so configs compare by value
        return isinstance(other, LinearRegex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def search(self, text: str) -> bool:
        """Whether the regex matches anywhere in ``text`` (``re.search(...) is not None``)."""
        return self._dfa.search(text)


class _Test(Protocol):
    def column(self, text: str) -> bytes:
        """Whether the test holds at each position 0..len(text) of ``text``, as 0/1 bytes."""


class _State:
    """A set of NFA positions before their epsilon closure, and the tests that closure meets."""

    __slots__ = ("pcs", "steps", "tests")

    def __init__(self, pcs: frozenset[int], tests: tuple[tuple[int, int], ...]) -> None:
        self.pcs = pcs
        self.tests = tests  # (test id, its bit in an outcome mask)
        self.steps: dict[int, _Step] = {}


class _Step:
    """A state's closure for one outcome of its tests: does it accept, and where does it go."""

    __slots__ = ("accepts", "chars", "next")

    def __init__(self, accepts: bool, chars: frozenset[int]) -> None:
        self.accepts = accepts
        self.chars = chars
        self.next: dict[str, _State | None] = {}


_UNKNOWN = _State(frozenset(), ())  # a transition not built yet


class _Dfa:
    """Thompson NFA of a parsed regex (or of its reverse), determinised lazily as texts are read."""

    def __init__(self, parsed: Any, *, restart: bool, reverse: bool) -> None:
        self._kinds: list[int] = []
        self._args: list[Any] = []
        self._tests: list[_Test] = []
        self._test_ids: dict[str, int] = {}
        self._restart = restart  # a thread starts at every position, not only the first
        self._reverse = reverse  # the text is read right to left
        self._emit_all(parsed)
        self._emit(_MATCH, None)
        self._char_pcs = tuple(pc for pc, kind in enumerate(self._kinds) if kind == _CHAR)
        self._reach: dict[int, tuple[frozenset[int], bool, tuple[int, ...]]] = {}
        self._reset()

    # -- compiling ---------------------------------------------------------------------------

    def _emit(self, kind: int, arg: Any) -> int:
        if len(self._kinds) >= _MAX_INSTRUCTIONS:
            raise ValueError("regex is too large")
        self._kinds.append(kind)
        self._args.append(arg)
        return len(self._kinds) - 1

    def _emit_all(self, nodes: Any) -> None:
        for op, av in reversed(nodes.data) if self._reverse else nodes.data:
            self._emit_node(op, av)

    def _emit_node(self, op: Any, av: Any) -> None:
        if op in (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN):
            self._emit(_CHAR, _char_class(op, av).fullmatch)
        elif op is _c.SUBPATTERN and not av[1] and not av[2]:  # a group without scoped flags
            self._emit_all(av[3])
        elif op is _c.BRANCH:
            fork = self._emit(_SPLIT, ())
            starts, exits = [], []
            for alternative in av[1]:
                starts.append(len(self._kinds))
                self._emit_all(alternative)
                exits.append(self._emit(_SPLIT, ()))
            self._args[fork] = tuple(starts)
            for pc in exits:
                self._args[pc] = (len(self._kinds),)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            self._emit_repeat(*av)
        elif op is _c.AT and av in _AT_TESTS:
            self._emit(_TEST, self._test(repr(av), lambda: _AtTest(av)))
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            test = _lookaround(ahead=av[0] > 0, body=av[1])
            key = f"{op} {test.key}"
            make = (lambda: _Negation(test)) if op is _c.ASSERT_NOT else (lambda: test)
            self._emit(_TEST, self._test(key, make))
        else:
            raise ValueError(f"regex construct {op} cannot be matched in linear time")

    def _emit_repeat(self, low: int, high: int, body: Any) -> None:
        for _ in range(low):
            self._emit_all(body)
        if high == _c.MAXREPEAT:
            loop = self._emit(_SPLIT, ())
            self._emit_all(body)
            self._emit(_SPLIT, (loop,))
            self._args[loop] = (loop + 1, len(self._kinds))
            return
        optional = []
        for _ in range(high - low):
            optional.append(self._emit(_SPLIT, ()))
            self._emit_all(body)
        for pc in optional:
            self._args[pc] = (pc + 1, len(self._kinds))

    def _test(self, key: str, make: Callable[[], _Test]) -> int:
        """The id of a position test; identical ones (``**`` repeats its lookahead) are shared."""
        if key not in self._test_ids:
            self._test_ids[key] = len(self._tests)
            self._tests.append(make())
        return self._test_ids[key]

    # -- reading text ------------------------------------------------------------------------

    def search(self, text: str) -> bool:
        """Whether a match ends anywhere (starting at 0, or anywhere if ``restart``)."""
        columns: list[bytes | None] = [None] * len(self._tests)
        state: _State | None = self._start
        pos, end = 0, len(text)
        while state is not None:
            key = self._outcome(state, text, pos, columns) if state.tests else 0
            step = state.steps.get(key) or self._close(state, key)
            if step.accepts:
                return True
            if pos == end:
                return False
            char = text[pos]
            state = step.next.get(char, _UNKNOWN)
            if state is _UNKNOWN:
                state = self._advance(step, char)
            pos += 1
        return False

    def scan(self, text: str) -> bytes:
        """Where a match ends, as 0/1 per position (where one starts, for a reversed DFA)."""
        columns: list[bytes | None] = [None] * len(self._tests)
        found = bytearray(len(text) + 1)
        state: _State | None = self._start
        shift = -1 if self._reverse else 0  # text[pos + shift] is the character read next
        for pos in range(len(text), -1, -1) if self._reverse else range(len(text) + 1):
            if state is None:  # a DFA that does not restart has no thread left
                break
            key = self._outcome(state, text, pos, columns) if state.tests else 0
            step = state.steps.get(key) or self._close(state, key)
            found[pos] = step.accepts
            if 0 <= pos + shift < len(text):
                char = text[pos + shift]
                state = step.next.get(char, _UNKNOWN)
                if state is _UNKNOWN:
                    state = self._advance(step, char)
        return bytes(found)

    def _outcome(self, state: _State, text: str, pos: int, columns: list[bytes | None]) -> int:
        """Which of the state's tests hold at ``pos``, as a bit mask."""
        key = 0
        for test, bit in state.tests:
            column = columns[test]
            if column is None:
                column = columns[test] = self._tests[test].column(text)
            if column[pos]:
                key |= bit
        return key

    def _advance(self, step: _Step, char: str) -> _State | None:
        pcs = {pc + 1 for pc in step.chars & self._accepting(char)}
        if self._restart:
            pcs.add(0)
        state = self._state(frozenset(pcs)) if pcs else None
        self._count()
        step.next[char] = state
        return state

    def _accepting(self, char: str) -> frozenset[int]:
        """The consuming positions whose class contains ``char``."""
        pcs = self._by_char.get(char)
        if pcs is None:
            self._count()
            pcs = frozenset(pc for pc in self._char_pcs if self._args[pc](char))
            self._by_char[char] = pcs
        return pcs

    def _reset(self) -> None:
        self._states: dict[frozenset[int], _State] = {}
        self._by_char: dict[str, frozenset[int]] = {}
        self._cached = 0
        self._start = self._state(frozenset((0,)))

    def _count(self) -> None:
        self._cached += 1
        if self._cached > _MAX_CACHED:  # bound the memory; rebuilding costs time, never more
            self._reset()

    def _state(self, pcs: frozenset[int]) -> _State:
        state = self._states.get(pcs)
        if state is None:
            met: set[int] = set()

            def meet(test: int) -> bool:  # whatever the outcome: every test the closure can meet
                met.add(test)
                return True

            closure = self._closure(pcs, meet)
            self._count()
            tests = tuple((test, 1 << bit) for bit, test in enumerate(sorted(met)))
            state = self._states[pcs] = _State(pcs, tests)
            if not tests:
                state.steps[0] = _Step(*closure)
        return state

    def _close(self, state: _State, key: int) -> _Step:
        passed = {test for test, bit in state.tests if key & bit}
        step = state.steps[key] = _Step(*self._closure(state.pcs, passed.__contains__))
        self._count()
        return step

    def _closure(
        self, pcs: frozenset[int], passes: Callable[[int], bool]
    ) -> tuple[bool, frozenset[int]]:
        """Follow epsilon moves: whether the match is reached, and the consuming positions."""
        chars: set[int] = set()
        accepts = False
        tests: list[int] = []
        tried: set[int] = set()
        work: Iterable[int] = pcs
        while work:
            for pc in work:
                reach = self._reach.get(pc) or self._split_closure(pc)
                chars |= reach[0]
                accepts = accepts or reach[1]
                tests += reach[2]
            work = [pc + 1 for pc in tests if pc not in tried and passes(self._args[pc])]
            tried.update(tests)
            tests.clear()
        return accepts, frozenset(chars)

    def _split_closure(self, start: int) -> tuple[frozenset[int], bool, tuple[int, ...]]:
        """From ``start`` through splits only: consuming positions, the match, tests met."""
        kinds, args = self._kinds, self._args
        seen: set[int] = set()
        stack = [start]
        chars: list[int] = []
        tests: list[int] = []
        accepts = False
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            kind = kinds[pc]
            if kind == _SPLIT:
                stack.extend(args[pc])
            elif kind == _CHAR:
                chars.append(pc)
            elif kind == _TEST:
                tests.append(pc)
            else:
                accepts = True
        reach = self._reach[start] = (frozenset(chars), accepts, tuple(tests))
        return reach


class _AtTest:
    """``^``, ``$``, ``\\A``, ``\\Z``, ``\\b`` or ``\\B``."""

    def __init__(self, code: Any) -> None:
        self._code = code

    def column(self, text: str) -> bytes:
        end = len(text)
        if self._code in (_c.AT_BEGINNING, _c.AT_BEGINNING_STRING):
            return b"\x01" + bytes(end)
        if self._code == _c.AT_END and text.endswith("\n"):
            return bytes(end - 1) + b"\x01\x01"  # ``$`` also holds before a final newline
        if self._code in (_c.AT_END, _c.AT_END_STRING):
            return bytes(end) + b"\x01"
        words = [False, *(char.isalnum() or char == "_" for char in text), False]
        boundary = bytes(words[i] != words[i + 1] for i in range(end + 1))
        if self._code == _c.AT_BOUNDARY:
            return boundary
        return boundary.translate(_FLIP) if text or _NON_BOUNDARY_IN_EMPTY else b"\x00"


_AT_TESTS = {
    _c.AT_BEGINNING,
    _c.AT_BEGINNING_STRING,
    _c.AT_END,
    _c.AT_END_STRING,
    _c.AT_BOUNDARY,
    _c.AT_NON_BOUNDARY,
}


class _Lookaround:
    """Where ``(?=body)`` holds: where a match of the body starts; ``(?<=body)``: where one ends
    (CPython only allows fixed-width lookbehinds, so that match started where it should)."""

    def __init__(self, key: str, ahead: bool, body: Any) -> None:
        self.key = key
        self._dfa = _Dfa(body, restart=True, reverse=ahead)
        self._last: tuple[str, bytes] | None = None

    def column(self, text: str) -> bytes:
        last = self._last  # patterns share lookarounds: every pattern tried on a URL reuses this
        if last is None or last[0] != text:
            last = self._last = (text, self._dfa.scan(text))
        return last[1]


class _Negation:
    """``(?!body)`` and ``(?<!body)``."""

    def __init__(self, test: _Test) -> None:
        self._test = test

    def column(self, text: str) -> bytes:
        return self._test.column(text).translate(_FLIP)


_LOOKAROUNDS: dict[str, _Lookaround] = {}  # picomatch uses a handful of lookaround bodies


def _lookaround(*, ahead: bool, body: Any) -> _Lookaround:
    key = f"{'ahead' if ahead else 'behind'} {body!r}"
    if key not in _LOOKAROUNDS:
        _LOOKAROUNDS[key] = _Lookaround(key, ahead, body)
    return _LOOKAROUNDS[key]


def _char_class(op: Any, av: Any) -> re.Pattern[str]:
    """One character's test as a tiny ``re`` class, so its semantics are exactly ``re``'s."""
    if op is _c.ANY:
        return re.compile(".")
    if op is _c.LITERAL:
        return re.compile(_code(av))
    if op is _c.NOT_LITERAL:
        return re.compile(f"[^{_code(av)}]")
    parts = []
    for item, value in av:
        if item is _c.NEGATE:
            parts.append("^")
        elif item is _c.LITERAL:
            parts.append(_code(value))
        elif item is _c.RANGE:
            parts.append(f"{_code(value[0])}-{_code(value[1])}")
        elif item is _c.CATEGORY and value in _CATEGORIES:
            parts.append(_CATEGORIES[value])
        else:
            raise ValueError(f"regex class item {item} is not supported")
    return re.compile(f"[{''.join(parts)}]")


def _code(codepoint: int) -> str:
    return f"\\U{codepoint:08x}"
