"""Bring the history of the Agents SDK's own sessions into the log.

Reads the tables the SDK's ``SQLiteSession`` and ``SQLAlchemySession`` write
(``agent_sessions`` / ``agent_messages`` by default, other names as options), from a
SQLite file (opened read-only: the source is never changed) or a database URL, and
appends each session's items, in the SDK's order, as events of a convstore session of
the same id:

* ``SessionStarted`` (metadata ``imported_from: agents-sdk``), then one ``ItemsAdded``
  per SDK message row, so each item keeps its own place in the log;
* from an ``AdvancedSQLiteSession`` database (it has ``message_structure``): the items
  of the ``main`` branch in its sequence order, the ``main`` branch's ``turn_usage``
  rows as ``UsageRecorded`` events, and every other branch as a ``BranchCreated`` from
  ``main`` after the items it shares with ``main`` (the SDK copies a branch's earlier
  items into new rows; those copies become the shared prefix, not new items) followed
  by the branch's own items and usage. The current branch stays ``main``.

Event ids are derived from the session id, the SDK's message id and the item's bytes
(uuid5), so running the import again appends only messages the SDK has written since,
and a message is never imported twice. A convstore session of the same id that was not
imported from the SDK is left alone and reported. The SDK does not keep times precise
enough to carry over: events are recorded at the time of the import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Connection, MetaData, Table, inspect, select

from eventstore import (
    MAIN_BRANCH,
    BranchCreated,
    ConfigurationError,
    Event,
    EventStore,
    ItemsAdded,
    NewEvent,
    SerializationError,
    SessionStarted,
    UsageRecorded,
    encode_items,
)
from eventstore.snapshot import ReadOnlySource
from projections.history import item_seq

# The namespace of the event ids of imported SDK history.
NAMESPACE = uuid.UUID("6f1d0f3c-8f5e-4d0b-9a57-1c5d3b1e2a40")
# Events per append while importing one session.
APPEND_BATCH = 1000


@dataclass(slots=True)
class SdkImportResult:
    """What an SDK import did."""

    sessions: int = 0  # sessions with something new imported
    items: int = 0  # items appended
    usage: int = 0  # turn usage rows appended
    branches: int = 0  # AdvancedSQLiteSession branches other than main appended
    up_to_date: int = 0  # sessions whose SDK history was imported already
    notes: list[str] = field(default_factory=list)  # what was left out, and why


@dataclass(frozen=True, slots=True)
class _SdkSession:
    session_id: str
    messages: list[tuple[int, str]]  # (message id, message_data), in the SDK's order
    usage: list[Any]
    branches: dict[str, list[tuple[int, str]]]  # other branches' items, in their order


def _event_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, "\x1f".join(str(p) for p in parts))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class _Reader:
    def __init__(self, sessions_table: str, messages_table: str) -> None:
        self.sessions_table = sessions_table
        self.messages_table = messages_table

    def session_ids(self, conn: Connection) -> list[str]:
        names = set(inspect(conn).get_table_names())
        if self.messages_table not in names:
            raise ConfigurationError(
                f"the source has no table {self.messages_table!r}: is it a database of the "
                "SDK's sessions? (--sessions-table/--messages-table name other tables)"
            )
        messages = Table(self.messages_table, MetaData(), autoload_with=conn)
        query = select(messages.c.session_id).distinct().order_by(messages.c.session_id)
        return [str(sid) for sid in conn.execute(query).scalars()]

    def read(self, conn: Connection, *, session_id: str) -> _SdkSession:
        names = set(inspect(conn).get_table_names())
        meta = MetaData()
        messages = Table(self.messages_table, meta, autoload_with=conn)
        rows = None
        branches: dict[str, list[tuple[int, str]]] = {}
        usage: list[Any] = []
        if "message_structure" in names:
            structure = Table("message_structure", meta, autoload_with=conn)
            on_main = structure.c.branch_id == MAIN_BRANCH
            joined = (
                select(messages.c.id, messages.c.message_data)
                .join(structure, structure.c.message_id == messages.c.id)
                .where(structure.c.session_id == session_id, on_main)
                .order_by(structure.c.sequence_number)
            )
            rows = conn.execute(joined).all() or None
            if rows is not None:
                others = conn.execute(
                    select(structure.c.branch_id, messages.c.id, messages.c.message_data)
                    .join(structure, structure.c.message_id == messages.c.id)
                    .where(structure.c.session_id == session_id, ~on_main)
                    .order_by(structure.c.branch_id, structure.c.sequence_number)
                )
                for branch_id, message_id, data in others:
                    branches.setdefault(str(branch_id), []).append((int(message_id), str(data)))
        if "turn_usage" in names:
            turns = Table("turn_usage", meta, autoload_with=conn)
            usage = list(
                conn.execute(
                    select(turns)
                    .where(turns.c.session_id == session_id)
                    .order_by(turns.c.branch_id, turns.c.user_turn_number)
                ).all()
            )
        if rows is None:  # a plain SDK session (or one written before it was advanced)
            rows = conn.execute(
                select(messages.c.id, messages.c.message_data)
                .where(messages.c.session_id == session_id)
                .order_by(messages.c.id)
            ).all()
        return _SdkSession(session_id, [(int(i), str(d)) for i, d in rows], usage, branches)


def _usage_events(sid: str, rows: list[Any], branch_id: str) -> list[NewEvent]:
    return [
        NewEvent(_usage_event(row), _event_id(sid, "usage", branch_id, row.user_turn_number))
        for row in rows
        if str(row.branch_id) == branch_id
    ]


def _usage_event(row: Any) -> UsageRecorded:
    details: dict[str, Any] = {}
    for name in ("input_tokens_details", "output_tokens_details"):
        value = getattr(row, name, None)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        if value is not None:
            details[name] = value
    return UsageRecorded(
        branch_id=str(row.branch_id),
        turn=int(row.user_turn_number),
        requests=int(row.requests or 0),
        input_tokens=int(row.input_tokens or 0),
        output_tokens=int(row.output_tokens or 0),
        total_tokens=int(row.total_tokens or 0),
        details=details,
    )


def _item_events(
    sid: str, messages: list[tuple[int, str]], branch_id: str, result: SdkImportResult
) -> list[NewEvent]:
    events = []
    for message_id, data in messages:
        try:
            items = encode_items([json.loads(data)])
        except (ValueError, SerializationError) as error:
            result.notes.append(
                f"session {sid!r}: SDK message {message_id} is not a JSON item and was not "
                f"imported ({error})"
            )
            continue
        event: Event = ItemsAdded(items=items, branch_id=branch_id)
        events.append(NewEvent(event, _event_id(sid, message_id, _digest(data))))
    return events


def _main_events(found: _SdkSession, result: SdkImportResult) -> list[NewEvent]:
    sid = found.session_id
    events = [NewEvent(SessionStarted(metadata={"imported_from": "agents-sdk"}), _event_id(sid))]
    events.extend(_item_events(sid, found.messages, MAIN_BRANCH, result))
    events.extend(_usage_events(sid, found.usage, MAIN_BRANCH))
    return events


def _branch_events(
    found: _SdkSession, main_seqs: list[int], result: SdkImportResult
) -> list[NewEvent]:
    """Each other branch: created from main after the items it shares with main (the SDK
    copied them into new rows), then its own items. ``main_seqs`` are the keys of
    main's imported items, in order."""
    sid = found.session_id
    main_data = [data for _, data in found.messages]
    events: list[NewEvent] = []
    for branch_id, messages in found.branches.items():
        shared = 0
        while (
            shared < min(len(messages), len(main_data), len(main_seqs))
            and messages[shared][1] == main_data[shared]
        ):
            shared += 1
        fork_seq = main_seqs[shared - 1] if shared else 0
        created = BranchCreated(
            branch_id=branch_id, parent_branch_id=MAIN_BRANCH, fork_seq=fork_seq, name=branch_id
        )
        events.append(NewEvent(created, _event_id(sid, "branch", branch_id)))
        events.extend(_item_events(sid, messages[shared:], branch_id, result))
        events.extend(_usage_events(sid, found.usage, branch_id))
    return events


