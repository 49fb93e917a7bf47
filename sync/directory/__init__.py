"""The company directory as it travels from the core to edges, and the edge's copy of it.

The core's master directory (``core/directory.py``) is global: every edge receives every
user, site, department and group of the company, first as a *snapshot*, then as *change
sets*, each the bytes of one bundle item. This package is what core and edges share, so that
edges never import ``core``:

- ``records``: :class:`Site`, :class:`Department`, :class:`User` (with :class:`UserRole`),
  :class:`Group`, :class:`GroupRemoved`, each validating itself; sans-IO;
- ``payload``: :class:`Payload`, the canonical JSON-lines encoding of one snapshot or change
  set and its parser, and the bundle item names :data:`SNAPSHOT_ITEM`, :data:`CHANGES_ITEM`;
  sans-IO;
- ``cache``: the edge's SQLite tables (``zd_*``), :func:`apply_snapshot`,
  :func:`apply_changes`, :func:`apply_payload`, :func:`edge_state`, :func:`edge_snapshot`.

``docs/core-directory.md`` describes the format and the apply rules.
"""

from __future__ import annotations

from sync.directory.cache import (
    EDGE_SCHEMA,
    USER_COLUMNS,
    ApplyOutcome,
    ApplyResult,
    EdgeState,
    SnapshotRequiredError,
    apply_changes,
    apply_payload,
    apply_snapshot,
    edge_snapshot,
    edge_state,
    user_from_row,
    user_to_row,
)
from sync.directory.payload import (
    CHANGES_ITEM,
    FORMAT,
    FORMAT_VERSION,
    MAX_PAYLOAD,
    MAX_RECORDS,
    SNAPSHOT_ITEM,
    Payload,
    PayloadKind,
)
from sync.directory.records import (
    MAX_MEMBERS,
    MAX_PHONES,
    MAX_TEXT,
    Department,
    Group,
    GroupRemoved,
    Record,
    Site,
    User,
    UserRole,
    check_text,
    record_from_json,
    record_to_json,
    sort_key,
)

__all__ = [
    "CHANGES_ITEM",
    "EDGE_SCHEMA",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_MEMBERS",
    "MAX_PAYLOAD",
    "MAX_PHONES",
    "MAX_RECORDS",
    "MAX_TEXT",
    "SNAPSHOT_ITEM",
    "USER_COLUMNS",
    "ApplyOutcome",
    "ApplyResult",
    "Department",
    "EdgeState",
    "Group",
    "GroupRemoved",
    "Payload",
    "PayloadKind",
    "Record",
    "Site",
    "SnapshotRequiredError",
    "User",
    "UserRole",
    "apply_changes",
    "apply_payload",
    "apply_snapshot",
    "check_text",
    "edge_snapshot",
    "edge_state",
    "record_from_json",
    "record_to_json",
    "sort_key",
    "user_from_row",
    "user_to_row",
]
