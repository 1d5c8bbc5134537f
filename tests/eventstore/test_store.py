"""The store's contract, run unchanged on every backend."""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any

import msgspec
import pytest

from eventstore import (
    ANY,
    NO_STREAM,
    AppendResult,
    CancelledAfterCommit,
    ConcurrencyError,
    EventStore,
    IntegrityError,
    InvalidArgumentError,
    ItemPopped,
    ItemsAdded,
    NewEvent,
    RecordedEvent,
    SchemaError,
    SerializationError,
    SessionCleared,
    SessionStarted,
    StoreClosedError,
    decode_item,
    decode_items,
    encode_item,
    encode_items,
)
from eventstore.coalesce import MAX_GROUP_BYTES, MAX_GROUP_EVENTS

from ..conftest import Backend, make_engine
from .chain_check import assert_chain_valid
from .positions import assert_positions


def added(*items: object) -> ItemsAdded:
    return ItemsAdded(items=encode_items(list(items)))


async def snapshot(store: EventStore) -> list[tuple[int, str, int, str, bytes, str]]:
    """Everything the log holds, to compare before and after a refused write."""
    return [
        (e.position, e.stream_id, e.version, e.event_id, e.payload, e.hash)
        for e in await store.read_all()
    ]


# -- appending and optimistic concurrency ---------------------------------------------


async def test_versions_and_positions_count_from_one(backend: Backend) -> None:
    store = backend.store()
    first = await store.append("a", [added(1), added(2)], expected_version=NO_STREAM)
    second = await store.append("b", [added(3)], expected_version=0)
    third = await store.append("a", [added(4)], expected_version=2)
    assert (first.first_version, first.last_version) == (1, 2)
    assert first.last_position == first.first_position + 1  # one append: consecutive
    assert (second.first_version, third.first_version) == (1, 3)
    positions = [first.first_position, first.last_position]
    positions += [second.first_position, third.first_position]
    assert_positions(store, positions)
    log = await store.read_all()
    assert [(e.stream_id, e.version, e.position) for e in log] == [
        ("a", 1, positions[0]),
        ("a", 2, positions[1]),
        ("b", 1, positions[2]),
        ("a", 3, positions[3]),
    ]
    assert await store.head_position() == positions[3]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (0, 1),  # a new stream is at version 0, not 1
        (2, NO_STREAM),
        (2, 0),
        (2, 1),
        (2, 3),
    ],
)
async def test_wrong_expected_version_writes_nothing(
    backend: Backend, setup: int, expected: int | str
) -> None:
    store = backend.store()
    if setup:
        await store.append("s", [added(i) for i in range(setup)])
    before = await snapshot(store)
    with pytest.raises(ConcurrencyError) as raised:
        await store.append("s", [added("late")], expected_version=expected)  # type: ignore[arg-type]
    assert raised.value.stream_id == "s"
    assert raised.value.actual == setup
    assert await snapshot(store) == before
    info = await store.stream_info("s")
    assert (info.version if info else 0) == setup


async def test_any_appends_whatever_the_version(backend: Backend) -> None:
    store = backend.store()
    await store.append("s", [added(1)], expected_version=ANY)
    result = await store.append("s", [added(2)], expected_version=ANY)
    assert result.last_version == 2


async def test_stale_writer_loses_and_retries(backend: Backend) -> None:
    store = backend.store()
    await store.append("s", [added("base")])
    seen = (await store.stream_info("s")).version  # type: ignore[union-attr]
    await store.append("s", [added("other writer")], expected_version=seen)
    with pytest.raises(ConcurrencyError):
        await store.append("s", [added("mine")], expected_version=seen)
    fresh = (await store.stream_info("s")).version  # type: ignore[union-attr]
    await store.append("s", [added("mine")], expected_version=fresh)
    items = [decode_item(e.event.items[0]) for e in await store.read_stream("s")]  # type: ignore[union-attr]
    assert items == ["base", "other writer", "mine"]


async def test_on_new_stream_events_only_start_a_stream(backend: Backend) -> None:
    store = backend.store()
    await store.append("s", [added(1)], on_new_stream=[SessionStarted()])
    await store.append("s", [added(2)], on_new_stream=[SessionStarted()])
    types = [e.event_type for e in await store.read_stream("s")]
    assert types == ["SessionStarted", "ItemsAdded", "ItemsAdded"]


# -- idempotency by event id ------------------------------------------------------------