async def import_sdk(
    store: EventStore,
    source: str,
    *,
    sessions_table: str = "agent_sessions",
    messages_table: str = "agent_messages",
    progress: Callable[[int], None] | None = None,
) -> SdkImportResult:
    """Import every session of the SDK database ``source`` (a SQLite path or a URL)."""
    await store.ensure_tables()
    reader = _Reader(sessions_table, messages_table)
    result = SdkImportResult()
    src = ReadOnlySource(source)
    try:
        for sid in await src.read(reader.session_ids):
            found = await src.read(partial(reader.read, session_id=sid))
            await _import_session(store, found, result)
            if progress is not None:
                progress(1)
    finally:
        await src.close()
    return result


async def _import_session(store: EventStore, found: _SdkSession, result: SdkImportResult) -> None:
    sid = found.session_id
    events = _main_events(found, result)
    stored = await store.read_stream(sid)
    if stored and stored[0].event_id != str(events[0].event_id):
        result.notes.append(
            f"session {sid!r} already exists in this database and was not imported from the "
            "SDK: left as it is"
        )
        return
    have = {e.event_id for e in stored}
    version = len(stored)
    new = [e for e in events if str(e.event_id) not in have]
    version = await _append(store, sid, new, version)
    if found.branches:
        # The keys of main's items as imported (in this run or an earlier one).
        stored = await store.read_stream(sid)
        by_id = {e.event_id: e.version for e in stored}
        main_seqs = [
            item_seq(by_id[str(e.event_id)], 0)
            for e in events
            if isinstance(e.event, ItemsAdded) and str(e.event_id) in by_id
        ]
        branch = [
            e for e in _branch_events(found, main_seqs, result) if str(e.event_id) not in by_id
        ]
        await _append(store, sid, branch, version)
        new += branch
    if not new:
        result.up_to_date += 1
        return
    result.sessions += 1
    result.items += sum(isinstance(e.event, ItemsAdded) for e in new)
    result.usage += sum(isinstance(e.event, UsageRecorded) for e in new)
    result.branches += sum(isinstance(e.event, BranchCreated) for e in new)


async def _append(store: EventStore, sid: str, events: list[NewEvent], version: int) -> int:
    for start in range(0, len(events), APPEND_BATCH):
        chunk = events[start : start + APPEND_BATCH]
        version = (await store.append(sid, chunk, expected_version=version)).last_version
    return version
