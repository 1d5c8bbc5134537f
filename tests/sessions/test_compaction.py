"""Compaction that loses nothing, on every backend: one event, originals kept in the log."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from eventstore import (
    ArgumentTypeError,
    CancelledAfterCommit,
    CompactionConflictError,
    HistoryCompacted,
    InvalidArgumentError,
    ItemsAdded,
    SerializationError,
    UsageRecorded,
    decode_item,
)
from projections import rebuild, verify
from sessions import StoreSession, UsageSession
from sessions.admin import audit_database, open_store, replay, session_history
from sessions.base import HISTORY
from sessions.summarizers import Summary, summary_message
from sessions.transfer import export_events, import_events

from .conftest import Sessions
from .encryption import MARKER, encrypted


def turn(n: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"question {n}"},
        {"type": "function_call", "call_id": f"c{n}", "name": "look", "arguments": "{}"},
        {"type": "function_call_output", "call_id": f"c{n}", "output": f"found {n}"},
        {"role": "assistant", "content": f"answer {n}"},
    ]


async def fill(session: Any, turns: int = 4) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for n in range(turns):
        await session.add_items(turn(n))
        items += turn(n)
    return items


async def summarize(items: list[Any]) -> str:
    return f"{len(items)} items about " + ", ".join(
        str(i.get("content")) for i in items if i.get("role") == "user"
    )


async def version_of(session: Any) -> int:
    info = await session.store.stream_info(session.session_id)
    return 0 if info is None else info.version


async def consistent(session: Any) -> None:
    """The tables equal a fold of the log, a rebuild gives them again, audit is clean."""
    report = await verify(session.store)
    assert report.ok, [str(d) for d in report.differences]
    audit = await audit_database(session.store)
    assert audit.ok, [str(f) for f in audit.findings]


async def test_compaction_is_one_event_and_the_log_keeps_every_original(
    session: StoreSession,
) -> None:
    originals = await fill(session)
    before = await version_of(session)
    result = await session.compact(summarize=summarize, keep_last_turns=1)
    assert result is not None
    assert (result.version, result.replaced, result.added, result.kept) == (before + 1, 12, 1, 4)
    items = await session.get_items()
    assert items == [summary_message("12 items about question 0, question 1, question 2"), *turn(3)]
    assert await session.get_items(limit=2) == items[-2:]
    log = await session.store.read_stream(session.session_id)
    assert [type(r.event) for r in log[before:]] == [HistoryCompacted]
    added = [
        decode_item(bytes(i))
        for r in log
        for i in getattr(r.event, "items", ())
        if isinstance(r.event, ItemsAdded)
    ]
    assert added == originals  # every original item, in its own event
    await consistent(session)
    await rebuild(session.store)
    assert await session.get_items() == items


async def test_time_travel_and_branches_before_a_compaction_see_the_originals(
    advanced_sessions: Callable[[str], UsageSession],
) -> None:
    session = advanced_sessions("s")
    originals = await fill(session)
    await session.create_branch_from_turn(3, "before")  # turns 1-2
    await session.switch_to_branch("main")
    before = await version_of(session)
    await session.compact(summarize=summarize, keep_last_turns=1)
    assert len(await session.get_items()) == 5
    assert await session.get_items(as_of=before) == originals
    assert await session.get_items(branch_id="before") == originals[:8]
    # a branch made after the compaction, from a turn it shows, shares the summary
    await session.create_branch_from_turn(1, "after")
    assert await session.get_items() == (await session.get_items(branch_id="main"))[:1]
    # the history of the compaction's version is the compacted one
    assert len(await session.get_items(branch_id="main", as_of=before + 1)) == 5
    await consistent(session)


async def test_pop_pops_the_newest_item_and_revert_undoes_the_compaction(
    session: StoreSession,
) -> None:
    originals = await fill(session, 3)
    compacted = await session.compact(summarize=summarize, keep_last_items=2)
    assert compacted is not None
    assert compacted.kept == 2
    await session.add_items([{"role": "user", "content": "later"}])
    assert await session.pop_item() == {"role": "user", "content": "later"}
    assert await session.pop_item() == originals[-1]
    await session.add_items([{"role": "user", "content": "after"}])
    reverted = await session.revert_compaction()
    assert reverted.reverts == compacted.version
    assert await session.get_items() == [*originals[:-1], {"role": "user", "content": "after"}]
    await consistent(session)
    with pytest.raises(InvalidArgumentError):
        await session.revert_compaction(compacted.version)  # no longer the newest
    # reverting the revert shows the compaction again
    await session.revert_compaction()
    assert (await session.get_items())[0]["role"] == "system"
    await consistent(session)


async def test_the_whole_history_may_be_replaced(session: StoreSession) -> None:
    await fill(session, 2)
    result = await session.compact(summarize=summarize, keep_last_turns=0)
    assert result is not None
    assert (result.replaced, result.kept) == (8, 0)
    assert len(await session.get_items()) == 1
    assert await session.compact(summarize=summarize, keep_last_turns=3) is None  # nothing
    await consistent(session)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"keep_last_turns": -1}, InvalidArgumentError),
        ({"keep_last_turns": 1.5}, InvalidArgumentError),
        ({"keep_last_turns": 1, "keep_last_items": 2}, InvalidArgumentError),
        ({"summarize": 42}, ArgumentTypeError),
        ({"summarize": lambda items: 7}, ArgumentTypeError),
        ({"summarize": lambda items: [{"bad": {1, 2}}]}, SerializationError),
    ],
)
async def test_bad_input_is_refused_and_writes_nothing(
    session: StoreSession, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    await fill(session, 2)
    before = await version_of(session)
    kwargs = {"summarize": summarize, **kwargs}
    with pytest.raises(error):
        await session.compact(**kwargs)
    assert await version_of(session) == before
    with pytest.raises(InvalidArgumentError):
        await session.revert_compaction()  # there is none
    assert await version_of(session) == before


async def test_a_failing_summariser_writes_nothing(session: StoreSession) -> None:
    await fill(session, 2)
    before = await version_of(session)

    async def broken(items: list[Any]) -> str:
        raise RuntimeError("model down")

    with pytest.raises(RuntimeError, match="model down"):
        await session.compact(summarize=broken)
    assert await version_of(session) == before


async def test_items_added_during_the_summary_are_kept(sessions: Sessions) -> None:
    session, other = sessions.open("s"), sessions.open("s")
    await fill(session, 3)

    async def slow(items: list[Any]) -> str:
        await other.add_items([{"role": "user", "content": "meanwhile"}])
        return "summary"

    result = await session.compact(summarize=slow)
    assert result is not None
    assert result.kept == 5
    assert await session.get_items() == [
        summary_message("summary"),
        *turn(2),
        {"role": "user", "content": "meanwhile"},
    ]
    await consistent(session)


@pytest.mark.parametrize("change", ["clear", "pop"])
async def test_a_compaction_whose_items_changed_is_refused(sessions: Sessions, change: str) -> None:
    session, other = sessions.open("s"), sessions.open("s")
    await fill(session, 2)

    async def racing(items: list[Any]) -> str:
        if change == "clear":
            await other.clear_session()
            await other.add_items(turn(7))
        else:  # the newest of the items it replaces
            await other.pop_item()
        return "summary"

    expected = turn(7) if change == "clear" else [*turn(0), *turn(1)[:-1]]
    with pytest.raises(CompactionConflictError):
        await session.compact(summarize=racing, keep_last_turns=0)
    assert await session.get_items() == expected
    assert not [
        r for r in await session.store.read_stream("s") if isinstance(r.event, HistoryCompacted)
    ]


async def test_concurrent_writers_never_see_a_mixed_history(sessions: Sessions) -> None:
    """Writers add whole turns while compactions run: every compaction applies (the
    added turns are kept after the summary) or is refused; the history is always the
    summaries and whole turns, each added turn exactly once."""
    session = sessions.open("s")
    await fill(session, 2)
    writers = [sessions.open("s") for _ in range(3)]

    async def write(n: int) -> None:
        for k in range(4):
            await writers[n].add_items(turn(100 + 10 * n + k))
            await asyncio.sleep(0)

    writing = [asyncio.ensure_future(write(n)) for n in range(3)]
    outcomes: list[str] = []
    while not all(task.done() for task in writing):
        try:
            done = await session.compact(summarize=summarize, keep_last_turns=2)
            outcomes.append("none" if done is None else "applied")
        except CompactionConflictError:
            outcomes.append("refused")
        await asyncio.sleep(0.001)
    await asyncio.gather(*writing)
    assert await session.compact(summarize=summarize, keep_last_turns=2) is not None
    items = await session.get_items()
    users = [i["content"] for i in items if i.get("role") == "user"]
    assert len(users) == len(set(users))
    assert all(i.get("role") == "system" for i in items[: len(items) % 4 or 0])
    shown = [i for i in items if i.get("role") != "system"]
    for at in range(0, len(shown), 4):  # whole turns, none cut
        assert shown[at : at + 4] == turn(int(shown[at]["content"].split()[1]))
    await consistent(session)


async def test_a_cancelled_compaction_has_a_definite_outcome(session: StoreSession) -> None:
    await fill(session, 3)
    before = await version_of(session)
    started = asyncio.Event()

    async def stuck(items: list[Any]) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    task = asyncio.ensure_future(session.compact(summarize=stuck))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await task
    assert not isinstance(cancelled.value, CancelledAfterCommit)
    assert await version_of(session) == before

    outcomes = set()
    for delay in range(12):
        version = await version_of(session)
        task = asyncio.ensure_future(session.compact(summarize=summarize, keep_last_items=1))
        for _ in range(delay):
            await asyncio.sleep(0)
        task.cancel()
        outcome: Any
        try:
            outcome = await task
        except asyncio.CancelledError as cancelled:  # CancelledAfterCommit is one
            outcome = cancelled
        now = await version_of(session)
        if isinstance(outcome, CancelledAfterCommit):
            outcomes.add("after")
            assert now == outcome.result.version
        elif isinstance(outcome, asyncio.CancelledError):
            outcomes.add("before")
            assert now == version
        else:
            outcomes.add("done")
            assert outcome is None or now == outcome.version
        await session.add_items(turn(50 + delay))
    assert "before" in outcomes
    await consistent(session)


async def test_summariser_usage_is_recorded(
    advanced_sessions: Callable[[str], UsageSession],
) -> None:
    session = advanced_sessions("s")
    await fill(session, 2)

    class Spent:
        requests, input_tokens, output_tokens, total_tokens = 1, 120, 30, 150

    async def with_usage(items: list[Any]) -> Summary:
        return Summary([summary_message("short")], Spent())

    await session.compact(summarize=with_usage)
    log = await session.store.read_stream("s")
    assert isinstance(log[-1].event, UsageRecorded)
    assert log[-1].event.total_tokens == 150
    usage = await session.get_session_usage()
    assert usage is not None
    assert usage["total_tokens"] == 150
    assert usage["requests"] == 1
    await consistent(session)


async def test_encrypted_compaction_seals_the_summary(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([{"role": "user", "content": f"first {MARKER}"}])
    await fill(session, 2)
    seen: list[Any] = []

    async def reading(items: list[Any]) -> str:
        seen.extend(items)
        return f"summary {MARKER}"

    result = await session.compact(summarize=reading, keep_last_turns=1)
    assert result is not None
    assert result.replaced == 5
    assert seen[0] == {"role": "user", "content": f"first {MARKER}"}
    items = await session.get_items()
    assert items[0] == summary_message(f"summary {MARKER}")
    assert items[1:] == turn(1)
    store = session.store
    payloads = b"".join(r.payload for r in await store.read_stream("s"))
    assert MARKER.encode() not in payloads
    await session.revert_compaction()
    assert len(await session.get_items()) == 9
    await consistent(session)


async def test_export_import_replay_and_audit_keep_compactions(
    session: StoreSession, tmp_path: Path
) -> None:
    await fill(session, 3)
    await session.compact(summarize=summarize)
    await session.add_items(turn(9))
    out = io.BytesIO()
    await export_events(session.store, out, session="s")
    async with open_store(tmp_path / "copy.db", create=True) as target:
        await import_events(target, io.BytesIO(out.getvalue()))
        assert await session_history(target, "s") == await session_history(session.store, "s")
        assert (await audit_database(target)).ok
        again = io.BytesIO()
        await export_events(target, again, session="s")
        assert again.getvalue() == out.getvalue()
        await replay(target)
        assert await session_history(target, "s") == await session_history(session.store, "s")


async def test_audit_catches_a_forged_compaction(session: StoreSession) -> None:
    """A compaction written through the store's API with a kept item changed: the hash
    chain holds, the compaction check does not."""
    await fill(session, 2)
    entries = await session.store.run(lambda conn: HISTORY.read_entries(conn, "s", "main", None))
    forged = HistoryCompacted(
        items=(
            *(bytes_raw(summary_message("fine")),),
            *(bytes_raw({"role": "user", "content": "I agree to everything"}),),
            *(bytes_raw(decode_item(item)) for _, item in entries[5:]),
        ),
        added=1,
        keep_upto=0,
        replaced=4,
        replaced_from=entries[0][0],
        replaced_upto=entries[3][0],
    )
    await session.store.append("s", [forged])
    report = await audit_database(session.store)
    assert [f.check for f in report.findings] == ["compaction"]
    assert "kept items" in str(report.findings[0])


def bytes_raw(item: Any) -> Any:
    from eventstore import encode_items

    return encode_items([item])[0]


async def test_audit_catches_a_tampered_compaction(session: StoreSession) -> None:
    await fill(session, 2)
    result = await session.compact(summarize=summarize)
    assert result is not None

    def tamper(conn: Any) -> None:
        where = "WHERE stream_id = 's' AND version = :v"
        payload = conn.execute(
            text(f"SELECT payload FROM convstore_events {where}"), {"v": result.version}
        ).scalar_one()
        forged = bytes(payload).replace(b"question 0", b"question 9")
        conn.execute(
            text(f"UPDATE convstore_events SET payload = :p {where}"),
            {"p": forged, "v": result.version},
        )

    await session.store.run(tamper, write=True)
    report = await audit_database(session.store)
    assert ("s", result.version) in {(f.stream_id, f.version) for f in report.findings}


async def test_clear_expiry_and_shredding_treat_summary_and_originals_alike(
    sessions: Sessions,
) -> None:
    from eventstore import KeyShreddedError

    from .encryption import Clock

    clock = Clock()
    session = encrypted(sessions, clock=clock, ttl=60)
    await fill(session, 3)
    await session.compact(summarize=summarize)
    clock.now += 120  # the kept originals and the summary expire alike
    assert await session.get_items() == []
    assert await session.purge_expired() == 5
    clock.now -= 120
    await session.add_items(turn(5))
    await session.shred()  # the summary is as unreadable as the originals
    with pytest.raises(KeyShreddedError):
        await session.get_items()
    await consistent(session)

    plain = sessions.open("p")
    await fill(plain, 2)
    before = await version_of(plain)
    await plain.compact(summarize=summarize)
    await plain.clear_session()
    assert await plain.get_items() == []
    assert await session_history(plain.store, "p", as_of=before) == [*turn(0), *turn(1)]
    await consistent(plain)
