"""The officer's export of the audit log, and its offline verification.

Theory of operation
-------------------
An export is a directory meant for removable media::

    entries.jsonl          one canonical entry per line, in log order: line i+1 is entry i,
                           and its bytes without the newline are leaf i's data
    checkpoints/<n>.txt    every signed checkpoint up to the newest, named by tree size
    relay-signing.pem      the relay's signing certificate, as the relay stored it

:func:`export_log` writes the entries covered by the newest checkpoint, from one read snapshot
of the store, into a hidden sibling directory, syncs it, then renames it into place: an
interrupted export leaves no directory that looks complete. Entries appended after the newest
checkpoint are not exported; they are not signed yet.

:func:`verify_export` needs only the directory and the relay's verifier key, which the caller
derives from a certificate it holds itself (never the export's own copy). It checks, and names
the first failure: every checkpoint file parses and is signed by the relay's key, under the
file name of its size; every entry line is canonical; the root recomputed from the entries
equals every checkpoint's root at its size; the entries end exactly at the newest checkpoint;
and the officer's previously saved checkpoint, if given, is signed by the same key, no larger
than the export and has the root of the export's first entries. Recomputing every
checkpoint's root from the one sequence of entries proves consecutive checkpoints consistent,
more strongly than an RFC 9162 consistency proof would (which only shows that *some* entries
link the two roots); so a rewritten, reordered, removed or forged entry, a truncated or forked
log, or a checkpoint signed by another key is each refused (THREATS B14). The roots are
computed in a stream over a compact range, in ``O(log n)`` memory.

What it does not prove: that a checkpoint was not removed from the middle of ``checkpoints/``
(the remaining ones still verify; the newest one cannot be removed unnoticed, since the
entries would then run past it), or anything about entries after the newest checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pki.keyfile import fsync_dir
from sync.relay.audit import CERTIFICATE_META_KEY, AuditEntry
from sync.relay.auditstore import SqliteAuditStore
from sync.relay.checkpoint import Checkpoint, SignedNote, VerifierKey, open_checkpoint
from sync.relay.merkle import EMPTY_ROOT, node_hash

ENTRIES_FILE: Final = "entries.jsonl"
CHECKPOINTS_DIR: Final = "checkpoints"
CERTIFICATE_FILE: Final = "relay-signing.pem"
PROGRESS_EVERY: Final = 50_000  # entries between progress reports
_CHECKPOINT_NAME = re.compile(r"(0|[1-9][0-9]{0,18})\.txt", re.ASCII)

Progress = Callable[[int, int], None]  # (entries done, entries in all)


class ExportError(RuntimeError):
    """The export cannot be written; the message says why."""


class VerifyError(ValueError):
    """The export does not verify; the message names the first problem found."""


@dataclass(frozen=True)
class ExportSummary:
    entries: int  # entries written: the newest checkpoint's size
    checkpoints: int
    unsigned: int  # entries in the log after the newest checkpoint, not exported
    certificate: bool  # whether relay-signing.pem was written


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    checkpoints: int
    latest: Checkpoint
    since: Checkpoint | None


def export_log(
    store: SqliteAuditStore,
    directory: Path,
    *,
    certificate_pem: bytes | None = None,
    progress: Progress | None = None,
) -> ExportSummary:
    """Write the log up to its newest checkpoint into ``directory`` (new, or empty)."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ExportError(f"{directory} exists and is not an empty directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        summary = _write_export(store, work, certificate_pem, progress)
        os.sync()  # once for the thousands of small files, rather than an fsync each
        if directory.exists():
            directory.rmdir()  # empty, checked above
        work.rename(directory)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    fsync_dir(directory.parent)
    return summary


def _write_export(
    store: SqliteAuditStore, work: Path, certificate_pem: bytes | None, progress: Progress | None
) -> ExportSummary:
    with store.snapshot():
        latest = store.latest_checkpoint_note()
        if latest is None:
            raise ExportError("the audit log has no checkpoint yet: nothing to export")
        size = Checkpoint.parse(SignedNote.parse(latest).text).size
        with (work / ENTRIES_FILE).open("wb") as out:
            expected = 0
            for index, data in store.iter_entries(0, size):
                if index != expected:
                    raise ExportError(f"the audit store lacks entry {expected}")
                out.write(data + b"\n")
                expected += 1
                if progress is not None and expected % PROGRESS_EVERY == 0:
                    progress(expected, size)
            if expected != size:
                raise ExportError(f"the audit store has {expected} entries, not {size}")
        (work / CHECKPOINTS_DIR).mkdir()
        count = 0
        for cp_size, note, _signed_at in store.iter_checkpoints(max_size=size):
            (work / CHECKPOINTS_DIR / f"{cp_size}.txt").write_bytes(note.encode("utf-8"))
            count += 1
        pem = certificate_pem or store.get_meta(CERTIFICATE_META_KEY)
        if pem is not None:
            (work / CERTIFICATE_FILE).write_bytes(pem)
        unsigned = store.entry_count() - size
    if progress is not None:
        progress(size, size)
    return ExportSummary(size, count, unsigned, pem is not None)


