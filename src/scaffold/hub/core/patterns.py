r"""Regular expressions from requests, matched in time linear in the text (RE2), line by line.

Python's `re` backtracks: `^(a+)+$` on a line of 30 `a`s and a `b` runs for minutes, and it holds
the GIL all that time, so even a worker thread stalls the event loop. RE2 (the `google-re2`
package) never backtracks: a search costs time linear in the text, and it releases the GIL while
it runs. Its syntax is Python's without the constructs that need backtracking; a pattern using
one (a backreference, lookahead or lookbehind, a conditional, an atomic group, a possessive
quantifier) is refused with a message naming it. Also unlike Python: `\d \w \s \b` are ASCII
only, `\Z` is written `\z`, and `\u00e9` is written `\x{e9}` (or as the character itself).

**Lines.** A pattern matches within one line, as if each line were the whole text. A call per
line costs about a microsecond, twenty times RE2's own speed on a block of text; so a block of
lines is searched at once first, in multi-line mode (`^` and `$` at line ends), and only from
the line where something matched in it are its lines searched one by one. A line that matches
alone also matches inside its block (at a line's ends, `^`, `$` and `\b` see what they see at
the ends of a text), so no line is missed; a match across lines only costs the line-by-line
search. `\A`, `\z` and a flag group that turns multi-line mode off mean something else in a
block, so such patterns are searched line by line throughout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import re2

from scaffold.errors import InvalidRequest

BLOCK_BYTES = 16 * 1024
"""A block searched at once ends at the first line end after this many bytes."""

_TEXT_ENDS = re.compile(r"\\[Az]|\(\?[A-Za-z]*-")  # \A, \z, (?-m): not the same in a block
_LOOKS = (
    ("(?=", "a lookahead (?=...)"),
    ("(?!", "a negative lookahead (?!...)"),
    ("(?<=", "a lookbehind (?<=...)"),
    ("(?<!", "a negative lookbehind (?<!...)"),
    ("(?(", "a conditional group (?(...)...)"),
    ("(?>", "an atomic group (?>...)"),
    ("(?#", "a comment group (?#...)"),
)
_ESCAPES = {  # Python escapes RE2 writes differently
    "\\Z": "\\Z; write \\z for the end of the line",
    "\\u": "the escape \\u; write the character itself, or \\x{hex}",
    "\\U": "the escape \\U; write the character itself, or \\x{hex}",
    "\\N": "the escape \\N{...}; write the character itself, or \\x{hex}",
}
_NEVER = (
    "grep matches with RE2 (in time linear in the text), which has no backreferences, lookaround, "
    "conditionals, atomic groups or possessive quantifiers"
)


@dataclass(frozen=True)
class LineMatch:
    number: int  # from 1
    column: int  # from 1, in characters
    line: str


class LinePattern:
    """A compiled pattern that finds the lines of a text it matches."""

    def __init__(self, pattern: str, *, ignore_case: bool = False, fixed_string: bool = False) -> None:
        source = re2.escape(pattern) if fixed_string else pattern
        self._line = _compile(source, ignore_case)
        self._block = None if _TEXT_ENDS.search(source) else _compile("(?m)" + source, ignore_case)
        # re2.compile keeps the last 128 patterns, each with up to 8 MiB of automata: patterns
        # from requests would make that a gigabyte nobody uses again.
        re2.purge()

    def search(self, content: bytes) -> Iterator[LineMatch]:
        """The lines of `content` (split at `\\n`, undecodable bytes read as U+FFFD) that match."""
        text = content if content.isascii() else content.decode("utf-8", "replace").encode("utf-8")
        size = len(text)
        start, number = 0, 1  # the first line of the block, and its number
        while start <= size:
            newline = text.find(b"\n", start + BLOCK_BYTES)
            end = size if newline < 0 else newline
            line_start = start
            if self._block is not None:
                hit = self._block.search(text, start, end)
                if hit is None:
                    number += text.count(b"\n", start, end) + 1
                    start = end + 1
                    continue
                line_start = text.rfind(b"\n", start, hit.start()) + 1 or start
                number += text.count(b"\n", start, line_start)
            while line_start <= end:
                newline = text.find(b"\n", line_start, end)
                line_end = end if newline < 0 else newline
                line = text[line_start:line_end]
                found = self._line.search(line)
                if found is not None:
                    head = line[: found.start()].decode("utf-8", "replace")
                    yield LineMatch(number, len(head) + 1, line.decode("utf-8", "replace"))
                number += 1
                line_start = line_end + 1
            start = end + 1


def _compile(source: str, ignore_case: bool) -> re2._Regexp[bytes]:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on the hub's stderr
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(source.encode("utf-8"), options)
    except re2.error as error:
        raise InvalidRequest(_explain(source, error)) from None
    except UnicodeEncodeError:
        raise InvalidRequest("the pattern holds a lone surrogate (\\ud800-\\udfff)") from None


def _explain(pattern: str, error: re2.error) -> str:
    """What is wrong with the pattern, naming the construct when RE2 lacks one Python has."""
    raw = error.args[0] if error.args else ""
    message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    kind, _, fragment = message.partition(": ")
    backtracking = None
    if kind == "invalid perl operator":
        backtracking = next((name for prefix, name in _LOOKS if fragment.startswith(prefix)), None)
        if fragment.startswith("(?P") and "(?P=" in pattern:
            backtracking = "a named backreference (?P=name)"
        elif backtracking is None and len(fragment) == 3:
            return f"the pattern uses the flag (?{fragment[2]}), which grep's RE2 lacks: it has i, m, s and U"
    elif kind == "invalid escape sequence":
        if len(fragment) == 2 and fragment[1] in "123456789":
            backtracking = f"a backreference {fragment}"
        elif fragment in _ESCAPES:
            return f"the pattern uses {_ESCAPES[fragment]} (grep matches with RE2)"
    elif kind == "bad repetition operator" and fragment.endswith("+"):
        backtracking = f"a possessive quantifier {fragment}"
    if backtracking is not None:
        return f"the pattern uses {backtracking}, which is not supported: {_NEVER}"
    return f"the pattern is not a valid regular expression (RE2 syntax): {message}"
