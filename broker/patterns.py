"""Regular expressions that users supply, compiled for RE2 (linear-time matching).

Permission regexes and the management API's ``use_regex`` list filters come
from users.  Python's ``re`` backtracks, so a pattern like ``(a+)+$`` can hold
the event loop for minutes; RE2 matches in time linear in the subject and has
no backtracking constructs (backreferences, lookarounds), which it refuses
to compile.  Patterns are also capped in length and in the memory RE2 may
spend on them, so a pattern is either cheap to run or refused where it is set.
"""

from __future__ import annotations

from typing import Protocol

import re2

MAX_PATTERN_BYTES = 4096
"""The longest pattern accepted, in UTF-8 bytes."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # refusals are reported to whoever set the pattern, not on stderr
_OPTIONS.max_mem = 1 << 20  # bounds the compiled program, hence the work per character matched



class Regex(Protocol):
    """What the broker uses of a compiled pattern."""

    def search(self, text: str) -> object | None: ...


class PatternError(ValueError):
    """A user-supplied pattern was refused; ``field`` names where it was given."""

    def __init__(self, field: str, pattern: str, why: str) -> None:
        shown = pattern.encode("utf-8", "backslashreplace").decode("utf-8")
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        super().__init__(f"'{field}': invalid regular expression '{shown}': {why}")
        self.field = field
        self.why = why


def compile_pattern(pattern: str, field: str) -> Regex:
    """``pattern`` compiled for RE2, or PatternError naming ``field``."""
    try:
        size = len(pattern.encode("utf-8"))
    except UnicodeEncodeError:
        raise PatternError(field, pattern, "not valid Unicode") from None
    if size > MAX_PATTERN_BYTES:
        raise PatternError(field, pattern, f"longer than {MAX_PATTERN_BYTES} bytes")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        why = exc.args[0] if exc.args else "not supported"
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        if "perl operator" in why or "escape sequence" in why:
            why += " (RE2 syntax: no backreferences or lookarounds)"
        raise PatternError(field, pattern, why) from None


class PatternSet:
    """Patterns (each already accepted by :func:`compile_pattern`) searched together: one RE2
    set search says which of them match a text, for about the cost of one search.  Where RE2
    cannot build the set within its memory bound, the patterns are searched one by one."""

    def __init__(self, patterns: list[str]) -> None:
        self._one_by_one: list[Regex] | None = None
        self._set: re2.Set | None = None
        if not patterns:
            return
        options = re2.Options()
        options.log_errors = False
        options.max_mem = 8 << 20
        s = re2.Set.SearchSet(options)
        try:
            for p in patterns:
                s.Add(p)
            s.Compile()
            self._set = s
        except re2.error:
            self._one_by_one = [compile_pattern(p, "pattern") for p in patterns]

    def search(self, text: str) -> list[int]:
        """The indices (in the order given) of the patterns found in ``text``."""
        if self._set is not None:
            return sorted(self._set.Match(text) or ())
        if self._one_by_one is not None:
            return [i for i, rx in enumerate(self._one_by_one) if rx.search(text) is not None]
        return []