class _RootStream:
    """Roots of every prefix of a stream of leaf hashes: a compact range in O(log n)."""

    def __init__(self) -> None:
        self.size = 0
        self._frontier: list[bytes] = []  # perfect-subtree roots, largest first

    def push(self, digest: bytes) -> None:
        index = self.size
        while index & 1:
            digest = node_hash(self._frontier.pop(), digest)
            index >>= 1
        self._frontier.append(digest)
        self.size += 1

    def root(self) -> bytes:
        if not self._frontier:
            return EMPTY_ROOT
        digest = self._frontier[-1]
        for left in reversed(self._frontier[:-1]):
            digest = node_hash(left, digest)
        return digest


def verify_entries(
    lines: Iterable[bytes],
    checkpoints: Iterable[tuple[int, bytes]],
    log_key: VerifierKey,
    *,
    since: bytes | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """The sans-IO core of :func:`verify_export`.

    ``lines`` are the entry lines with their newlines; ``checkpoints`` pairs the size a file
    is named for with the file's bytes; ``since`` is the officer's saved checkpoint note.
    """
    opened: dict[int, Checkpoint] = {}
    for named, data in checkpoints:
        try:
            checkpoint = open_checkpoint(data, log_key)
        except ValueError as exc:
            raise VerifyError(f"checkpoint {named}: {exc}") from None
        if checkpoint.size != named:
            raise VerifyError(
                f"checkpoint {named}: the file holds the checkpoint of size {checkpoint.size}"
            )
        opened[named] = checkpoint
    if not opened:
        raise VerifyError("the export holds no signed checkpoint")
    latest = opened[max(opened)]
    saved = None
    if since is not None:
        try:
            saved = open_checkpoint(since, log_key)
        except ValueError as exc:
            raise VerifyError(f"your saved checkpoint: {exc}") from None
        if saved.size > latest.size:
            raise VerifyError(
                f"truncated or rolled back: your saved checkpoint has {saved.size} entries, "
                f"the export's newest checkpoint only {latest.size}"
            )
    targets = sorted(opened)
    stream = _RootStream()
    good = 0  # the largest size whose checkpoint matched the entries
    position = 0  # next index into targets

    def check(size: int) -> None:
        nonlocal good, position
        root = stream.root()
        if size in opened:
            position += 1
            if opened[size].root != root:
                matched = f" (entries 0..{good - 1} match checkpoint {good})" if good else ""
                raise VerifyError(
                    f"checkpoint {size}: its root does not match the entries: one of entries "
                    f"{good}..{size - 1} was changed, added, removed or reordered{matched}"
                )
            good = size
        if saved is not None and saved.size == size and saved.root != root:
            raise VerifyError(
                f"not consistent with your saved checkpoint of size {size}: the log was "
                f"rewritten or forked before entry {size} (the export's entries 0..{size - 1} "
                "give another root)"
            )

    check(0)
    for line in lines:
        index = stream.size
        where = f"entry {index} ({ENTRIES_FILE} line {index + 1})"
        if not line.endswith(b"\n"):
            raise VerifyError(f"{where} does not end with a newline: the file was cut short")
        try:
            entry = AuditEntry.parse(line[:-1])
        except ValueError as exc:
            raise VerifyError(f"{where}: {exc}") from None
        if index >= latest.size:
            raise VerifyError(
                f"entries {latest.size} onwards ({ENTRIES_FILE} line {latest.size + 1}) are "
                f"not covered by any signed checkpoint (the newest has size {latest.size})"
            )
        stream.push(entry.leaf_hash)
        check(stream.size)
        if progress is not None and stream.size % PROGRESS_EVERY == 0:
            progress(stream.size)
    if stream.size < latest.size:
        short = targets[position]
        raise VerifyError(
            f"checkpoint {short}: {ENTRIES_FILE} ends after {stream.size} entries, but the "
            f"checkpoint covers {short}: entries were removed (truncated export)"
        )
    return VerifyReport(stream.size, len(opened), latest, saved)


def _checkpoint_files(directory: Path) -> list[tuple[int, bytes]]:
    folder = directory / CHECKPOINTS_DIR
    if not folder.is_dir():
        raise VerifyError(f"{directory} has no {CHECKPOINTS_DIR}/ directory: not an export")
    found = []
    for path in sorted(folder.iterdir()):
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match is None or not path.is_file():
            raise VerifyError(f"{CHECKPOINTS_DIR}/{path.name} is not named <tree size>.txt")
        found.append((int(match.group(1)), path.read_bytes()))
    return found


def verify_export(
    directory: Path,
    log_key: VerifierKey,
    *,
    since: bytes | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify an export directory; :class:`VerifyError` names the first problem."""
    entries = directory / ENTRIES_FILE
    if not entries.is_file():
        raise VerifyError(f"{directory} has no {ENTRIES_FILE}: not an export")
    checkpoints = _checkpoint_files(directory)
    with entries.open("rb") as lines:
        return verify_entries(lines, checkpoints, log_key, since=since, progress=progress)
