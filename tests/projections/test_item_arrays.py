"""Reads as JSON arrays (HistoryProjector.read_arrays, what get_items uses): the items
of one event come as one range of its payload when they are consecutive there, else
one by one; either way exactly the stored bytes, checked here byte for byte against
the fold of the log (projections.history.fold), for every branch and limit."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from sqlalchemy import delete, update

from eventstore import (
    BranchCreated,
    EventStore,
    IntegrityError,
    ItemPopped,
    ItemsAdded,
    decode_arrays,
    decode_items,
    encode_items,
    schema,
)
from eventstore.backends import dialect_for
from projections import HistoryProjector, fold, rebuild
from projections.history import item_seq
from projections.history_queries import SLICE_BOUND
from projections.history_reads import WHOLE_SLICED

from ..conftest import Backend
from ..eventstore.raw_events import insert_items_added

HISTORY = HistoryProjector()
# Items whose bytes hold the separators a slice could be cut at, and values that
# decode equal from other bytes (1 and 1.0): a wrong range shows in the bytes.
ITEMS = [
    {"role": "user", "content": "a,b],[c"},
    [1, [2, [3]], "]"],
    "x,y",
    1.0,
    {"é": "\u2028", "n": None},
    {"k": [{}, []]},
]


def added(items: list[Any], branch: str = "main") -> ItemsAdded:
    return ItemsAdded(items=encode_items(items), branch_id=branch)


def raw(arrays: list[tuple[Any, int]]) -> list[bytes]:
    """The elements of the arrays as bytes, exactly as they lie in them."""
    out: list[bytes] = []
    for data, count in arrays:
        elements = msgspec.json.decode(data, type=list[msgspec.Raw])
        assert len(elements) == count
        out += [bytes(element) for element in elements]
    return out


async def assert_reads_match_the_log(store: EventStore, sid: str, branches: list[str]) -> None:
    """Every branch, every limit, every read plan the dialect may choose (sliced or
    one row per event, where it slices): the arrays hold exactly the bytes the fold of
    the log shows, and decode to what the per-item read decodes to."""
    state = fold(await store.read_stream(sid))
    dialect = type(dialect_for(store.dialect_name))
    plans = [True, False] if dialect.slices_items else [False]
    try:
        for slices in plans:
            dialect.slices_items = slices
            for branch in branches:
                expected = [bytes(item) for item in state.items(branch)]
                for limit in [None, *range(len(expected) + 2)]:
                    await assert_read_matches(store, sid, branch, limit, expected)
    finally:
        dialect.slices_items = plans[0]


async def assert_read_matches(
    store: EventStore, sid: str, branch: str, limit: int | None, expected: list[bytes]
) -> None:
    arrays = await store.run(lambda c: HISTORY.read_arrays(c, sid, branch, limit))
    items = await store.run(lambda c: HISTORY.read_items(c, sid, branch, limit))
    shown = len(expected) if limit is None else min(limit, len(expected))
    assert raw(arrays) == expected[len(expected) - shown :], (branch, limit)
    assert decode_arrays(arrays) == decode_items(items), (branch, limit)
    if limit is None and dialect_for(store.dialect_name).slices_items:
        short = await store.run(lambda c: HISTORY.read_short(c, sid, branch))
        assert short is None or raw(short) == expected, branch


async def test_consecutive_items_are_read_as_ranges_of_their_payload(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read one row per event (what a dialect that slices items reads too, for a
    branch of large events)."""
    store = backend.store(projectors=(HISTORY,))
    monkeypatch.setattr(type(dialect_for(store.dialect_name)), "slices_items", False)
    await store.append("s", [added(ITEMS[:3]), added(ITEMS[3:]), added(["only"])])
    if backend.name.startswith("sqlite"):  # (elsewhere: the per-item read, joined)
        # One array per event; the first event whole is a view of its payload.
        arrays = await store.run(lambda c: HISTORY.read_arrays(c, "s", "main", None))
        assert [count for _, count in arrays] == [3, 3, 1]
        assert isinstance(arrays[0][0], memoryview)
    await store.append("s", [ItemPopped(seq=item_seq(3, 0))])  # an event emptied
    await store.append("s", [ItemPopped(seq=item_seq(2, 2))])  # a list's tail cut
    await assert_reads_match_the_log(store, "s", ["main"])


