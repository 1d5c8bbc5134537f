"""Compaction that loses nothing: a branch's history shortened for the model, whole in the log.

A compaction is one ``HistoryCompacted`` event (:mod:`eventstore.events`): the run of
shown items it replaces, and the items shown in their place (a summary, then verbatim
copies of the items shown after the run). It is decided under the session's lock
(``EventStore.append_decided``): the run must still be shown exactly as it was read,
else nothing is written and :class:`~eventstore.CompactionConflictError` is raised;
items added meanwhile after the run are kept (copied). The items it replaced stay in
the log: ``get_items(as_of=...)`` before it, a branch forked before it, ``audit``,
``replay`` and ``export`` see them. A revert is another ``HistoryCompacted`` (its
``reverts`` names the compaction) that shows the replaced items again.

The functions here work on stored items (each item's JSON, or an encrypted session's
envelope) through the store's public API, so :class:`~sessions.base.StoreSession` and
:class:`~sessions.encrypted.EncryptedSession` share them; the summariser is called
between the read and the write, outside any transaction (:mod:`sessions.summarizers`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection

from eventstore import (
    CancelledAfterCommit,
    CompactionConflictError,
    Event,
    EventStore,
    HistoryCompacted,
    InvalidArgumentError,
    ItemsExpired,
    RecordedEvent,
    UsageRecorded,
    check_count,
)
from projections.history import MAX_ITEMS_PER_EVENT, SEQ_SHIFT, describe, fold
from projections.history_table import HistoryProjector
from projections.usage import Tokens

from .summarizers import as_summarizer, run_summarizer

__all__ = [
    "CompactionResult",
    "compact_stored",
    "compaction_events",
    "cut_index",
    "read_entries",
    "revert_compaction",
    "write_compaction",
]

HISTORY = HistoryProjector()  # stateless: the same as sessions.base.HISTORY
Entry = tuple[int, bytes]  # (seq, stored item) of one shown item


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What a compaction (or a revert) wrote: the stream ``version`` of its event, how
    many shown items it ``replaced``, how many new items it ``added`` (the summary, or
    the items a revert restored), how many it ``kept`` (copied after them), and for a
    revert the version of the compaction it undid (``reverts``)."""

    version: int
    replaced: int
    added: int
    kept: int
    reverts: int = 0


async def read_entries(store: EventStore, session_id: str, branch: str) -> list[Entry]:
    """``(seq, stored item)`` of every item ``branch`` shows, oldest first."""
    return await store.run(lambda conn: HISTORY.read_entries(conn, session_id, branch, None))


def cut_index(
    stored: Sequence[bytes], keep_last_turns: int | None, keep_last_items: int | None
) -> int:
    """How many of the oldest ``stored`` items a compaction replaces: all but the last
    ``keep_last_turns`` whole turns (a turn starts at a user message) or, with
    ``keep_last_items``, all but the newest that many. 0: nothing to compact."""
    if keep_last_items is not None:
        return max(0, len(stored) - check_count("keep_last_items", keep_last_items))
    turns = check_count("keep_last_turns", 1 if keep_last_turns is None else keep_last_turns)
    if turns == 0:
        return len(stored)
    seen = 0
    for index in range(len(stored) - 1, -1, -1):
        if describe(stored[index]).is_user:
            seen += 1
            if seen == turns:
                return index
    return 0  # fewer turns than that: everything is kept


def usage_events(branch: str, tokens: Tokens | None) -> list[Event]:
    """The summariser's spending, for the session's usage (no turn answers it)."""
    if tokens is None or not (tokens.requests or tokens.total_tokens or tokens.input_tokens):
        return []
    return [
        UsageRecorded(
            branch_id=branch,
            requests=tokens.requests,
            input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens,
            total_tokens=tokens.total_tokens,
            details=tokens.details,
        )
    ]


def _check_size(session_id: str, count: int) -> None:
    if count > MAX_ITEMS_PER_EVENT:
        raise InvalidArgumentError(
            f"session {session_id!r}: a compaction shows at most {MAX_ITEMS_PER_EVENT} "
            f"items, not {count}"
        )


