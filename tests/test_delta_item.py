"""A delta travelling as a bundle item, end to end through a real sealed bundle."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sync.bundle.codec import Item, open_bundle
from sync.delta.item import ITEM_TYPE, DeltaItem, apply_delta_item, make_delta_item
from tests.bundles import Federation, seal_simple
from tests.conftest import NOW


def test_directory_snapshot_travels_as_a_delta(tmp_path: Path) -> None:
    fed = Federation.build(tmp_path)
    old = b"".join(b"user%05d,Name %05d,plant-a,+7 900 %07d\n" % (i, i, i) for i in range(3000))
    new = old.replace(b"user01234,Name 01234", b"user01234,Renamed 01234")
    item = make_delta_item("directory.snapshot", old, new)
    wire = bytes(item)
    assert len(wire) < len(new) // 20  # a delta, not a copy
    data = seal_simple(fed.hq, fed.a, [Item(ITEM_TYPE, wire)])
    opened = open_bundle(
        data,
        trust=fed.a.trust,
        now=NOW,
        site="plant-a",
        receiving_key=fed.a.keys.receiving,
        receiving_certificate=fed.a.receiving_certificate,
    )
    got = DeltaItem.parse(opened.items[0].data)
    assert got == item
    held = {hashlib.sha256(old).digest(): old}
    assert apply_delta_item(got, held.get) == new
    with pytest.raises(LookupError, match="ask for a full copy"):
        apply_delta_item(got, {}.get)
    with pytest.raises(ValueError, match="not the one the delta needs"):
        apply_delta_item(got, lambda h: old + b"x")


def test_malformed_delta_items() -> None:
    with pytest.raises(ValueError, match="wrong magic"):
        DeltaItem.parse(b"XXXX\x01")
    with pytest.raises(ValueError, match="truncated"):
        DeltaItem.parse(b"ZDIT\x01\x05abc")
