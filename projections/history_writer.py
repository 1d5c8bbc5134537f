"""Writing the history tables: the append transaction's ``apply`` and a catch-up's
``replay``, by the rules of :func:`projections.history.apply`.

An append's items are inserted with the pointers into their event's payload
(:func:`locate_items`), each insert numbering its user turn itself, so an append reads
nothing back; the rows wait in a buffer until an event that removes rows (a removal
must see the rows added before it in the same batch). Branch rows read during one
``apply`` are cached for it.

A replay (:class:`Replay`) feeds tables that hold exactly the log before its events and
that no append writes meanwhile (eventstore/registry.py): the same rows, written in
bulk, the turn numbers counted in Python (one look-up of the last one per branch and
batch, again after a removal) instead of by a subquery per row, the rows many to a
statement (:class:`~eventstore.prepared.BulkInsert`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from itertools import accumulate, chain, repeat
from typing import Any

import msgspec
from sqlalchemy import Connection, select

from eventstore import MAIN_BRANCH, ItemsAdded, RecordedEvent
from eventstore import events as ev
from eventstore.records import to_micros

from .base import BranchRows, branch_owners
from .history import (
    MAX_ITEMS_PER_EVENT,
    OPEN,
    BranchInfo,
    Segment,
    cleared_segments,
    compacted_segments,
    describe_all,
    expire_segments,
    fork_segments,
    item_seq,
    segment_of,
    split_segments,
)
from .history_reads import HistoryReads
from .history_rows import encode_segments
from .history_statements import UPDATE_PARAMS

_ITEM_LISTS = (b'"items":[', b'"messages":[')


def locate_items(payload: bytes, items: Sequence[bytes | msgspec.Raw]) -> list[int] | None:
    """Where each item's exact bytes start in ``payload``, or None if they cannot all
    be found there (then the projection keeps copies).

    The encoder writes an ItemsAdded payload as ``{..."items":[item,item,...]...}``
    with every item verbatim (:class:`msgspec.Raw`), so the items follow each other
    one separator apart. Each offset is checked byte for byte, so a pointer is
    correct whatever layout the payload has: a read slices exactly the item's bytes.
    """
    found = _locate(payload, items)
    return None if found is None else found[0]


def _locate(
    payload: bytes, items: Sequence[bytes | msgspec.Raw]
) -> tuple[list[int], list[int]] | None:
    """:func:`locate_items`, with each item's size: the items joined by commas must be
    the bytes after the list's opening bracket (one comparison, not one per item)."""
    for key in _ITEM_LISTS:
        start = payload.find(key)
        if start >= 0:
            break
    else:
        return None
    if not items:
        return [], []
    at = start + len(key)
    if not payload.startswith(b",".join(items), at):
        return None
    sizes = list(map(len, items))
    offsets = list(accumulate([size + 1 for size in sizes[:-1]], initial=at))
    return offsets, sizes


def apply_events(work: Batch, events: Sequence[RecordedEvent]) -> None:
    """Apply ``events`` to the tables through ``work`` (an append's or a replay's)."""
    for recorded in events:
        event = recorded.event
        sid, version = recorded.stream_id, recorded.version
        match event:
            case ItemsAdded(items=items, branch_id=b):
                work.add(sid, b, version, items, recorded.payload)
                continue
            case _:
                pass
        work.flush()  # a removal must see the rows added before it in this batch
        work.forget_turns(sid)  # ... and may remove the last user message of a branch
        match event:
            case ev.ItemPopped(seq=seq, branch_id=b):
                work.pop(sid, b, seq)
            case ev.SessionCleared(branch_id=None):
                for b in work.branch_ids(sid):
                    work.clear(sid, b, version)
            case ev.SessionCleared(branch_id=str(b)):
                work.clear(sid, b, version)
            case ev.HistoryCompacted(items=items, branch_id=b, keep_upto=keep):
                work.compact(sid, b, version, keep)
                work.add(sid, b, version, items, recorded.payload)
            case ev.ItemsExpired(upto_seq=upto, branch_id=b):
                info = work.info(sid, b)
                work.save(
                    sid, b, replace(info, segments=expire_segments(work.segments(sid, b), upto))
                )
            case ev.BranchCreated(branch_id=c, parent_branch_id=p, fork_seq=fork, name=name):
                segments = fork_segments(work.segments(sid, p), fork, c, version)
                for src, _lo, hi in segments[:-1]:
                    held = work.info(sid, src)
                    if hi > held.pinned:
                        work.save(sid, src, replace(held, pinned=hi))
                created = BranchInfo(
                    parent=p,
                    fork_seq=fork,
                    name=name,
                    created_version=version,
                    created_at=to_micros(recorded.recorded_at),
                    pinned=work.info(sid, c).pinned,
                    segments=segments,
                )
                work.save(sid, c, created)
            case ev.BranchSwitched(branch_id=b):
                work.set_current(sid, b)
            case ev.BranchDeleted(branch_id=b):
                info = work.info(sid, b)
                work.sql.delete_above.execute(
                    work.conn, {"sid": sid, "bid": b, "above": info.pinned}
                )
                work.save(sid, b, replace(info, deleted=True, segments=()))
                if work.p.read_current(work.conn, sid) == b:
                    work.set_current(sid, MAIN_BRANCH)
            case _:
                pass
    work.flush()