async def write_compaction(
    store: EventStore,
    session_id: str,
    branch: str,
    replaced: Sequence[int],
    new_items: Sequence[msgspec.Raw],
    *,
    keep_following: bool = True,
    extra: Sequence[Event] = (),
    prune: Callable[[bytes], bool] | None = None,
) -> CompactionResult | None:
    """Replace the shown run of items ``replaced`` (their seqs, oldest first) of
    ``branch`` by ``new_items``, in one event decided under the session's lock.

    The run must still be shown as read, else CompactionConflictError (nothing
    written). Items shown after it are kept as copies; with ``keep_following=False``
    (a suffix replacement) there must be none, else None (nothing written).
    ``prune`` (an SDK hook's): the oldest shown items before the run for which it
    holds are expired in the same append. ``extra`` events follow (usage).
    """
    seqs = list(replaced)
    if not seqs:
        raise InvalidArgumentError(f"session {session_id!r}: a compaction replaces some items")
    _check_size(session_id, len(new_items))

    def decide(conn: Connection, version: int) -> tuple[list[Event], CompactionResult] | None:
        now = HISTORY.read_entries(conn, session_id, branch, None)
        at = next((n for n, (seq, _) in enumerate(now) if seq == seqs[0]), None)
        if at is None or [seq for seq, _ in now[at : at + len(seqs)]] != seqs:
            raise CompactionConflictError(
                session_id, "the items it replaces are no longer shown as they were read", version
            )
        rest = now[at + len(seqs) :]
        if rest and not keep_following:
            return None
        _check_size(session_id, len(new_items) + len(rest))
        events: list[Event] = []
        if prune is not None:
            expired = [seq for seq, item in now[:at] if prune(item)]
            pruned = 0
            while pruned < len(expired) and expired[pruned] == now[pruned][0]:
                pruned += 1
            if pruned:
                events.append(ItemsExpired(upto_seq=now[pruned - 1][0], branch_id=branch))
        compacted = HistoryCompacted(
            items=(*new_items, *(msgspec.Raw(item) for _, item in rest)),
            added=len(new_items),
            branch_id=branch,
            keep_upto=now[at - 1][0] if at else 0,
            replaced=len(seqs),
            replaced_from=seqs[0],
            replaced_upto=seqs[-1],
            based_on=version,
        )
        result = CompactionResult(version + len(events) + 1, len(seqs), len(new_items), len(rest))
        return [*events, compacted, *extra], result

    return await _append(store, session_id, decide)


async def _append(
    store: EventStore,
    session_id: str,
    decide: Callable[[Connection, int], tuple[list[Event], CompactionResult] | None],
) -> CompactionResult | None:
    """Append what ``decide`` chooses; a cancellation after the commit carries the
    :class:`CompactionResult` (CancelledAfterCommit), one before it wrote nothing."""
    try:
        decided = await store.append_decided(session_id, decide)
    except CancelledAfterCommit as cancelled:
        if not isinstance(cancelled.result, tuple):
            raise asyncio.CancelledError() from None
        raise CancelledAfterCommit(cancelled.result[1]) from None
    return None if decided is None else decided[1]


_SESSION_METHODS = ("get_items", "add_items", "pop_item", "clear_session")


def stores_as_given(session: object) -> bool:
    """Whether ``session``'s Session methods are convstore's own (not a user's subclass
    overriding them): only then may the SDK's compaction hooks write past them. A
    subclass that transforms items gets the SDK's fallback, through its methods (the
    SDK's own stores follow the same rule)."""
    package = __name__.partition(".")[0]
    for name in _SESSION_METHODS:
        for klass in type(session).__mro__:
            if name in vars(klass):
                if klass.__module__.partition(".")[0] != package:
                    return False
                break
    return True


def compaction_events(events: Sequence[RecordedEvent], branch: str) -> list[RecordedEvent]:
    """The HistoryCompacted events of ``branch`` among ``events``, oldest first."""
    return [
        r for r in events if isinstance(r.event, HistoryCompacted) and r.event.branch_id == branch
    ]


async def revert_compaction(
    store: EventStore,
    session_id: str,
    branch: str,
    version: int | None = None,
) -> CompactionResult:
    """Undo the newest compaction of ``branch`` (or the one at stream ``version``, which
    must be the newest): one HistoryCompacted that shows again, in place of the items
    the compaction added (its summary), the items it replaced; what is shown after the
    summary (kept items, items added since) stays. InvalidArgumentError if there is no
    such compaction (nothing written); CompactionConflictError if its summary is no
    longer shown whole."""
    events = await store.read_stream(session_id)
    found = compaction_events(events, branch)
    if not found:
        raise InvalidArgumentError(f"session {session_id!r}: branch {branch!r} has no compaction")
    target = found[-1]
    if version is not None and version != target.version:
        known = {r.version for r in found}
        raise InvalidArgumentError(
            f"session {session_id!r}: version {version!r} is not the newest compaction of "
            f"branch {branch!r} ({target.version})"
            + ("; revert the later ones first" if version in known else "")
        )
    compacted = target.event
    assert isinstance(compacted, HistoryCompacted)
    restored = tuple(msgspec.Raw(item) for item in replaced_run(events, target))
    v, keep = target.version, compacted.keep_upto
    summary = [item_seq_of(v, n) for n in range(compacted.added)]

    def decide(conn: Connection, now_version: int) -> tuple[list[Event], CompactionResult]:
        now = HISTORY.read_entries(conn, session_id, branch, None)
        at = next((n for n, (seq, _) in enumerate(now) if seq > keep), len(now))
        if [seq for seq, _ in now[at : at + len(summary)]] != summary:
            raise CompactionConflictError(
                session_id, f"the summary of the compaction at version {v} is not shown whole", v
            )
        after = [msgspec.Raw(item) for _, item in now[at + len(summary) :]]
        _check_size(session_id, len(restored) + len(after))
        event = HistoryCompacted(
            items=(*restored, *after),
            added=len(restored),
            branch_id=branch,
            keep_upto=keep,
            replaced=len(summary),
            replaced_from=summary[0] if summary else 0,
            replaced_upto=summary[-1] if summary else 0,
            based_on=now_version,
            reverts=v,
        )
        result = CompactionResult(now_version + 1, len(summary), len(restored), len(after), v)
        return [event], result

    result = await _append(store, session_id, decide)
    assert result is not None
    return result


