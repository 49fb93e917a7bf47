"""The edge's copy of the company directory, kept current from the core's bundles.

Snapshots and change sets arrive on the ordered ``directory`` stream and are applied in the
transaction that records the bundle (``sync.directory.apply_payload``); users the change
disables are handed to ``on_disabled(conn, logins)`` in that same transaction, so that their
sessions end as the change lands (THREATS A7).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from sync.bundle.codec import OpenedBundle
from sync.directory import CHANGES_ITEM, SNAPSHOT_ITEM, apply_payload

DIRECTORY_STREAM = "directory"


class EdgeDirectory:
    def __init__(
        self,
        site: str,
        on_disabled: Callable[[sqlite3.Connection, list[str]], None] = lambda conn, logins: None,
    ) -> None:
        self.site = site
        self.on_disabled = on_disabled

    def apply(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        """The ``directory`` stream's handler for the sync agent."""
        for item in opened.items:
            if item.kind not in (SNAPSHOT_ITEM, CHANGES_ITEM):
                raise ValueError(f"unexpected item {item.kind!r} on the directory stream")
            result = apply_payload(conn, item.data, site=self.site)
            if result.disabled:
                self.on_disabled(conn, list(result.disabled))