async def test_repeated_append_is_stored_once(backend: Backend) -> None:
    store = backend.store()
    batch = [NewEvent(added("x")), NewEvent(added("y"))]
    first = await store.append("s", batch)
    again = await store.append("s", batch)
    also_with_version = await store.append("s", batch, expected_version=0)
    assert first == again == also_with_version
    assert len(await store.read_all()) == 2
    assert (await store.stream_info("s")).version == 2  # type: ignore[union-attr]


async def test_same_event_id_in_another_stream_is_another_event(backend: Backend) -> None:
    store = backend.store()
    event = NewEvent(added("x"))
    await store.append("a", [event])
    await store.append("b", [event])
    assert [e.stream_id for e in await store.read_all()] == ["a", "b"]


async def test_partly_repeated_append_is_refused_and_writes_nothing(backend: Backend) -> None:
    store = backend.store()
    stored = NewEvent(added("x"))
    await store.append("s", [stored])
    before = await snapshot(store)
    with pytest.raises(IntegrityError):
        await store.append("s", [stored, NewEvent(added("new"))])
    assert await snapshot(store) == before


async def test_one_append_needs_distinct_event_ids(backend: Backend) -> None:
    store = backend.store()
    event_id = uuid.uuid4()
    with pytest.raises(InvalidArgumentError):
        await store.append("s", [NewEvent(added(1), event_id), NewEvent(added(2), event_id)])
    assert await store.read_all() == []


# -- payloads ---------------------------------------------------------------------------

AWKWARD = [
    "'); DROP TABLE convstore_events; --",
    'Robert"); DELETE FROM convstore_streams WHERE ("1"="1',
    "%s %(name)s ? :param $1 \\x00 \\",
    "naïve café — 東京 — مرحبا — 🦜🔥👩‍👩‍👧",
    "\u0000 nul, \t tab, \r\n newline, \u2028 line separator",
    "trailing space ",
    "x" * 1_000_000,
    {"nested": [1, 2.5, -3, True, None, {"deep": ["é"]}], "big": 2**62, "neg": -(2**62)},
]


async def test_payloads_round_trip_byte_for_byte(backend: Backend) -> None:
    store = backend.store()
    event = ItemsAdded(items=encode_items(AWKWARD))
    original = msgspec.json.encode(event)
    await store.append("s", [event])
    [stored] = await store.read_stream("s")
    assert stored.payload == original
    assert stored.event == event
    assert [decode_item(raw) for raw in stored.event.items] == AWKWARD  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "stream_id", ["'; DROP TABLE convstore_streams; --", "Ünïcødé 🦜", "User", "user", "user "]
)
async def test_stream_ids_are_exact(backend: Backend, stream_id: str) -> None:
    store = backend.store()
    for other in ("User", "user", "user "):
        if other != stream_id:
            await store.append(other, [added(other)])
    await store.append(stream_id, [added(stream_id)])
    [event] = await store.read_stream(stream_id)
    assert event.stream_id == stream_id
    assert decode_item(event.event.items[0]) == stream_id  # type: ignore[union-attr]
    ids = [s.stream_id for s in await store.list_streams()]
    assert ids.count(stream_id) == 1


@pytest.mark.parametrize(
    "bad",
    [{1, 2}, b"bytes", object(), float("nan"), float("inf"), {1: "int key"}, ("tuple",)],
    ids=["set", "bytes", "object", "nan", "inf", "int-key", "tuple"],
)
async def test_unserialisable_item_is_refused_and_log_unchanged(
    backend: Backend, bad: object
) -> None:
    store = backend.store()
    await store.append("s", [added("kept")])
    before = await snapshot(store)
    with pytest.raises(SerializationError, match=r"items\[1\]"):
        await store.append("s", [ItemsAdded(items=encode_items(["fine", {"inner": bad}]))])
    assert await snapshot(store) == before


async def test_not_an_event_is_refused(backend: Backend) -> None:
    store = backend.store()
    with pytest.raises(InvalidArgumentError):
        await store.append("s", [{"type": "ItemsAdded"}])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError):
        await store.append("s", [])
    assert await store.read_all() == []


# -- reading ----------------------------------------------------------------------------


async def test_read_stream_bounds(backend: Backend) -> None:
    store = backend.store()
    await store.append("s", [added(i) for i in range(1, 11)])
    await store.append("other", [added("x")])

    def versions(events: list) -> list[int]:  # type: ignore[type-arg]
        return [e.version for e in events]

    assert versions(await store.read_stream("s")) == list(range(1, 11))
    assert versions(await store.read_stream("s", after=7)) == [8, 9, 10]
    assert versions(await store.read_stream("s", upto=3)) == [1, 2, 3]
    assert versions(await store.read_stream("s", after=2, upto=5)) == [3, 4, 5]
    assert versions(await store.read_stream("s", limit=2)) == [1, 2]
    assert versions(await store.read_stream("s", desc=True, limit=3)) == [10, 9, 8]
    assert versions(await store.read_stream("s", upto=5, desc=True, limit=2)) == [5, 4]
    assert versions(await store.read_stream("s", limit=0)) == []
    assert await store.read_stream("missing") == []