def item_seq_of(version: int, index: int) -> int:
    return (version << SEQ_SHIFT) | index


def replaced_run(events: Sequence[RecordedEvent], target: RecordedEvent) -> list[bytes]:
    """The stored items the compaction ``target`` replaced, from a fold of the log
    before it."""
    compacted = target.event
    assert isinstance(compacted, HistoryCompacted)
    before = fold([r for r in events if r.version < target.version])
    shown = before.view(compacted.branch_id)
    at = next((n for n, row in enumerate(shown) if row.seq > compacted.keep_upto), len(shown))
    return [row.item for row in shown[at : at + compacted.replaced]]


async def compact_stored(
    store: EventStore,
    session_id: str,
    branch: str,
    *,
    summarize: Any,
    keep_last_turns: int | None,
    keep_last_items: int | None,
    open_items: Callable[[list[bytes]], Awaitable[list[Any]]],
    seal: Callable[[list[Any]], Awaitable[Sequence[msgspec.Raw]]],
) -> CompactionResult | None:
    """Summarise the oldest items of ``branch`` (all but the last whole turns, or the
    newest items) and replace them by the summary: read, ``open_items`` (stored ->
    plaintext), the summariser, ``seal`` (items -> stored), then one event decided under
    the lock. None if there is nothing to compact (nothing is written or summarised)."""
    if keep_last_turns is not None and keep_last_items is not None:
        raise InvalidArgumentError("give keep_last_turns or keep_last_items, not both")
    for name, value in (("keep_last_turns", keep_last_turns), ("keep_last_items", keep_last_items)):
        if value is not None:
            check_count(name, value)
    summarizer = as_summarizer(summarize)
    entries = await read_entries(store, session_id, branch)
    cut = cut_index([item for _, item in entries], keep_last_turns, keep_last_items)
    if cut == 0:
        return None
    replaced = entries[:cut]
    summary = await run_summarizer(summarizer, await open_items([item for _, item in replaced]))
    sealed = await seal(summary.items)  # SerializationError for an item that is not JSON
    return await write_compaction(
        store,
        session_id,
        branch,
        [seq for seq, _ in replaced],
        sealed,
        extra=usage_events(branch, summary.tokens),
    )


async def replace_shown(
    store: EventStore, session_id: str, branch: str, new_items: Sequence[msgspec.Raw]
) -> CompactionResult | None:
    """Replace everything ``branch`` shows now by ``new_items``, in one event (the SDK's
    whole-history replacement: it does not check what was read). None: nothing shown
    and nothing to show, nothing written."""
    _check_size(session_id, len(new_items))

    def decide(conn: Connection, version: int) -> tuple[list[Event], CompactionResult] | None:
        now = HISTORY.read_entries(conn, session_id, branch, None)
        if not now and not new_items:
            return None
        event = HistoryCompacted(
            items=tuple(new_items),
            added=len(new_items),
            branch_id=branch,
            replaced=len(now),
            replaced_from=now[0][0] if now else 0,
            replaced_upto=now[-1][0] if now else 0,
            based_on=version,
        )
        return [event], CompactionResult(version + 1, len(now), len(new_items), 0)

    return await _append(store, session_id, decide)


async def snapshot_entries(
    store: EventStore, session_id: str, branch: str, limit: int
) -> tuple[list[Entry], bool]:
    """The newest ``limit`` shown items of ``branch`` and whether they are all of them."""
    found = await store.run(lambda conn: HISTORY.read_entries(conn, session_id, branch, limit + 1))
    return found[-limit:] if limit else [], len(found) <= limit


async def replace_suffix(
    store: EventStore,
    session_id: str,
    branch: str,
    expected: Sequence[Entry],
    new_items: Sequence[msgspec.Raw],
    prune: Callable[[bytes], bool] | None = None,
) -> bool:
    """The SDK's suffix replacement: ``expected`` (the newest shown items, as read)
    replaced by ``new_items`` in one event; False (nothing written) if they are not
    exactly the newest items shown any more."""
    if not expected:
        return False
    try:
        done = await write_compaction(
            store,
            session_id,
            branch,
            [seq for seq, _ in expected],
            new_items,
            keep_following=False,
            prune=prune,
        )
    except CompactionConflictError:
        return False
    return done is not None
