"""What the federation's thread does to the web layer (A7): a directory change that disables
a user, applied by the real ``EdgeDirectory`` on a connection of its own in another thread,
disables the account, ends the sessions and closes the WebSockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from edge.auth.results import PUBLIC_FAILURE
from edge.directory import EdgeDirectory
from edge.web.frames import CLOSE_SESSION_ENDED
from edge.web.inbound import Inbound
from sync.bundle.codec import Item, OpenedBundle
from sync.bundle.store import connect, transaction
from sync.directory import CHANGES_ITEM, Payload, PayloadKind
from sync.directory.records import User
from tests.test_edge_api import Browser, Edge, edge_fixture, error_of, load_directory  # noqa: F401
from tests.test_edge_ws import closed_with, open_ws, receive


def changes(*users: User, base: int = 1) -> OpenedBundle:
    payload = Payload.build(
        PayloadKind.CHANGES,
        directory="d" * 32,
        site="plant-a",
        version=base + 1,
        base=base,
        records=users,
    )
    # The directory stream's handler reads only the items of a bundle that passed its checks.
    return OpenedBundle(cast(Any, None), cast(Any, None), (Item(CHANGES_ITEM, bytes(payload)),))


def test_a7_a_user_disabled_in_the_directory_loses_sessions_and_websockets(edge: Edge) -> None:
    edge.enroll("ivanov")
    edge.enroll("petrov")
    load_directory(edge)
    inbound = Inbound(edge.state)
    directory = EdgeDirectory("plant-a", on_disabled=inbound.on_disabled)
    gone = User("ivanov", "Иванов Иван Петрович", "plant-a", enabled=False)
    no_account = User("ivanova", "Иванова Мария", "plant-a", enabled=False)

    def federation_pass() -> None:
        conn = connect(edge.config.db)
        try:
            with transaction(conn):
                directory.apply(conn, changes(gone, no_account))
            inbound.after_pass(frozenset({"directory"}))
        finally:
            conn.close()

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        p = b.other()
        await p.login("petrov")
        async with open_ws(b) as ws, open_ws(p) as other:
            await receive(ws), await receive(other)
            await asyncio.to_thread(federation_pass)
            assert await closed_with(ws) == CLOSE_SESSION_ENDED
            assert await receive(other) == {"type": "directory.changed", "topic": "site"}
        assert (await b.get("/api/me")).status_code == 401
        edge.clock.tick()
        assert await error_of(await b.other().login("ivanov"), 401) == PUBLIC_FAILURE
        assert (await p.get("/api/me")).status_code == 200

    edge.play(scenario)
    account = edge.state.auth.store.account("ivanov")
    assert account is not None and not account.enabled
    rows = edge.state.db.get().execute(
        "SELECT action, login, actor, reason FROM web_audit WHERE action LIKE 'disabled%'"
    )
    assert list(rows) == [("disabled-by-directory", "ivanov", "core", "sessions ended: 1")]


def test_a7_nothing_is_disabled_if_the_bundle_rolls_back(edge: Edge) -> None:
    edge.enroll("ivanov")
    load_directory(edge)
    inbound = Inbound(edge.state)
    directory = EdgeDirectory("plant-a", on_disabled=inbound.on_disabled)
    login = edge.state.auth.login(
        "ivanov", "correct horse battery staple", edge.code("ivanov"), "192.0.2.1", edge.clock.now
    )
    assert login.session is not None
    conn = connect(edge.config.db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        directory.apply(conn, changes(User("ivanov", "Иванов", "plant-a", enabled=False)))
        conn.execute("ROLLBACK")  # a later check of the bundle failed
    finally:
        conn.close()
    assert edge.state.auth.validate_session(login.session.token, edge.clock.now) is not None
    account = edge.state.auth.store.account("ivanov")
    assert account is not None and account.enabled
    assert edge.state.db.get().execute("SELECT count(*) FROM web_audit").fetchone() == (0,)


def test_after_pass_without_a_directory_change_is_quiet(edge: Edge) -> None:
    inbound = Inbound(edge.state)

    async def scenario(b: Browser) -> None:
        edge.enroll("ivanov")
        await b.login("ivanov")
        async with open_ws(b) as ws:
            await receive(ws)
            await asyncio.to_thread(inbound.after_pass, frozenset({"chat"}))
            await ws.send(json.dumps({"type": "ping"}))
            assert (await receive(ws))["type"] == "pong"  # nothing was pushed before it

    edge.play(scenario)