async def test_read_all_pages_through_the_log(backend: Backend) -> None:
    store = backend.store()
    for i in range(7):
        await store.append(f"s{i % 3}", [added(i)])
    seen, after = [], 0
    while page := await store.read_all(after_position=after, limit=3):
        seen.extend(page)
        after = page[-1].position
    assert len(seen) == 7
    assert_positions(store, [e.position for e in seen])
    assert [decode_item(e.event.items[0]) for e in seen] == list(range(7))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "kwargs",
    [{"after": -1}, {"upto": -2}, {"limit": -1}, {"limit": "3"}, {"after": True}, {"limit": 1.5}],
)
async def test_bad_read_bounds_are_refused(backend: Backend, kwargs: dict[str, object]) -> None:
    store = backend.store()
    with pytest.raises(InvalidArgumentError):
        await store.read_stream("s", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream_id", ["", "x" * 256, None, 42])
async def test_bad_stream_ids_are_refused(backend: Backend, stream_id: object) -> None:
    store = backend.store()
    with pytest.raises(InvalidArgumentError):
        await store.append(stream_id, [added(1)])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await store.read_stream(stream_id)  # type: ignore[arg-type]
    assert await store.read_all() == []


@pytest.mark.parametrize("expected", [-1, "latest", 1.0, True, None])
async def test_bad_expected_version_is_refused(backend: Backend, expected: object) -> None:
    store = backend.store()
    with pytest.raises(InvalidArgumentError):
        await store.append("s", [added(1)], expected_version=expected)  # type: ignore[arg-type]
    assert await store.read_all() == []


async def test_stream_listing(backend: Backend) -> None:
    store = backend.store()
    for stream_id in ("c", "a", "b"):
        await store.append(stream_id, [added(1)])
    await store.append("a", [added(2), added(3)])
    streams = await store.list_streams()
    assert [(s.stream_id, s.version) for s in streams] == [("a", 3), ("b", 1), ("c", 1)]
    a = streams[0]
    assert a.created_at <= a.updated_at
    assert a.head_hash == (await store.read_stream("a"))[-1].hash
    assert [s.stream_id for s in await store.list_streams(after="a", limit=1)] == ["b"]
    assert await store.stream_info("missing") is None


# -- the hash chain ---------------------------------------------------------------------


async def test_hash_chain_recomputes_from_the_stored_fields(backend: Backend) -> None:
    store = backend.store()
    await store.append("s", [SessionStarted(), added("a")])
    await store.append("t", [added("other stream")])
    await store.append("s", [ItemPopped(seq=1 << 20), SessionCleared()])
    for stream_id in ("s", "t"):
        head = assert_chain_valid(await store.read_stream(stream_id))
        assert (await store.stream_info(stream_id)).head_hash == head  # type: ignore[union-attr]


# -- lifecycle and schema ---------------------------------------------------------------


async def test_closed_store_refuses_everything(backend: Backend) -> None:
    store = backend.store()
    await store.append("s", [added(1)])
    await store.close()
    await store.close()  # idempotent
    assert store.closed
    with pytest.raises(StoreClosedError):
        await store.append("s", [added(2)])
    with pytest.raises(StoreClosedError):
        await store.read_stream("s")
    with pytest.raises(StoreClosedError):
        await store.read_all()
    with pytest.raises(StoreClosedError):
        await store.list_streams()


async def test_async_with_closes(backend: Backend) -> None:
    async with backend.store() as store:
        await store.append("s", [added(1)])
    assert store.closed


async def test_missing_tables_are_a_schema_error(backend: Backend) -> None:
    store = backend.store(create_tables=False)
    with pytest.raises(SchemaError, match="create_tables=True"):
        await store.append("s", [added(1)])
    with pytest.raises(SchemaError):
        await store.read_all()


async def test_data_survives_reopening(shared_backend: Backend) -> None:
    first = shared_backend.store()
    await first.append("s", [added("persisted")])
    await first.close()
    second = shared_backend.store(create_tables=False)
    [event] = await second.read_stream("s")
    assert decode_item(event.event.items[0]) == "persisted"  # type: ignore[union-attr]


async def test_store_on_an_engine_of_the_callers_own(backend: Backend) -> None:
    engine = await make_engine(backend)
    try:
        async with EventStore(engine) as store:
            await store.append("s", [added("through the caller's engine")])
            [event] = await store.read_stream("s")
            assert decode_item(event.event.items[0]) == "through the caller's engine"  # type: ignore[union-attr]
        async with engine.connect() as conn:  # closing the store left the engine usable
            count = await conn.run_sync(
                lambda c: c.exec_driver_sql("SELECT count(*) FROM convstore_events").scalar()
            )
        assert count == 1
    finally:
        await engine.dispose()


# -- concurrent appends to one stream, written together ----------------------------------


def written_batches(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events each write of ``store`` from now on carried (one per transaction
    that wrote; a transaction that failed is not counted)."""
    sizes: list[int] = []
    write = store._writer._write_tx

    def counted(*args: Any) -> Any:
        done = write(*args)
        if done is not None:  # (None: a remembered head was stale, the write is redone)
            sizes.append(len(args[3]))
        return done

    monkeypatch.setattr(store._writer, "_write_tx", counted)
    return sizes


def item_of(event: RecordedEvent) -> Any:
    return decode_item(event.event.items[0])  # type: ignore[union-attr]


async def test_concurrent_appends_to_one_stream_share_a_transaction(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.store()
    await store.append("s", [added("first")])
    batches = written_batches(store, monkeypatch)
    appends = [[NewEvent(added(t, k)) for k in range(t % 3 + 1)] for t in range(8)]
    results = await asyncio.gather(*(store.append("s", events) for events in appends))
    # Task 0 found nothing in flight and wrote alone; the 7 that came meanwhile were
    # written as one append. (In memory nothing is ever in flight: an append runs to
    # its end without giving the event loop a turn.)
    if backend.name == "sqlite-memory":
        assert batches == [len(a) for a in appends]
    else:
        assert batches == [len(appends[0]), sum(len(a) for a in appends[1:])]
    stored = await store.read_stream("s")
    by_id = {e.event_id: e for e in stored}
    version = 1
    for events, result in zip(appends, results, strict=True):
        # Each caller's events are contiguous, in its order, in the order callers came,
        # and its result names exactly them.
        mine = [by_id[str(e.event_id)] for e in events]
        assert [e.version for e in mine] == list(range(version + 1, version + 1 + len(events)))
        assert (result.first_version, result.last_version) == (mine[0].version, mine[-1].version)
        assert (result.first_position, result.last_position) == (
            mine[0].position,
            mine[-1].position,
        )
        version = result.last_version
    assert len(stored) == 1 + sum(len(a) for a in appends)
    assert_chain_valid(stored)
    assert_positions(store, [e.position for e in await store.read_all()])


@pytest.mark.parametrize("bad_at", [0, 2])
async def test_a_failed_append_in_a_group_fails_alone(shared_backend: Backend, bad_at: int) -> None:
    """One append of a group breaks a constraint: its caller alone gets the error, an
    exact repeat gets its original result, the others are written (``bad_at=0``: the
    append that went first, alone, is the bad one)."""
    store = shared_backend.store()
    stored = NewEvent(added("stored"))
    original = await store.append("s", [stored])
    calls: list[Any] = [
        store.append("s", [NewEvent(added("a"))]),
        store.append("s", [NewEvent(added("b"))]),
        store.append("s", [NewEvent(added("c"))]),
        store.append("s", [stored]),  # an idempotent retry
        store.append("s", [NewEvent(added("d"))], expected_version=NO_STREAM),
        store.append("s", [NewEvent(added("e"))]),
    ]
    calls.insert(bad_at, store.append("s", [NewEvent(added("bad")), stored]))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    bad = outcomes.pop(bad_at)
    assert isinstance(bad, IntegrityError), bad
    assert isinstance(outcomes[4], ConcurrencyError), outcomes[4]
    assert outcomes[3] == original
    assert all(isinstance(o, AppendResult) for n, o in enumerate(outcomes) if n != 4), outcomes
    stored_items = [item_of(e) for e in await store.read_stream("s")]
    assert stored_items[0] == "stored"
    assert sorted(stored_items) == sorted(["stored", "a", "b", "c", "e"])
    # the ones written together kept the order they came in
    together = [i for i in stored_items if i in ("a", "b", "c", "e")]
    assert together == ["a", "b", "c", "e"]


async def test_groups_are_bounded(shared_backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    store = shared_backend.store()
    await store.append("s", [added("first")])
    batches = written_batches(store, monkeypatch)
    # By events: one alone, then groups of at most MAX_GROUP_EVENTS in order.
    count = 1 + MAX_GROUP_EVENTS + 10
    await asyncio.gather(*(store.append("s", [added(n)]) for n in range(count)))
    assert batches == [1, MAX_GROUP_EVENTS, 10]
    assert [item_of(e) for e in await store.read_stream("s", after=1)] == list(range(count))
    # By bytes: two appends of 60% of the bound do not go together.
    big = "x" * (MAX_GROUP_BYTES * 6 // 10)
    batches.clear()
    await asyncio.gather(
        store.append("s", [added("alone")]),
        store.append("s", [added(big)]),
        store.append("s", [added(big)]),
        store.append("s", [added("small")]),
    )
    assert batches == [1, 1, 2]


async def test_cancelled_while_waiting_to_be_written_writes_nothing(
    shared_backend: Backend,
) -> None:
    store = shared_backend.store()
    await store.append("s", [added("first")])  # tables ready, sizes known: no await left
    tasks = [asyncio.ensure_future(store.append("s", [added(n)])) for n in range(4)]
    await asyncio.sleep(0)  # task 0 is writing; 1, 2 and 3 wait behind it
    tasks[2].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert type(outcomes[2]) is asyncio.CancelledError  # withdrawn: not CancelledAfterCommit
    assert all(isinstance(outcomes[n], AppendResult) for n in (0, 1, 3))
    assert [item_of(e) for e in await store.read_stream("s")] == ["first", 0, 1, 3]


async def test_cancelled_while_being_written_waits_for_the_outcome(
    shared_backend: Backend,
) -> None:
    """The append that went first is cancelled, then one of the group behind it, while
    that group is being written: the first either was withdrawn or committed (and says
    which), the member commits and says so with its own result, and the others are
    written as if nothing happened."""
    store = shared_backend.store()
    await store.append("s", [added("first")])
    tasks = [asyncio.ensure_future(store.append("s", [added(n)])) for n in range(4)]
    await asyncio.sleep(0)  # task 0 is writing (or queued for SQLite's worker), 1-3 wait
    tasks[0].cancel()
    first: AppendResult | None = None
    try:
        await tasks[0]
    except CancelledAfterCommit as committed:
        first = committed.result
    except asyncio.CancelledError:
        pass  # withdrawn before SQLite's worker took it
    else:
        pytest.fail("the cancelled append finished as if not cancelled")
    # Its end started the group of 1, 2 and 3, which is now being written.
    tasks[2].cancel()
    with pytest.raises(CancelledAfterCommit) as member:
        await tasks[2]
    rest = await asyncio.gather(tasks[1], tasks[3])
    items = [item_of(e) for e in await store.read_stream("s")]
    assert items == ["first", *([0] if first is not None else []), 1, 2, 3]
    if first is not None:
        assert (first.first_version, first.last_version) == (2, 2)
    version = {item: n + 1 for n, item in enumerate(items)}
    assert member.value.result.first_version == member.value.result.last_version == version[2]
    assert [r.first_version for r in rest] == [version[1], version[3]]


def test_decode_items_round_trips_and_restores_the_collector() -> None:
    items = [{"role": "user", "content": "é ü"}, [1, 2.5, None], "text", 3]
    rows = [encode_item(item) for item in items]
    assert gc.isenabled()
    assert decode_items(rows) == items
    assert gc.isenabled()  # paused only while decoding
    gc.disable()
    try:
        assert decode_items(rows) == items
        assert not gc.isenabled()  # a caller's choice is left alone
    finally:
        gc.enable()
    with pytest.raises(msgspec.DecodeError):
        decode_items([b"{"])
    assert gc.isenabled()  # restored after an error too


async def test_scan_events_hands_over_the_stored_rows_a_page_at_a_time(backend: Backend) -> None:
    store = backend.store()
    for n in range(5):
        await store.append("a" if n % 2 else "b", [added(n)])
    pages: list[list[tuple[str, int]]] = []

    def keep(rows: Any) -> None:
        pages.append([(row.stream_id, row.version) for row in rows])

    assert await store.scan_events(keep, page_size=2) == 5
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [key for page in pages for key in page] == [
        (e.stream_id, e.version) for e in await store.read_all()
    ]
    pages.clear()
    assert await store.scan_events(keep, stream_id="a", page_size=10) == 2
    assert pages == [[("a", 1), ("a", 2)]]
    with pytest.raises(InvalidArgumentError, match="page_size"):
        await store.scan_events(keep, page_size=0)