class Batch(BranchRows[BranchInfo]):
    """The work of one ``apply`` call: buffered inserts and cached branch rows."""

    def __init__(self, projector: HistoryReads, conn: Connection) -> None:
        super().__init__(conn, projector.read_info, BranchInfo)
        self.p = projector
        self.sql = projector.sql
        self.rows: list[dict[str, Any]] = []

    info = BranchRows.branch_row

    def add(
        self, sid: str, bid: str, version: int, items: Sequence[msgspec.Raw], payload: bytes
    ) -> None:
        """Buffer the rows of the items an event at ``version`` adds to ``bid``."""
        kinds, tools = describe_all(items)
        found = _locate(payload, items)
        for index, raw in enumerate(items):
            kind = kinds[index]
            self.rows.append(
                {
                    "stream_id": sid,
                    "branch_id": bid,
                    "seq": item_seq(version, index),
                    "item_at": None if found is None else found[0][index],
                    "item_size": None if found is None else found[1][index],
                    "item": bytes(raw) if found is None else None,
                    "kind": kind,
                    "tool_name": tools[index],
                    "is_user": 1 if kind == "user" else 0,
                }
            )

    def flush(self) -> None:
        """Insert the buffered rows."""
        if self.rows:
            self.sql.insert.execute_many(self.conn, self.rows)
            self.rows = []

    def forget_turns(self, sid: str) -> None:
        """Rows of ``sid`` may be removed next (the insert numbers turns itself)."""

    def segments(self, sid: str, bid: str) -> tuple[Segment, ...]:
        """What a branch shows, as segments."""
        info = self.info(sid, bid)
        return ((bid, 0, OPEN),) if info.segments is None else info.segments

    def save(self, sid: str, bid: str, info: BranchInfo) -> None:
        """Write a branch's row (insert or update) and cache it."""
        if self.has_row(sid, bid):
            self.sql.update_info.execute(self.conn, _info_values(sid, bid, info))
        else:
            self.sql.insert_info.execute(self.conn, _info_row(sid, bid, info))
        self.saved(sid, bid, info)

    def pop(self, sid: str, bid: str, seq: int) -> None:
        """Remove item ``seq`` from what ``bid`` shows: delete its row if no other
        branch can reach it, else split the branch's segment around it."""
        key = {"sid": sid, "bid": bid, "q": seq}
        if (sid, bid) not in self.branch_rows and self.sql.delete_unshared.rowcount(self.conn, key):
            return  # a branch with no row of its own shares nothing: one statement
        info = self.info(sid, bid)
        segments = self.segments(sid, bid)
        segment = segment_of(segments, seq)
        if segment is None:
            return
        src, lo, _hi = segment
        if src == bid and seq > info.pinned:
            self.sql.delete_one.execute(self.conn, {"sid": sid, "bid": bid, "q": seq})
            return
        row = self.sql.prev.first(self.conn, {"sid": sid, "bid": src, "lo": lo, "hi": seq})
        split = split_segments(segments, seq, None if row is None else int(row[0]))
        self.save(sid, bid, replace(info, segments=split))

    def clear(self, sid: str, bid: str, version: int) -> None:
        """Make ``bid`` show nothing from ``version`` on; delete its unshared rows."""
        info = self.info(sid, bid)
        self.sql.delete_above.execute(self.conn, {"sid": sid, "bid": bid, "above": info.pinned})
        if not self.has_row(sid, bid):
            return  # nothing shared, no segments: the branch is simply empty again
        self.save(sid, bid, replace(info, segments=cleared_segments(bid, version)))

    def compact(self, sid: str, bid: str, version: int, keep: int) -> None:
        """Cut ``bid`` at ``keep`` for a compaction at ``version``: what it shows above
        the cut goes (its unshared rows are deleted); the event's items come next."""
        info = self.info(sid, bid)
        above = max(info.pinned, keep)
        self.sql.delete_above.execute(self.conn, {"sid": sid, "bid": bid, "above": above})
        if not keep and not self.has_row(sid, bid):
            return  # nothing shared, no segments: its own rows are the new items
        segments = compacted_segments(self.segments(sid, bid), keep, bid, version)
        self.save(sid, bid, replace(info, segments=segments))

    def branch_ids(self, sid: str) -> set[str]:
        """Every branch of ``sid`` that has rows, and main."""
        t, b = self.p.items, self.p.branches
        infos = self.conn.execute(select(b.c.branch_id).where(b.c.stream_id == sid))
        return {MAIN_BRANCH, *branch_owners(self.conn, t, sid), *infos.scalars()}

    def set_current(self, sid: str, bid: str) -> None:
        """Record ``bid`` as the session's current branch."""
        if self.sql.current.first(self.conn, {"sid": sid}) is None:
            self.sql.insert_current.execute(self.conn, {"stream_id": sid, "branch_id": bid})
        else:
            self.sql.set_current.execute(self.conn, {"sid": sid, "cur": bid})


