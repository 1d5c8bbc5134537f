"""Bring the history of the Agents SDK's own sessions into the log.

Reads the tables the SDK's ``SQLiteSession`` and ``SQLAlchemySession`` write
(``agent_sessions`` / ``agent_messages`` by default, other names as options), from a
SQLite file (opened read-only: the source is never changed) or a database URL, and
appends each session's items, in the SDK's order, as events of a convstore session of
the same id:

* ``SessionStarted`` (metadata ``imported_from: agents-sdk``), then one ``ItemsAdded``
  per SDK message row, so each item keeps its own place in the log;
* from an ``AdvancedSQLiteSession`` database (it has ``message_structure``): the items
  of the ``main`` branch in its sequence order (the SDK copies a branch's items into
  new message rows; those copies are not imported as main items), and the ``main``
  branch's ``turn_usage`` rows as ``UsageRecorded`` events. Other branches are
  counted and reported, not imported: branch events come with the branch projection.

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
    up_to_date: int = 0  # sessions whose SDK history was imported already
    notes: list[str] = field(default_factory=list)  # what was left out, and why


@dataclass(frozen=True, slots=True)
class _SdkSession:
    session_id: str
    messages: list[tuple[int, str]]  # (message id, message_data), in the SDK's order
    usage: list[Any]
    other_branch_messages: int


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
        other = 0
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
                others = select(structure.c.id).where(
                    structure.c.session_id == session_id, ~on_main
                )
                other = len(conn.execute(others).all())
        if "turn_usage" in names:
            turns = Table("turn_usage", meta, autoload_with=conn)
            usage = list(
                conn.execute(
                    select(turns)
                    .where(turns.c.session_id == session_id, turns.c.branch_id == MAIN_BRANCH)
                    .order_by(turns.c.user_turn_number)
                ).all()
            )
        if rows is None:  # a plain SDK session (or one written before it was advanced)
            rows = conn.execute(
                select(messages.c.id, messages.c.message_data)
                .where(messages.c.session_id == session_id)
                .order_by(messages.c.id)
            ).all()
        return _SdkSession(session_id, [(int(i), str(d)) for i, d in rows], usage, other)


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
        branch_id=MAIN_BRANCH,
        turn=int(row.user_turn_number),
        requests=int(row.requests or 0),
        input_tokens=int(row.input_tokens or 0),
        output_tokens=int(row.output_tokens or 0),
        total_tokens=int(row.total_tokens or 0),
        details=details,
    )


def _events(found: _SdkSession, result: SdkImportResult) -> list[NewEvent]:
    sid = found.session_id
    events = [NewEvent(SessionStarted(metadata={"imported_from": "agents-sdk"}), _event_id(sid))]
    for message_id, data in found.messages:
        try:
            items = encode_items([json.loads(data)])
        except (ValueError, SerializationError) as error:
            result.notes.append(
                f"session {sid!r}: SDK message {message_id} is not a JSON item and was not "
                f"imported ({error})"
            )
            continue
        event: Event = ItemsAdded(items=items)
        events.append(NewEvent(event, _event_id(sid, message_id, _digest(data))))
    for row in found.usage:
        events.append(
            NewEvent(_usage_event(row), _event_id(sid, "usage", MAIN_BRANCH, row.user_turn_number))
        )
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
    if found.other_branch_messages:
        result.notes.append(
            f"session {sid!r}: {found.other_branch_messages} item(s) on branches other than "
            "main were not imported"
        )
    events = _events(found, result)
    stored = await store.read_stream(sid)
    if stored and stored[0].event_id != str(events[0].event_id):
        result.notes.append(
            f"session {sid!r} already exists in this database and was not imported from the "
            "SDK: left as it is"
        )
        return
    have = {e.event_id for e in stored}
    new = [e for e in events if str(e.event_id) not in have]
    if not new:
        result.up_to_date += 1
        return
    version = len(stored)
    for start in range(0, len(new), APPEND_BATCH):
        chunk = new[start : start + APPEND_BATCH]
        appended = await store.append(sid, chunk, expected_version=version)
        version = appended.last_version
    result.sessions += 1
    result.items += sum(isinstance(e.event, ItemsAdded) for e in new)
    result.usage += sum(isinstance(e.event, UsageRecorded) for e in new)