async def test_copied_and_pointed_items_mixed_in_one_read(backend: Backend) -> None:
    """Items of a payload in another layout are copies; one event's items may even be
    partly copies (written so here): a read of both kinds, in any window, returns
    each item's stored bytes in order."""
    store = backend.store(projectors=(HISTORY,))
    await store.append("m", [added(ITEMS[:2]), added(ITEMS[2:])])
    spaced = b'{"type": "ItemsAdded", "messages": [{"n": 2}, "a, b", [3 ]]}'

    def write_legacy(conn: Any) -> None:
        insert_items_added(
            conn, stream_id="m", version=3, position=1 << 40, payload=spaced, hash="0" * 64
        )

    await store.run(write_legacy, write=True)
    await rebuild(store)
    t = HISTORY.items

    def copy_one(conn: Any) -> None:
        # The middle item of version 2 (1.0) as a copy whose bytes differ from the
        # payload's, so a read that took the payload's range instead would show.
        conn.execute(
            update(t)
            .where(t.c.stream_id == "m", t.c.seq == item_seq(2, 1))
            .values(item=b"1.00", item_at=None, item_size=None)
        )

    await store.run(copy_one, write=True)
    stored = [bytes(i) for i in encode_items(ITEMS)]
    stored[3] = b"1.00"
    stored += [b'{"n":2}', b'"a, b"', b"[3]"]  # the legacy items, as the projection copied them
    for limit in [None, *range(len(stored) + 1)]:
        arrays = await store.run(lambda c, n=limit: HISTORY.read_arrays(c, "m", "main", n))
        items = await store.run(lambda c, n=limit: HISTORY.read_items(c, "m", "main", n))
        shown = len(stored) if limit is None else limit
        assert raw(arrays) == stored[len(stored) - shown :] == items, limit
    assert decode_arrays(arrays) == [*ITEMS, {"n": 2}, "a, b", [3]]


async def test_items_not_consecutive_in_their_payload_are_read_one_by_one(
    backend: Backend,
) -> None:
    """A row missing between two others of one event (the projection never does this
    itself: a pop takes the newest) must not bring the missing item back."""
    store = backend.store(projectors=(HISTORY,))
    await store.append("s", [added(ITEMS)])
    t = HISTORY.items
    await store.run(
        lambda c: c.execute(delete(t).where(t.c.stream_id == "s", t.c.seq == item_seq(1, 2))),
        write=True,
    )
    want = encode_items([*ITEMS[:2], *ITEMS[3:]])
    for limit in (None, 5, 4):
        arrays = await store.run(lambda c, n=limit: HISTORY.read_arrays(c, "s", "main", n))
        assert raw(arrays) == [bytes(i) for i in want][-(limit or len(want)) :], limit


async def test_branches_read_their_segments_as_arrays(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append("b", [added(ITEMS[:3]), added(ITEMS[3:])])
    # A fork inside an event, then pops on both sides of it, then more items.
    await store.append("b", [BranchCreated("x", "main", fork_seq=item_seq(2, 1))])
    await store.append("b", [ItemPopped(seq=item_seq(2, 1), branch_id="x")])  # shared
    await store.append("b", [added(["x1", "x2"], branch="x")])
    await store.append("b", [ItemPopped(seq=item_seq(2, 2))])  # main's own
    await store.append("b", [ItemPopped(seq=item_seq(2, 1))])  # pinned by x
    await store.append("b", [added(["m1"])])
    await store.append("b", [BranchCreated("y", "x", fork_seq=item_seq(5, 0))])
    await assert_reads_match_the_log(store, "b", ["main", "x", "y"])


@pytest.mark.parametrize("limit", [None, 2])
async def test_an_item_whose_event_is_gone_is_an_error(backend: Backend, limit: int | None) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append("s", [added(ITEMS[:3]), added(ITEMS[3:])])
    e = schema.events
    await store.run(
        lambda c: c.execute(delete(e).where(e.c.stream_id == "s", e.c.version == 2)), write=True
    )
    with pytest.raises(IntegrityError):
        await store.run(lambda c: HISTORY.read_arrays(c, "s", "main", limit))


class Counting:
    """A prepared statement that notes each time it runs."""

    def __init__(self, statement: Any, ran: list[str], name: str) -> None:
        self.statement, self.ran, self.name = statement, ran, name

    def all(self, conn: Any, values: Any = None) -> list[Any]:
        self.ran.append(self.name)
        return list(self.statement.all(conn, values))


# The dialect flags of a database that slices items (SQLite's), set on any backend.
SLICING = {"reads_item_arrays": True, "slices_items": True}
NEWEST = ("arrays_newest", "sliced_newest")  # the two statements of a read of the newest


def counted(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...], **flags: bool
) -> tuple[HistoryProjector, EventStore, list[str]]:
    """A projector of its own on a store of ``backend``, the dialect's read flags set as
    ``flags`` say (``reads_item_arrays``, ``slices_items``), and the list each run of
    the statements ``names`` is noted in."""
    history = HistoryProjector()
    store = backend.store(projectors=(history,))
    dialect = type(dialect_for(store.dialect_name))
    for flag, value in flags.items():
        monkeypatch.setattr(dialect, flag, value)
    ran: list[str] = []
    for name in names:
        monkeypatch.setattr(history.sql, name, Counting(getattr(history.sql, name), ran, name))
    return history, store, ran


