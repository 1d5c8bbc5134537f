"""What every projection kept in tables shares (projections/base.py, TableProjector): its
upkeep covers every table of the history and usage projections, its default replay
leaves the rows apply leaves, and the history's reads that sessions use in place of its
tables (read_user_turn, own_item_counts) answer from them; on every backend."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from eventstore import (
    BranchCreated,
    BranchSwitched,
    ItemsAdded,
    RecordedEvent,
    Rows,
    UsageRecorded,
    encode_items,
)
from projections import HistoryProjector, UsageProjector
from projections.base import SCRATCH_PREFIX, TableProjector
from projections.history import item_seq

from ..conftest import Backend

# Rows in every table of both projections: items, a branch and a current branch;
# a session's usage, an anchored turn and a branch's shape.
EVENTS = [
    ItemsAdded(items=encode_items([{"role": "user", "content": "q"}, {"role": "assistant"}])),
    UsageRecorded(
        turn=1,
        requests=1,
        input_tokens=2,
        output_tokens=3,
        total_tokens=5,
        anchor_branch="main",
        anchor_seq=item_seq(1, 0),
    ),
    BranchCreated("x", "main", fork_seq=item_seq(1, 0)),
    BranchSwitched("x"),
]


def merged(live: list[Rows]) -> Rows:
    """The rows of several streams' ``live_rows``, table by table."""
    out: Rows = {}
    for rows in live:
        for table, found in rows.items():
            out.setdefault(table, {}).update(found)
    return out


@pytest.mark.parametrize("make", [HistoryProjector, UsageProjector])
async def test_the_upkeep_covers_every_table(backend: Backend, make: type[TableProjector]) -> None:
    projector = make()
    store = backend.store(projectors=(projector,))
    for sid in ("a", "b"):
        await store.append(sid, EVENTS)
    events: list[RecordedEvent] = [*await store.read_stream("a"), *await store.read_stream("b")]
    events.sort(key=lambda e: e.position)

    def upkeep(conn: Connection) -> dict[str, Any]:
        found: dict[str, Any] = {"snapshot": projector.snapshot(conn)}
        found["ids"] = projector.stream_ids(conn)
        found["live"] = merged([projector.live_rows(conn, sid) for sid in sorted(found["ids"])])
        projector.reset(conn)
        found["left"] = [
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in projector.metadata.sorted_tables
        ]
        found["ids after reset"] = projector.stream_ids(conn)
        projector.replay(conn, events)
        found["replayed"] = projector.snapshot(conn)
        return found

    found = await store.run(upkeep, write=True)
    tables = {t.name for t in projector.metadata.sorted_tables}
    assert {t.name for t in projector.tables.values()} == tables
    assert set(found["snapshot"]) == set(projector.tables)
    for name, rows in found["snapshot"].items():
        assert {key[0] for key in rows} == {"a", "b"}, name  # rows of both streams
    assert found["ids"] == {"a", "b"}
    assert found["snapshot"] == found["live"]
    assert found["left"] == [0] * len(tables)
    assert found["ids after reset"] == set()
    assert found["replayed"] == found["snapshot"]


@pytest.mark.parametrize("make", [HistoryProjector, UsageProjector])
def test_scratch_is_the_same_projection_on_scratch_tables(make: type[TableProjector]) -> None:
    projector = make()
    scratch = projector.scratch()
    assert type(scratch) is type(projector)
    assert set(scratch.tables) == set(projector.tables)
    for name, table in scratch.tables.items():
        assert table.name == projector.tables[name].name.replace("convstore", SCRATCH_PREFIX, 1)
    assert not {t.name for t in scratch.metadata.sorted_tables} & {
        t.name for t in projector.metadata.sorted_tables
    }


async def test_history_reads_for_the_sessions(backend: Backend) -> None:
    """The turn ordinal of a stored user message, and how many items each session's
    branch holds: what sessions/usage.py, sessions/sdk_import.py and sessions/admin.py
    read through the projection instead of its table."""
    history = HistoryProjector()
    store = backend.store(projectors=(history,))
    user, other = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    await store.append("a", [ItemsAdded(items=encode_items([user, other, user]))])
    await store.append("a", [ItemsAdded(items=encode_items([other]), branch_id="x")])
    await store.append("b", [ItemsAdded(items=encode_items([other]))])

    def read(conn: Connection) -> tuple[list[int | None], dict[str, int], dict[str, int]]:
        turns = [
            history.read_user_turn(conn, "a", "main", item_seq(1, index)) for index in range(4)
        ]
        return turns, history.own_item_counts(conn, "main"), history.own_item_counts(conn, "x")

    turns, main, x = await store.run(read)
    assert turns == [1, None, 2, None]  # the second user message is turn 2; no item 4
    assert main == {"a": 3, "b": 1}
    assert x == {"a": 1}
