"""The history projection: the table the append keeps equals the pure fold of the log."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, update

from eventstore import (
    ItemPopped,
    ItemsAdded,
    SessionCleared,
    SessionStarted,
    decode_item,
    encode_items,
    schema,
)
from projections import HistoryProjector, fold, rebuild, verify
from projections.history import (
    MAX_EVENT_ITEM_BYTES,
    HistoryState,
    apply,
    batch_seqs,
    item_batches,
    item_seq,
)
from projections.history_table import locate_items

from ..conftest import Backend

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


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.integers(0, 99), min_size=1, max_size=3)),
        st.tuples(st.just("pop"), st.none()),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=25,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
async def test_live_table_equals_fold_and_rebuild(
    backend: Backend, ops: list[tuple[str, Any]]
) -> None:
    """Guarantee 5: live table == fold of the log == rebuild from the log."""
    store = backend.store(projectors=(HISTORY,))
    stream = f"s{id(ops)}"
    for op, arg in ops:
        if op == "add":
            await store.append(stream, [added(*({"v": v} for v in arg))])
        elif op == "pop":
            top = await store.run(lambda c: HISTORY.read_top(c, stream, "main"))
            if top is not None:
                await store.append(stream, [ItemPopped(seq=top[0])])
        else:
            await store.append(stream, [SessionCleared()])
    live = await store.run(lambda c: HISTORY.read_items(c, stream, "main", None))
    folded = fold(await store.read_stream(stream)) if ops else HistoryState()
    assert live == folded.items()
    report = await verify(store)
    assert report.ok, [str(d) for d in report.differences]
    await rebuild(store)
    assert await store.run(lambda c: HISTORY.read_items(c, stream, "main", None)) == live


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
    e = schema.events
    spaced = b'{"type": "ItemsAdded", "messages": [{"n": 2}, {"n": 3}]}'

    def write_legacy(conn: Any) -> None:
        conn.execute(
            insert(e).values(
                position=1 << 40,
                stream_id="legacy",
                version=1,
                event_id="00000000-0000-0000-0000-000000000001",
                event_type="ItemsAdded",
                schema_version=1,
                payload=spaced,
                recorded_at=0,
                hash="0" * 64,
            )
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
