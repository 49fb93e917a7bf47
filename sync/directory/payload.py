"""Directory payloads: one snapshot or change set for one site, as canonical JSON lines.

Theory of operation
-------------------
What an edge receives from the core is a *payload*, the bytes of one bundle item:

- ``directory.snapshot`` (:data:`SNAPSHOT_ITEM`): the whole directory at version ``V``;
- ``directory.changes`` (:data:`CHANGES_ITEM`): the current state of every entry that changed
  after version ``B`` (the base) up to ``V``; a removed group travels as a tombstone.

Encoding (``docs/core-directory.md`` is the reference): UTF-8 JSON lines, each line one object
serialised with sorted keys, no spaces and no ASCII escaping of non-ASCII text, ending in
``\\n``. Line 1 is the header (format, version, kind, directory id, recipient site, versions,
record count); then records ordered by type (site, department, user, group) and by key within
a type. The encoding is canonical: one directory state has exactly one encoding, and
:meth:`Payload.parse` refuses anything else (unsorted, duplicated, re-spaced, escaped
differently, wrong count), so ``bytes(Payload.parse(data)) == data``.

What it trusts: nothing. Whoever delivers a payload (the bundle layer, which authenticated
its origin) may still deliver a malformed one; every record is validated as the core
validates it. What it refuses: unknown formats and fields, invalid values, oversized
payloads, and snapshots whose users point at sites, departments or members absent from them.
Every refusal is a ``ValueError`` starting ``directory payload:``. No I/O happens here.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from pki.names import check_site
from sync.directory.records import (
    Department,
    Group,
    GroupRemoved,
    Record,
    Site,
    User,
    record_from_json,
    record_to_json,
    sort_key,
)

FORMAT: Final = "zastava.directory"
FORMAT_VERSION: Final = 1
SNAPSHOT_ITEM: Final = "directory.snapshot"
CHANGES_ITEM: Final = "directory.changes"
MAX_PAYLOAD: Final = 256 * 1024 * 1024
MAX_RECORDS: Final = 2_000_000
_DIRECTORY_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class PayloadKind(enum.Enum):
    SNAPSHOT = "snapshot"
    CHANGES = "changes"


@dataclass(frozen=True)
class Payload:
    """One snapshot or change set for one site. ``base`` is ``None`` for a snapshot."""

    kind: PayloadKind
    directory: str
    site: str
    version: int
    base: int | None
    records: tuple[Record, ...]

    def __post_init__(self) -> None:
        if not _DIRECTORY_ID.fullmatch(self.directory):
            raise ValueError(f"directory: invalid directory id {self.directory!r}")
        check_site(self.site)
        if type(self.version) is not int or self.version < 0:
            raise ValueError(f"version: {self.version!r} is not a version number")
        if self.kind is PayloadKind.SNAPSHOT:
            if self.base is not None:
                raise ValueError("base: a snapshot has no base version")
        elif type(self.base) is not int or not 0 <= self.base <= self.version:
            raise ValueError(f"base: {self.base!r} is not a version <= {self.version}")
        if len(self.records) > MAX_RECORDS:
            raise ValueError(f"records: more than {MAX_RECORDS}")
        keys = [sort_key(r) for r in self.records]
        for i in range(1, len(keys)):
            if keys[i - 1] >= keys[i]:
                raise ValueError(f"records: not in canonical order at {keys[i]}")
        if self.kind is PayloadKind.SNAPSHOT:
            self._check_references()

    def _check_references(self) -> None:
        sites = {r.id for r in self.records if isinstance(r, Site)}
        departments = {r.name for r in self.records if isinstance(r, Department)}
        users = set()
        for r in self.records:
            if isinstance(r, GroupRemoved):
                raise ValueError(f"records: a snapshot cannot remove group {r.name!r}")
            if isinstance(r, User):
                users.add(r.login)
                if r.site not in sites:
                    raise ValueError(f"user {r.login!r}: site {r.site!r} is not in the snapshot")
                if r.department is not None and r.department not in departments:
                    raise ValueError(f"user {r.login!r}: department {r.department!r} is missing")
            if isinstance(r, Group):
                missing = sorted(set(r.members) - users)
                if missing:
                    raise ValueError(f"group {r.name!r}: members {missing} are not users")

    @classmethod
    def build(
        cls,
        kind: PayloadKind,
        *,
        directory: str,
        site: str,
        version: int,
        base: int | None,
        records: Iterable[Record],
    ) -> Payload:
        """A payload with ``records`` put in canonical order."""
        return cls(kind, directory, site, version, base, tuple(sorted(records, key=sort_key)))

    def header(self) -> dict[str, Any]:
        h: dict[str, Any] = {
            "format": FORMAT,
            "v": FORMAT_VERSION,
            "kind": self.kind.value,
            "directory": self.directory,
            "site": self.site,
            "version": self.version,
            "records": len(self.records),
        }
        if self.base is not None:
            h["base"] = self.base
        return h

    def __bytes__(self) -> bytes:
        lines = [_dump(self.header()), *(_dump(record_to_json(r)) for r in self.records)]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> Payload:
        try:
            return cls._parse(data)
        except ValueError as e:
            raise ValueError(f"directory payload: {e}") from None

    @classmethod
    def _parse(cls, data: bytes) -> Payload:
        if len(data) > MAX_PAYLOAD:
            raise ValueError(f"{len(data)} bytes exceeds {MAX_PAYLOAD}")
        if not data.endswith(b"\n"):
            raise ValueError("truncated: does not end with a newline")
        try:
            lines = data.decode("utf-8").split("\n")[:-1]
        except UnicodeDecodeError as e:
            raise ValueError(f"not UTF-8 at byte {e.start}") from None
        head = _load(lines[0], 1)
        kind = _header_kind(head)
        if head["records"] != len(lines) - 1:
            raise ValueError(f"header says {head['records']} records, found {len(lines) - 1}")
        records = []
        for n, line in enumerate(lines[1:], start=2):
            try:
                record = record_from_json(_load(line, n))
            except ValueError as e:
                raise ValueError(f"line {n}: {e}") from None
            if _dump(record_to_json(record)) != line:
                raise ValueError(f"line {n}: not in canonical form")
            records.append(record)
        payload = cls(
            kind, head["directory"], head["site"], head["version"], head.get("base"), tuple(records)
        )
        if _dump(payload.header()) != lines[0]:
            raise ValueError("line 1: header not in canonical form")
        return payload


def _load(line: str, n: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"line {n}: not JSON ({e.msg})") from None
    except RecursionError:
        raise ValueError(f"line {n}: nested too deeply") from None


def _header_kind(head: object) -> PayloadKind:
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ValueError(f"line 1: not a {FORMAT} header")
    if head.get("v") != FORMAT_VERSION:
        raise ValueError(f"line 1: format version {head.get('v')!r} is not {FORMAT_VERSION}")
    try:
        kind = PayloadKind(head.get("kind"))
    except ValueError:
        raise ValueError(f"line 1: unknown kind {head.get('kind')!r}") from None
    want = {"format", "v", "kind", "directory", "site", "version", "records"}
    if kind is PayloadKind.CHANGES:
        want.add("base")
    if set(head) != want:
        raise ValueError(f"line 1: header fields {sorted(head)}, expected {sorted(want)}")
    if type(head["records"]) is not int:
        raise ValueError("line 1: records must be an integer")
    if not isinstance(head["directory"], str) or not isinstance(head["site"], str):
        raise ValueError("line 1: directory and site must be strings")
    return kind