def _info_values(sid: str, bid: str, info: BranchInfo) -> dict[str, Any]:
    """The parameters of the update of a branch's row."""
    row = _info_row(sid, bid, info)
    return {"sid": sid, "bid": bid, **{UPDATE_PARAMS[k]: row[k] for k in UPDATE_PARAMS}}


def _info_row(sid: str, bid: str, info: BranchInfo) -> dict[str, Any]:
    """A new row of the branches table."""
    return {
        "stream_id": sid,
        "branch_id": bid,
        "parent_branch_id": info.parent,
        "fork_seq": info.fork_seq,
        "name": info.name,
        "created_version": info.created_version,
        "created_at": info.created_at,
        "deleted": info.deleted,
        "pinned": info.pinned,
        "segments": encode_segments(info.segments),
    }


class Replay(Batch):
    """The work of one ``replay`` call: rows inserted in bulk, turns numbered here."""

    def __init__(self, projector: HistoryReads, conn: Connection) -> None:
        super().__init__(projector, conn)
        # The values of the rows to insert, row after row, in LOCATED's (or COPIED's) order.
        self.located: list[Any] = []
        self.copied: list[Any] = []
        self.turns: dict[tuple[str, str], int] = {}  # the last user turn of a branch

    def add(
        self, sid: str, bid: str, version: int, items: Sequence[msgspec.Raw], payload: bytes
    ) -> None:
        """Buffer the rows of the items an event adds, their turns numbered."""
        kinds, tools = describe_all(items)
        first = item_seq(version, 0)
        seqs: Iterable[int] = (
            range(first, first + len(items))
            if len(items) <= MAX_ITEMS_PER_EVENT
            else [item_seq(version, index) for index in range(len(items))]
        )
        turns: Iterable[int | None] = repeat(None)
        if "user" in kinds:
            turn = self.last_turn(sid, bid)
            numbered: list[int | None] = []
            for kind in kinds:
                if kind == "user":
                    turn += 1
                    numbered.append(turn)
                else:
                    numbered.append(None)
            self.turns[(sid, bid)] = turn
            turns = numbered
        found = _locate(payload, items)
        if found is None:  # copies, as apply keeps them
            rows = zip(repeat(sid), repeat(bid), seqs, map(bytes, items), kinds, tools, turns)
            self.copied.extend(chain.from_iterable(rows))
        else:
            rows = zip(repeat(sid), repeat(bid), seqs, found[0], found[1], kinds, tools, turns)
            self.located.extend(chain.from_iterable(rows))

    def last_turn(self, sid: str, bid: str) -> int:
        """The last turn number of a branch (read once per batch)."""
        turn = self.turns.get((sid, bid))
        if turn is None:
            row = self.sql.last_turn.first(self.conn, {"sid": sid, "bid": bid})
            turn = self.turns[(sid, bid)] = 0 if row is None else int(row[0])
        return turn

    def flush(self) -> None:
        """Insert the buffered rows, in bulk."""
        if self.located:
            self.sql.insert_located.insert(self.conn, self.located)
            self.located = []
        if self.copied:
            self.sql.insert_copied.insert(self.conn, self.copied)
            self.copied = []

    def forget_turns(self, sid: str) -> None:
        """Rows of ``sid`` may be removed next: read its branches' last turns again."""
        for key in [key for key in self.turns if key[0] == sid]:
            del self.turns[key]