@pytest.mark.parametrize(
    ("arrays", "slices"),
    [(True, True), (True, False), (False, False)],
    ids=["sliced", "arrays", "per-item"],
)
async def test_the_dialect_chooses_the_read_plan(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, arrays: bool, slices: bool
) -> None:
    """read_arrays reads one row per event exactly where the database's dialect object
    (eventstore.dialect_of) says it reads item arrays, and cuts a few items out of small
    payloads in the database where it says it slices items, whatever the database's
    name; every plan returns the same bytes on every backend."""
    names = ("arrays_all", "arrays_newest", "sliced_newest")
    history, store, ran = counted(
        backend, monkeypatch, names, reads_item_arrays=arrays, slices_items=slices
    )
    await store.append("s", [added(ITEMS[:3]), added(ITEMS[3:])])
    stored = [bytes(item) for item in encode_items(ITEMS)]
    for limit in (None, 4):
        found = await store.run(lambda c, n=limit: history.read_arrays(c, "s", "main", n))
        assert raw(found) == stored[len(stored) - (limit or len(stored)) :], limit
    expected = {
        (True, True): ["sliced_newest", "sliced_newest"],
        (True, False): ["arrays_all", "arrays_newest"],
    }
    assert ran == expected.get((arrays, slices), [])


async def test_a_read_from_large_payloads_reads_arrays_until_the_events_are_small(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the dialect slices items, a read of the newest items of a payload larger
    than SLICE_BOUND reads arrays instead (the same items), and keeps doing so while the
    newest items come from a few large events; once they come from small events again,
    it slices them again."""
    history, store, ran = counted(backend, monkeypatch, NEWEST, **SLICING)
    bulk = [{"role": "user", "content": f"{i:04d} " + "x" * 100} for i in range(600)]
    await store.append("s", [added(bulk)])
    assert len(encode_items(bulk)[0]) * len(bulk) > SLICE_BOUND

    async def newest(n: int) -> list[Any]:
        return decode_arrays(await store.run(lambda c: history.read_arrays(c, "s", "main", n)))

    assert await newest(20) == bulk[-20:]
    assert await newest(20) == bulk[-20:]
    assert ran == ["sliced_newest", "arrays_newest", "arrays_newest"]
    turns = [[{"role": "user", "content": f"turn {i}"}] for i in range(20)]
    for turn in turns:
        await store.append("s", [added(turn)])
    ran.clear()
    assert await newest(20) == [t[0] for t in turns]
    assert await newest(20) == [t[0] for t in turns]
    assert ran == ["arrays_newest", "sliced_newest"]


async def test_a_whole_read_slices_a_short_branch_and_not_a_long_one(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_short answers a whole read of a branch shorter than WHOLE_SLICED (sliced,
    bounded, so it may run on the caller's thread) and leaves a longer one to
    read_arrays, remembering it: the next read_short of it runs no statement."""
    history, store, ran = counted(backend, monkeypatch, ("sliced_newest",), slices_items=True)
    await store.append("s", [added([n]) for n in range(WHOLE_SLICED - 1)])
    short = await store.run(lambda c: history.read_short(c, "s", "main"))
    assert short is not None
    assert decode_arrays(short) == list(range(WHOLE_SLICED - 1))
    await store.append("s", [added([WHOLE_SLICED - 1])])
    for _ in range(2):
        assert await store.run(lambda c: history.read_short(c, "s", "main")) is None
    assert ran == ["sliced_newest", "sliced_newest"]  # the third read ran none
    whole = await store.run(lambda c: history.read_arrays(c, "s", "main", None))
    assert decode_arrays(whole) == list(range(WHOLE_SLICED))


async def test_a_turn_with_a_large_tool_output_is_still_sliced(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A payload above a few kilobytes but under SLICE_BOUND (a turn whose tool output is
    large) is cut item by item, not read one row per event."""
    history, store, ran = counted(backend, monkeypatch, NEWEST, **SLICING)
    output = {"type": "function_call_output", "call_id": "c1", "output": "y" * 20_000}
    turns = [
        [{"role": "user", "content": f"q{n}"}, output, {"role": "assistant", "content": "a"}]
        for n in range(5)
    ]
    for turn in turns:
        await store.append("s", [added(turn)])
    expected = [item for turn in turns for item in turn][-4:]
    for _ in range(2):
        got = decode_arrays(await store.run(lambda c: history.read_arrays(c, "s", "main", 4)))
        assert got == expected
    assert ran == ["sliced_newest", "sliced_newest"]


async def test_a_whole_read_of_a_branch_with_segments_is_sliced_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A branch with segments is not read by a sliced statement (its own items are not
    the answer): after the first whole read found its segments, read_short runs no
    statement for it and read_arrays reads it one row per event, the same items."""
    history, store, ran = counted(backend, monkeypatch, ("arrays_all", "sliced_newest"), **SLICING)
    await store.append("b", [added(ITEMS[:3]), added(ITEMS[3:])])
    await store.append("b", [BranchCreated("x", "main", fork_seq=item_seq(2, 1))])
    await store.append("b", [added(["x1"], branch="x")])
    expected = [bytes(item) for item in fold(await store.read_stream("b")).items("x")]
    for _ in range(2):
        assert await store.run(lambda c: history.read_short(c, "b", "x")) is None
        whole = await store.run(lambda c: history.read_arrays(c, "b", "x", None))
        assert raw(whole) == expected
    assert ran == ["sliced_newest", "arrays_all", "arrays_all"]
