"""``repair``: a log whose positions do not follow versions within a session (as
PostgreSQL appends with several waiters on one session wrote them before each append
took its session's advisory lock) fails its audit, and ``checkpoint``, ``replay`` and
export → import refuse it; repair renumbers each such session's positions in version
order from its own positions, touching nothing else, and then they all succeed."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from eventstore import EventStore, IntegrityError, repair_positions
from eventstore.backends.base import Dialect
from eventstore.backends.postgres import PostgresDialect
from sessions import StoreSession
from sessions.admin import (
    AuditFailedError,
    audit_database,
    repair,
    replay,
    take_checkpoints,
    verify_projections,
)
from sessions.base import HISTORY
from sessions.cli import main
from sessions.transfer import export_events, import_events

from .conftest import Backend


async def rows(store: EventStore) -> list[Any]:
    """Every event row, by session and version."""
    return await store.run(
        lambda conn: list(
            conn.execute(
                text(
                    "SELECT stream_id, version, position, event_id, hash, payload "
                    "FROM convstore_events ORDER BY stream_id, version"
                )
            )
        )
    )


async def swap_positions(store: EventStore, a: int, b: int) -> None:
    """Exchange the positions of two events behind the store's back (what the
    PostgreSQL ordering fault left: the hashes do not cover positions)."""

    def swap(conn: Any) -> None:
        conn.execute(
            text("UPDATE convstore_events SET position = -position WHERE position = :a"), {"a": a}
        )
        conn.execute(
            text("UPDATE convstore_events SET position = :a WHERE position = :b"), {"a": a, "b": b}
        )
        conn.execute(
            text("UPDATE convstore_events SET position = :b WHERE position = :m"), {"b": b, "m": -a}
        )

    await store.run(swap, write=True)


async def position_of(store: EventStore, sid: str, version: int) -> int:
    events = await store.read_stream(sid)
    return events[version - 1].position


async def export(store: EventStore) -> bytes:
    out = io.BytesIO()
    await export_events(store, out)
    return out.getvalue()


@pytest.fixture
async def store(backend: Backend) -> EventStore:
    """alice (v1..v6) and bob (v1..v3), their appends interleaved."""
    store = backend.store(projectors=(HISTORY,))
    alice, bob = StoreSession("alice", store), StoreSession("bob", store)
    for n in range(4):
        await alice.add_items([{"role": "user", "content": f"a{n}"}])
        if n < 2:
            await bob.add_items([{"role": "user", "content": f"b{n}"}])
    await alice.pop_item()
    return store


async def test_repair_puts_a_reordered_log_right(store: EventStore, tmp_path: Path) -> None:
    before = await rows(store)
    await swap_positions(
        store, await position_of(store, "alice", 2), await position_of(store, "alice", 5)
    )
    await swap_positions(
        store, await position_of(store, "bob", 2), await position_of(store, "bob", 3)
    )
    report = await audit_database(store)
    assert {(f.stream_id, f.version) for f in report.findings} == {
        ("alice", 3),  # its position is below v2's, which now holds v5's
        ("alice", 5),
        ("bob", 3),
    }
    assert all("reordered" in f.problem for f in report.findings)
    with pytest.raises(AuditFailedError):
        await take_checkpoints(store)
    with pytest.raises(AuditFailedError):
        await replay(store)
    exported = await export(store)
    async with EventStore(tmp_path / "refused.db", projectors=[HISTORY]) as target:
        with pytest.raises(IntegrityError, match="skips"):
            await import_events(target, io.BytesIO(exported))

    dry = await repair(store, dry_run=True)
    assert dry.dry_run
    assert [(s.stream_id, s.events, s.moved) for s in dry.streams] == [
        ("alice", 6, 2),
        ("bob", 3, 2),
    ]
    assert not (await audit_database(store)).ok  # a dry run changes nothing

    done = await repair(store)
    assert [(s.stream_id, s.moved) for s in done.streams] == [("alice", 2), ("bob", 2)]
    assert done.streams[0].first_position == await position_of(store, "alice", 2)
    after = await rows(store)
    # Each session got its own positions back, in version order; nothing else changed.
    assert [r[:2] + r[3:] for r in after] == [r[:2] + r[3:] for r in before]
    assert [r.position for r in after] == [r.position for r in before]
    assert (await audit_database(store)).ok
    assert await take_checkpoints(store)
    assert await replay(store) > 0
    assert (await verify_projections(store)).ok
    first = await export(store)
    async with EventStore(tmp_path / "copy.db", projectors=[HISTORY]) as target:
        await import_events(target, io.BytesIO(first))
        assert await export(target) == first

    again = await repair(store)  # idempotent
    assert again.streams == ()
    assert await rows(store) == after


async def test_a_clean_log_needs_no_repair(store: EventStore) -> None:
    before = await rows(store)
    for dry_run in (True, False):
        report = await repair_positions(store, dry_run=dry_run)
        assert report.streams == ()
        assert report.moved == 0
    assert await rows(store) == before


async def test_a_projection_catching_up_past_a_moved_position_starts_again(
    store: EventStore,
) -> None:
    moved = await position_of(store, "alice", 3)
    await swap_positions(store, moved, await position_of(store, "alice", 4))
    # history is behind, having replayed the log up to the moved position (in the old
    # order it would never see one of the two events, and see the other twice).
    await store.run(
        lambda conn: conn.execute(
            text(
                "UPDATE convstore_tracking SET position = :p, live = :f "
                "WHERE projection = 'history'"
            ),
            {"p": moved, "f": False},
        ),
        write=True,
    )
    report = await repair_positions(store)
    assert report.projections_reset == ("history",)
    tracking = await store.run(
        lambda conn: conn.execute(
            text("SELECT position, live FROM convstore_tracking WHERE projection = 'history'")
        ).one()
    )
    assert (tracking.position, bool(tracking.live)) == (0, False)
    await store.catch_up([HISTORY])
    assert (await audit_database(store)).ok
    items = await StoreSession("alice", store).get_items()
    assert [i["content"] for i in items] == ["a0", "a1", "a2"]


def test_the_command(shared_backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    db = shared_backend.target

    async def written_out_of_order() -> None:
        async with EventStore(db, projectors=[HISTORY]) as store:
            alice = StoreSession("alice", store)
            for n in range(3):
                await alice.add_items([{"role": "user", "content": f"a{n}"}])
            two, three = await position_of(store, "alice", 2), await position_of(store, "alice", 3)
            await swap_positions(store, two, three)

    asyncio.run(written_out_of_order())

    def run(*argv: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as exit_info:
            main([db, *argv])
        assert isinstance(exit_info.value.code, int)
        return exit_info.value.code, capsys.readouterr().out

    assert run("audit")[0] == 1
    code, out = run("repair", "--dry-run", "--json")
    assert code == 0
    reported = json.loads(out)
    assert reported["dry_run"] is True
    assert [(s["session"], s["moved"]) for s in reported["sessions"]] == [("alice", 2)]
    assert run("audit")[0] == 1
    code, out = run("repair")
    assert code == 0
    assert "alice" in out
    assert "renumbered 2 event(s) in 1 session(s)" in out
    assert run("audit")[0] == 0
    code, out = run("repair", "--json")
    assert json.loads(out) == {"dry_run": False, "sessions": [], "projections_reset": []}
    code, out = run("repair")
    assert code == 0
    assert "nothing to repair" in out


async def test_repair_of_a_log_written_out_of_order_on_postgres(
    shared_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault itself: appends that do not take their session's advisory lock, from
    one request object each, twenty at once on one session, until the log is out of
    order; repair then makes it audit clean."""
    if shared_backend.name != "postgres":
        pytest.skip("the ordering fault was PostgreSQL's (transaction ids taken while waiting)")
    monkeypatch.setattr(PostgresDialect, "lock_streams", Dialect.lock_streams)
    engine_store = shared_backend.store(projectors=(HISTORY,))
    await engine_store.ensure_tables()

    async def request(n: int) -> None:
        async with EventStore(engine_store.engine, projectors=[HISTORY]) as store:
            await StoreSession("race", store).add_items([{"role": "user", "content": f"m{n}"}])

    for _ in range(20):
        await asyncio.gather(*(request(n) for n in range(20)))
        if not (await audit_database(engine_store)).ok:
            break
    report = await audit_database(engine_store)
    assert report.findings, "20 rounds of 20 concurrent appends stayed in order"
    assert {f.stream_id for f in report.findings} == {"race"}
    monkeypatch.undo()
    repaired = await repair(engine_store)
    assert [s.stream_id for s in repaired.streams] == ["race"]
    assert (await audit_database(engine_store)).ok
    assert await replay(engine_store) > 0
