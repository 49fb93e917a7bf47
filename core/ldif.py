"""LDIF (RFC 2849) content records as text: entries of (line, attribute, value).

Theory of operation
-------------------
This is the syntax layer of the LDIF import: it knows how LDIF is written, not what the
attributes mean (``importer.py`` maps them to users). The text is split into logical lines:
a physical line starting with one space continues the previous one (folding), a trailing
``\\r`` is dropped (CRLF files), and the line number kept is that of the first physical line.
Lines starting with ``#`` are comments; a blank line ends an entry. ``attr: value`` is taken
as written (leading spaces dropped), ``attr:: base64`` is decoded and must be UTF-8, and
attribute options (``cn;lang-ru``) are ignored; attribute names are lower-cased.

What it refuses, each reported to ``problem(line, message)`` and the line skipped: a
continuation line that follows nothing, a line that is not ``attribute: value``, URL values
(``attr:< file://...``: the import never reads other files), invalid base64 or non-UTF-8
bytes inside it, and values longer than ``max_value`` characters. ``problem`` may raise to
stop reading. Entry-level rules (``dn:`` first, ``version: 1``, ``changetype``) belong to
the caller. No I/O happens here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator

Problem = Callable[[int, str], None]
Entry = list[tuple[int, str, str]]  # (line, lower-case attribute, value)


def _logical_lines(text: str, problem: Problem) -> Iterator[tuple[int, str]]:
    """Logical lines (unfolded, comments dropped) with their first physical line number."""
    current: list[str] = []
    start = 0
    for n, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if raw.startswith(" "):
            if not current:
                problem(n, "a continuation line (starting with a space) follows nothing")
                continue
            current.append(raw[1:])
            continue
        if current:
            yield start, "".join(current)
        current, start = [raw], n
    if current:
        yield start, "".join(current)


def entries(text: str, problem: Problem, *, max_value: int) -> Iterator[Entry]:
    """Entries as lists of (line, lower-case attribute, value); values decoded."""
    entry: Entry = []
    for n, line in _logical_lines(text, problem):
        if line.startswith("#"):
            continue
        if line == "":
            if entry:
                yield entry
            entry = []
            continue
        name, sep, rest = line.partition(":")
        name = name.split(";", 1)[0].strip().lower()  # options (cn;lang-ru) are ignored
        if not sep or not name or not all(c.isascii() and (c.isalnum() or c in "-.") for c in name):
            problem(n, f"not an 'attribute: value' line: {line[:40]!r}")
            continue
        if rest.startswith("<"):
            problem(n, f"{name}: URL values (':<') are not supported")
            continue
        if rest.startswith(":"):
            try:
                value = base64.b64decode(rest[1:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                problem(n, f"{name}: the base64 value is not valid base64 of UTF-8 text")
                continue
        else:
            value = rest.lstrip(" ")
        if len(value) > max_value:
            problem(n, f"{name}: {len(value):,} characters; the limit is {max_value}")
            continue
        entry.append((n, name, value))
    if entry:
        yield entry
