"""The history projection: the table the append keeps equals the pure fold of the log."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, delete, insert, select, update

from eventstore import (
    BranchCreated,
    BranchDeleted,
    BranchSwitched,
    Event,
    EventStore,
    ItemPopped,
    ItemsAdded,
    SessionCleared,
    SessionStarted,
    decode_item,
    encode_items,
)
from projections import HistoryProjector, fold, rebuild, verify
from projections.history import (
    MAX_EVENT_ITEM_BYTES,
    HistoryState,
    ItemKind,
    apply,
    batch_seqs,
    describe,
    describe_all,
    item_batches,
    item_seq,
)
from projections.history_table import locate_items

from ..conftest import Backend
from ..eventstore.raw_events import insert_items_added

HISTORY = HistoryProjector()


def added(*items: Any, branch: str = "main") -> ItemsAdded:
    return ItemsAdded(items=encode_items(items), branch_id=branch)


def items_of(state: HistoryState, branch: str = "main") -> list[Any]:
    return [decode_item(raw) for raw in state.items(branch)]


def test_fold_adds_pops_and_clears() -> None:
    state = HistoryState()
    state = apply(state, added({"n": 1}, {"n": 2}), version=1)
    state = apply(state, added({"n": 3}), version=2)
    assert items_of(state) == [{"n": 1}, {"n": 2}, {"n": 3}]
    popped = apply(state, ItemPopped(seq=item_seq(2, 0)), version=3)
    assert items_of(popped) == [{"n": 1}, {"n": 2}]
    assert items_of(state) == [{"n": 1}, {"n": 2}, {"n": 3}], "apply must not mutate"
    cleared = apply(popped, SessionCleared(), version=4)
    assert items_of(cleared) == []
    assert items_of(apply(cleared, added({"n": 4}), version=5)) == [{"n": 4}]


def test_fold_keeps_branches_apart() -> None:
    state = apply(HistoryState(), added({"a": 1}), version=1)
    state = apply(state, added({"b": 1}, branch="b"), version=2)
    state = apply(state, SessionCleared(branch_id="main"), version=3)
    assert items_of(state) == []
    assert items_of(state, "b") == [{"b": 1}]


def test_item_keys_increase_along_a_stream() -> None:
    keys = [item_seq(v, i) for v in range(1, 50) for i in (0, 1, 7, (1 << 20) - 1)]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


async def test_table_tracks_each_append(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append(
        "s", [added({"n": 1}), added({"n": 2}, {"n": 3})], on_new_stream=[SessionStarted()]
    )
    rows = await store.run(lambda c: HISTORY.read_items(c, "s", "main", None))
    assert [msgspec.json.decode(r) for r in rows] == [{"n": 1}, {"n": 2}, {"n": 3}]
    newest = await store.run(lambda c: HISTORY.read_items(c, "s", "main", 2))
    assert [msgspec.json.decode(r) for r in newest] == [{"n": 2}, {"n": 3}]
    seq, item = await store.run(lambda c: HISTORY.read_top(c, "s", "main"))  # type: ignore[misc]
    assert msgspec.json.decode(item) == {"n": 3}
    assert seq == item_seq(3, 1)


# Items of every kind the history classifies: user turns, tool calls (named by "name",
# by their type, or by an MCP server), outputs, and JSON that is no SDK item at all.
ITEMS: list[Any] = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
    {"type": "function_call", "name": "get_weather", "call_id": "c1", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {"type": "mcp_call", "server_label": "files", "name": "read"},
    {"type": "web_search_call", "status": "completed"},
    {"type": "custom_tool_call", "name": "run", "namespace": "shell"},
    {"role": "user", "type": {"not": "a string"}, "name": "odd"},
    {"v": 1},
    [1, 2],
    "text",
]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.integers(0, len(ITEMS) - 1), min_size=1, max_size=4)),
        st.tuples(st.just("pop"), st.none()),
        st.tuples(st.just("clear"), st.booleans()),  # True: every branch
        st.tuples(st.just("branch"), st.none()),  # fork the current branch at its top
        st.tuples(st.just("switch"), st.none()),  # back to main
        st.tuples(st.just("delete"), st.none()),  # the current branch, unless main
    ),
    max_size=25,
)


async def apply_ops(store: EventStore, stream: str, ops: list[tuple[str, Any]]) -> None:
    """Append the events of ``ops`` to ``stream``, one append each."""
    current, created = "main", 0
    for op, arg in ops:
        events: list[Event] = []
        if op == "add":
            events = [added(*(ITEMS[i] for i in arg), branch=current)]
        elif op == "pop":
            top = await store.run(lambda c, b=current: HISTORY.read_top(c, stream, b))  # type: ignore[misc]
            if top is not None:
                events = [ItemPopped(seq=top[0], branch_id=current)]
        elif op == "clear":
            events = [SessionCleared(branch_id=None if arg else current)]
        elif op == "branch":
            top = await store.run(lambda c, b=current: HISTORY.read_top(c, stream, b))  # type: ignore[misc]
            created += 1
            child = f"b{created}"
            fork = 0 if top is None else top[0]
            events = [BranchCreated(child, current, fork), BranchSwitched(child)]
            current = child
        elif op == "switch":
            events, current = [BranchSwitched("main")], "main"
        elif current != "main":
            events, current = [BranchDeleted(current)], "main"
        if events:
            await store.append(stream, events)


async def table_rows(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the history tables, every column as stored, in key order."""

    def read(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
        found = {}
        for table in (HISTORY.items, HISTORY.branches, HISTORY.current):
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            found[table.name] = [
                tuple(bytes(v) if isinstance(v, bytes | memoryview) else v for v in row)
                for row in rows
            ]
        return found

    return await store.run(read)


async def assert_tables_equal_fold_and_rebuild(store: EventStore, stream: str) -> list[bytes]:
    """The main branch the table shows equals the fold of ``stream``'s log, ``verify``
    finds no difference, and a rebuild leaves every row as it was; return the items the
    table showed (a stream with no events folds to an empty history)."""
    live = await store.run(lambda c: HISTORY.read_items(c, stream, "main", None))
    assert live == fold(await store.read_stream(stream)).items()
    report = await verify(store)
    assert report.ok, [str(d) for d in report.differences]
    rows = await table_rows(store)
    await rebuild(store)
    assert await table_rows(store) == rows
    return live


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
async def test_live_table_equals_fold_and_rebuild(
    backend: Backend, ops: list[tuple[str, Any]]
) -> None:
    """Guarantee 5: live table == fold of the log == rebuild from the log, column for
    column (a rebuild writes its rows by another path than the append: ``replay``)."""
    store = backend.store(projectors=(HISTORY,))
    stream = f"s{id(ops)}"
    await apply_ops(store, stream, ops)
    live = await assert_tables_equal_fold_and_rebuild(store, stream)
    assert await store.run(lambda c: HISTORY.read_items(c, stream, "main", None)) == live


async def test_replay_writes_the_rows_the_appends_wrote(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild goes through ``HistoryProjector.replay`` (bulk rows, turns numbered in
    Python); it must leave every row the appends left, column for column, also when
    the log comes in small batches (each one looks up the last turn of its branches)."""
    store = backend.store(projectors=(HISTORY,))
    ops: list[tuple[str, Any]] = [
        ("add", [0, 1, 2, 3, 0, 4, 5]),
        ("add", list(range(len(ITEMS)))),
        ("pop", None),
        ("add", [0, 2, 3]),
        ("branch", None),
        ("add", [0, 1, 0]),
        ("pop", None),
        ("pop", None),
        ("add", [0, 6, 7, 0]),
        ("switch", None),
        ("pop", None),
        ("add", [0] * 130 + [1, 2, 3] * 40),  # more than a hundred rows at once
        ("clear", False),
        ("add", [1, 0, 0]),
        ("branch", None),
        ("add", [0, 3]),
        ("delete", None),
        ("add", [8, 9, 10, 0]),
        ("clear", True),
        ("add", [0, 1, 2, 3]),
    ]
    await apply_ops(store, "s", ops)
    await apply_ops(store, "t", ops[:6])
    live = await table_rows(store)
    assert any(row[-1] is not None and row[-1] > 1 for row in live["convstore_items"])

    replayed: list[int] = []
    original = HistoryProjector.replay

    def spy(self: HistoryProjector, conn: Connection, events: Any) -> None:
        replayed.append(len(events))
        original(self, conn, events)

    monkeypatch.setattr(HistoryProjector, "replay", spy)
    await rebuild(store)
    assert replayed, "rebuild did not go through HistoryProjector.replay"
    assert await table_rows(store) == live

    events = await store.read_all()
    for size in (1, 2, 5):

        def replay_in_slices(conn: Connection, size: int = size) -> None:
            HISTORY.reset(conn)
            for at in range(0, len(events), size):
                HISTORY.replay(conn, events[at : at + size])

        await store.run(replay_in_slices, write=True)
        assert await table_rows(store) == live, f"replayed {size} event(s) at a time"
    assert (await verify(store)).ok


def test_describe_all_classifies_as_describe_does() -> None:
    datas = [msgspec.json.encode(item) for item in ITEMS]
    expected = [describe(d) for d in datas]
    assert describe(datas[7]) == ItemKind("user", "odd")  # a "type" that is no string
    for chosen in ([0, 1, 2, 3], list(range(len(ITEMS))), [4, 4, 8], [9], []):
        kinds, tools = describe_all([msgspec.Raw(datas[i]) for i in chosen])
        assert list(zip(kinds, tools, strict=True)) == [
            (expected[i].kind, expected[i].tool_name) for i in chosen
        ]


async def test_verify_reports_every_difference(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append("s", [added({"n": 1}, {"n": 2}, {"n": 3})])
    t = HISTORY.items

    def tamper(conn: Any) -> None:
        conn.execute(delete(t).where(t.c.seq == item_seq(1, 0)))
        conn.execute(update(t).where(t.c.seq == item_seq(1, 1)).values(item=b'{"n":20}'))
        conn.execute(
            insert(t).values(stream_id="s", branch_id="main", seq=5, item=b"{}", kind="other")
        )

    await store.run(tamper, write=True)
    report = await verify(store)
    assert not report.ok
    found = {d.key: (d.live is not None, d.rebuilt is not None) for d in report.differences}
    assert found == {
        ("s", "main", item_seq(1, 0)): (False, True),  # deleted from the live table
        ("s", "main", item_seq(1, 1)): (True, True),  # changed
        ("s", "main", 5): (True, False),  # not in the log
    }
    await rebuild(store)
    assert (await verify(store)).ok
    rows = await store.run(lambda c: HISTORY.read_items(c, "s", "main", None))
    assert [msgspec.json.decode(r) for r in rows] == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_projection_added_to_an_existing_log_starts_consistent(
    shared_backend: Backend,
) -> None:
    """Needs a second store on one database, which ``:memory:`` cannot give."""
    bare = shared_backend.store()
    await bare.append("s", [added({"n": 1})])
    await bare.close()
    store = shared_backend.store(projectors=(HISTORY,))
    rows = await store.run(lambda c: HISTORY.read_items(c, "s", "main", None))
    assert [msgspec.json.decode(r) for r in rows] == [{"n": 1}]
    assert (await verify(store)).ok


# -- items point into the log --------------------------------------------------------


async def test_items_are_stored_once_as_slices_of_their_event(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append("s", [added({"n": 1}, {"text": "é" * 50}), added([1, {"x": None}])])
    t = HISTORY.items

    def rows(conn: Any) -> list[Any]:
        return conn.execute(select(t.c.item, t.c.item_at, t.c.item_size).order_by(t.c.seq)).all()

    stored = await store.run(rows)
    assert [r.item for r in stored] == [None, None, None], "a copy of an item was stored"
    events = await store.read_stream("s")
    payloads = [e.payload for e in events for _ in e.event.items]  # type: ignore[union-attr]
    sliced = [p[r.item_at : r.item_at + r.item_size] for p, r in zip(payloads, stored, strict=True)]
    assert [msgspec.json.decode(b) for b in sliced] == [
        {"n": 1},
        {"text": "é" * 50},
        [1, {"x": None}],
    ]
    found = await store.run(lambda c: HISTORY.read_items(c, "s", "main", None))
    assert [msgspec.json.decode(r) for r in found] == [
        {"n": 1},
        {"text": "é" * 50},
        [1, {"x": None}],
    ]


def test_items_are_located_byte_for_byte_or_not_at_all() -> None:
    items = [b'{"a":1}', b'"items"', b"[]"]
    payload = b'{"type":"ItemsAdded","items":[{"a":1},"items",[]],"branch_id":"main"}'
    offsets = locate_items(payload, items)
    assert offsets is not None
    assert [payload[at : at + len(i)] for at, i in zip(offsets, items, strict=True)] == items
    # Another layout (spaces after separators): no pointer, so the projection copies.
    spaced = b'{"type": "ItemsAdded", "items": [{"a":1}, "items", []]}'
    assert locate_items(spaced, items) is None
    assert locate_items(b'{"messages":[{"a":1},"items",[]]}', items) is not None
    assert locate_items(b'{"type":"ItemsAdded"}', items) is None


async def test_an_item_not_found_in_its_payload_is_copied(backend: Backend) -> None:
    """A payload in another layout (here: a revision-1 event written with spaces, as
    another encoder might) cannot be pointed into: its items are copied, and read,
    verified and rebuilt like any other."""
    store = backend.store(projectors=(HISTORY,))
    await store.append("s", [added({"n": 1})])
    spaced = b'{"type": "ItemsAdded", "messages": [{"n": 2}, {"n": 3}]}'

    def write_legacy(conn: Any) -> None:
        insert_items_added(
            conn, stream_id="legacy", version=1, position=1 << 40, payload=spaced, hash="0" * 64
        )

    await store.run(write_legacy, write=True)
    await rebuild(store)
    t = HISTORY.items
    copies = await store.run(
        lambda c: c.execute(select(t.c.item).where(t.c.stream_id == "legacy")).scalars().all()
    )
    assert [msgspec.json.decode(c) for c in copies] == [{"n": 2}, {"n": 3}]
    found = await store.run(lambda c: HISTORY.read_items(c, "legacy", "main", None))
    assert [msgspec.json.decode(r) for r in found] == [{"n": 2}, {"n": 3}]
    assert (await verify(store)).ok


async def test_verify_finds_a_pointer_moved(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append("s", [added({"n": 1}, {"n": 22})])
    t = HISTORY.items
    await store.run(
        lambda c: c.execute(
            update(t).where(t.c.seq == item_seq(1, 1)).values(item_at=t.c.item_at + 1)
        ),
        write=True,
    )
    report = await verify(store)
    assert [d.key for d in report.differences] == [("s", "main", item_seq(1, 1))]


def test_add_items_is_cut_into_bounded_events() -> None:
    small = [msgspec.Raw(b'"' + b"x" * 98 + b'"')] * 500  # 100 bytes each
    batches = item_batches(small)
    assert [len(b) for b in batches] == [163, 163, 163, 11]
    assert all(sum(len(i) for i in b) <= MAX_EVENT_ITEM_BYTES for b in batches)
    big = msgspec.Raw(b'"' + b"y" * MAX_EVENT_ITEM_BYTES + b'"')
    assert [len(b) for b in item_batches([small[0], big, small[0]])] == [1, 1, 1]
    assert [i for b in item_batches(small) for i in b] == small
    assert batch_seqs(7, [(small[0],) * 2, (small[0],)]) == [
        item_seq(7, 0),
        item_seq(7, 1),
        item_seq(8, 0),
    ]
