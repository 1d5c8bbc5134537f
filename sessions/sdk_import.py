"""Bring the history of the Agents SDK's own sessions into the log.

Reads the tables the SDK's ``SQLiteSession`` and ``SQLAlchemySession`` write
(``agent_sessions`` / ``agent_messages`` by default, other names as options), from a
SQLite file (opened read-only: the source is never changed) or a database URL, and
appends each session's items, in the SDK's order, as events of a convstore session of
the same id:

* ``SessionStarted`` (metadata ``imported_from: agents-sdk``), then one ``ItemsAdded``
  per SDK message row, so each item keeps its own place in the log;
* from an ``AdvancedSQLiteSession`` database (it has ``message_structure``): the items
  of the ``main`` branch in its sequence order, and every other branch as a
  ``BranchCreated`` from ``main`` after the items it shares with ``main`` (the SDK lists
  a branch's earlier items again under the branch; they become the shared prefix, not
  new items) followed by the branch's own items; then each ``turn_usage``
  row as a ``UsageRecorded`` event anchored at the user message that starts its turn,
  so per-turn usage keeps the SDK's turn numbers and branches. A turn the SDK recorded
  usage for on a branch that copied it stays the branch's own copy (sharing it with
  ``main`` would merge two turns' usage). The current branch stays ``main``.

Event ids are derived from the session id, the SDK's message id and the item's bytes
(uuid5), so running the import again appends only messages the SDK has written since,
and a message is never imported twice. A convstore session of the same id that was not
imported from the SDK is left alone and reported. The SDK does not keep times precise
enough to carry over: events are recorded at the time of the import.

Rows that cannot be imported (a message that is not a JSON item or nests too deep, a
session or branch id convstore cannot store, a usage row whose counts are not
integers) are reported in the result's notes, counted, and skipped; the rest of the
session and the other sessions are imported.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Connection, MetaData, Table, inspect, select, type_coerce
from sqlalchemy.types import NullType

from eventstore import (
    MAIN_BRANCH,
    MAX_INTEGER,
    BranchCreated,
    ConfigurationError,
    ConvstoreError,
    EventStore,
    InvalidArgumentError,
    ItemsAdded,
    NewEvent,
    RecordedEvent,
    SerializationError,
    SessionStarted,
    UsageRecorded,
    check_stream_id,
    encode_item,
    is_integer,
)
from eventstore.codec import MAX_DEPTH, nested_too_deep
from eventstore.snapshot import ReadOnlySource
from projections.history import item_seq
from projections.usage import add_details
from projections.usage_table import USAGE

from .base import HISTORY

# The namespace of the event ids of imported SDK history.
NAMESPACE = uuid.UUID("6f1d0f3c-8f5e-4d0b-9a57-1c5d3b1e2a40")
# Events per append while importing one session.
APPEND_BATCH = 1000
# The tables that make a source an AdvancedSQLiteSession database.
_ADVANCED_TABLES = frozenset({"message_structure", "turn_usage"})


@dataclass(slots=True)
class SdkImportResult:
    """What an SDK import did."""

    sessions: int = 0  # sessions with something new imported
    items: int = 0  # items appended
    usage: int = 0  # turn usage rows appended
    branches: int = 0  # AdvancedSQLiteSession branches other than main appended
    up_to_date: int = 0  # sessions whose SDK history was imported already
    skipped_rows: int = 0  # message, branch and usage rows reported and not imported
    skipped_sessions: int = 0  # sessions reported and not imported
    notes: list[str] = field(default_factory=list)  # what was left out, and why
    refused: list[Refusal] = field(default_factory=list)  # each row or session skipped

    @property
    def skipped(self) -> int:
        """Rows and sessions that were reported and not imported."""
        return self.skipped_rows + self.skipped_sessions


@dataclass(frozen=True, slots=True)
class Refusal:
    """A row or session of the source that was not imported, and the typed error that
    says why (:class:`SerializationError` for data convstore cannot store exactly,
    e.g. an item nested too deep; :class:`InvalidArgumentError` for an id or a count it
    cannot store)."""

    session_id: str | None  # None: the session's id itself was refused
    row: str  # which row: "SDK message 7", "branch 'x'", "usage of branch 'main' turn 2"
    error: ConvstoreError

    def __str__(self) -> str:
        where = "a session" if self.session_id is None else f"session {self.session_id!r}"
        return f"{where}: {self.row} was not imported: {self.error}"


@dataclass(frozen=True, slots=True)
class _Row:
    """One SDK message row of a branch, as stored."""

    message_id: int
    data: object  # message_data: JSON text (anything, in a hostile database)
    turn: int | None  # message_structure.user_turn_number (AdvancedSQLiteSession)


@dataclass(frozen=True, slots=True)
class _SdkSession:
    session_id: str
    messages: list[_Row]  # main's rows (every row of a plain session), in the SDK's order
    usage: list[Any]  # turn_usage rows
    branches: dict[Any, list[_Row]]  # other branches' rows by their stored id, in order


def _event_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, "\x1f".join(str(p) for p in parts))


def _text(value: object, what: str) -> str:
    """A stored value as text (SerializationError if it is neither text nor UTF-8)."""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError as error:
            raise SerializationError(f"{what} is not UTF-8 ({error.reason})") from None
    if not isinstance(value, str):
        kind = "NULL" if value is None else type(value).__name__
        raise SerializationError(f"{what} is {kind}, not text")
    try:
        value.encode()
    except UnicodeEncodeError as error:  # bytes a SQLite source could not read as UTF-8
        raise SerializationError(f"{what} is not UTF-8 ({error.reason})") from None
    return value


def _digest(data: object) -> str:
    raw = data.encode(errors="surrogatepass") if isinstance(data, str) else repr(data).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _parse_json(text: str, what: str) -> Any:
    """The JSON value ``text``; SerializationError if it is not JSON or nests deeper than
    convstore stores (checked before decoding: the decoder is recursive)."""
    if nested_too_deep(text.encode(errors="surrogatepass")):
        raise SerializationError(
            f"{what} is nested more than {MAX_DEPTH} levels deep, the most convstore stores"
        )
    try:
        return json.loads(text)
    except ValueError as error:
        raise SerializationError(f"{what} is not JSON ({error})") from None


def _valid_id(value: object, what: str) -> str:
    """A session or branch id convstore can store (the rules of a stream id), or
    InvalidArgumentError."""
    try:
        return check_stream_id(_text(value, what))
    except (InvalidArgumentError, SerializationError) as error:
        raise InvalidArgumentError(f"{what} {value!r} cannot be stored: {error}") from None


class _Reader:
    def __init__(self, sessions_table: str, messages_table: str) -> None:
        self.sessions_table = sessions_table
        self.messages_table = messages_table

    def session_ids(self, conn: Connection) -> tuple[list[Any], bool]:
        """The session ids of the messages table as stored, and whether the source
        has the AdvancedSQLiteSession's tables."""
        names = set(inspect(conn).get_table_names())
        if self.messages_table not in names:
            raise ConfigurationError(
                f"the source has no table {self.messages_table!r}: is it a database of the "
                "SDK's sessions? (--sessions-table/--messages-table name other tables)"
            )
        messages = Table(self.messages_table, MetaData(), autoload_with=conn)
        query = select(messages.c.session_id).distinct().order_by(messages.c.session_id)
        return list(conn.execute(query).scalars()), bool(names & _ADVANCED_TABLES)

    def read(self, conn: Connection, *, stored_id: Any, session_id: str) -> _SdkSession:
        names = set(inspect(conn).get_table_names())
        meta = MetaData()
        messages = Table(self.messages_table, meta, autoload_with=conn)
        rows: list[_Row] | None = None
        branches: dict[Any, list[_Row]] = {}
        usage: list[Any] = []
        if "message_structure" in names:
            structure = Table("message_structure", meta, autoload_with=conn)
            query = (
                select(
                    structure.c.branch_id,
                    messages.c.id,
                    messages.c.message_data,
                    structure.c.user_turn_number,
                )
                .join(structure, structure.c.message_id == messages.c.id)
                .where(structure.c.session_id == stored_id)
                .order_by(structure.c.sequence_number, structure.c.id)
            )
            by_branch: dict[Any, list[_Row]] = {}
            for branch_id, message_id, data, turn in conn.execute(query):
                number = turn if is_integer(turn) else None
                by_branch.setdefault(branch_id, []).append(_Row(int(message_id), data, number))
            rows = by_branch.pop(MAIN_BRANCH, None)
            branches = by_branch if rows else {}
        if "turn_usage" in names:
            turns = Table("turn_usage", meta, autoload_with=conn)
            usage = list(
                conn.execute(
                    # As stored: a reflected JSON column would be decoded by SQLAlchemy,
                    # before the depth of a hostile value is checked (_usage_details).
                    select(*(type_coerce(c, NullType()).label(c.name) for c in turns.c))
                    .where(turns.c.session_id == stored_id)
                    .order_by(turns.c.branch_id, turns.c.user_turn_number, turns.c.id)
                ).all()
            )
        if rows is None:  # a plain SDK session (or one written before it was advanced)
            found = conn.execute(
                select(messages.c.id, messages.c.message_data)
                .where(messages.c.session_id == stored_id)
                .order_by(messages.c.id)
            ).all()
            rows = [_Row(int(i), d, None) for i, d in found]
        return _SdkSession(session_id, rows, usage, branches)


# -- building the events ------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """One session's events, decided before anything is appended."""

    sid: str
    result: SdkImportResult
    main_ids: frozenset[int] = frozenset()  # the message ids of main's rows
    row_events: dict[tuple[str, int], uuid.UUID] = field(default_factory=dict)
    shared: dict[str, int] = field(default_factory=dict)  # branch -> rows shared with main

    def skip(self, row: str, error: ConvstoreError) -> None:
        refusal = Refusal(self.sid, row, error)
        self.result.skipped_rows += 1
        self.result.refused.append(refusal)
        self.result.notes.append(str(refusal))

    def item_event(self, branch_id: str, row: _Row) -> NewEvent | None:
        """The ItemsAdded of one message row, or None (reported) if it is not an item."""
        try:
            item = _parse_json(_text(row.data, "its message_data"), "its message_data")
            items = (encode_item(item, where="its item"),)
        except SerializationError as error:
            self.skip(f"SDK message {row.message_id}", error)
            return None
        if branch_id == MAIN_BRANCH or row.message_id not in self.main_ids:
            event_id = _event_id(self.sid, row.message_id, _digest(row.data))
        else:  # a row of main the branch holds a copy of (see _shared_prefix)
            event_id = _event_id(self.sid, "copy", branch_id, row.message_id, _digest(row.data))
        self.row_events[(branch_id, row.message_id)] = event_id
        return NewEvent(ItemsAdded(items=items, branch_id=branch_id), event_id)


def _first_of_turn(rows: Sequence[_Row], turn: int) -> int | None:
    return next((i for i, row in enumerate(rows) if row.turn == turn), None)


def _shared_prefix(main: Sequence[_Row], rows: Sequence[_Row], usage: Sequence[Any]) -> int:
    """How many of a branch's first rows are copies of main's: equal data, and no turn
    the SDK recorded usage for on the branch (that turn keeps its own figures)."""
    shared = 0
    while shared < min(len(rows), len(main)) and rows[shared].data == main[shared].data:
        shared += 1
    for row in usage:
        first = _first_of_turn(rows, row.user_turn_number)
        if first is not None:
            shared = min(shared, first)
    return shared


def _usage_rows(plan: _Plan, rows: Sequence[Any]) -> dict[str, list[tuple[Any, int]]]:
    """Valid usage rows by branch id, each with its turn; others reported and skipped."""
    valid: dict[str, list[tuple[Any, int]]] = {}
    for row in rows:
        turn = row.user_turn_number
        where = f"the usage of branch {row.branch_id!r} turn {turn!r}"
        try:
            branch = _valid_id(row.branch_id, "its branch id")
            if not _whole(turn):
                raise InvalidArgumentError(f"its turn number {turn!r} is not an integer >= 0")
            for name in ("requests", "input_tokens", "output_tokens", "total_tokens"):
                value = getattr(row, name, None)
                if value is not None and not _whole(value):
                    raise InvalidArgumentError(f"its {name} {value!r} is not an integer >= 0")
            _usage_details(row)
        except (InvalidArgumentError, SerializationError) as error:
            plan.skip(where, error)
            continue
        valid.setdefault(branch, []).append((row, int(turn)))
    return valid


def _whole(value: object) -> bool:
    """Whether ``value`` is a count convstore stores (an integer from 0 to MAX_INTEGER)."""
    return is_integer(value) and 0 <= value <= MAX_INTEGER


def _usage_details(row: Any) -> dict[str, Any]:
    details: dict[str, Any] = {}
    for name in ("input_tokens_details", "output_tokens_details"):
        value = getattr(row, name, None)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            value = _parse_json(_text(value, name), name)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise SerializationError(f"its {name} is not a JSON object")
        details[name] = add_details({}, value)
    return details


def _usage_event(
    row: Any, turn: int, branch_id: str, anchor: tuple[str, int] | None, ordinal: int
) -> UsageRecorded:
    return UsageRecorded(
        branch_id=branch_id,
        turn=ordinal,
        requests=int(row.requests or 0),
        input_tokens=int(row.input_tokens or 0),
        output_tokens=int(row.output_tokens or 0),
        total_tokens=int(row.total_tokens or 0),
        details=_usage_details(row),
        anchor_branch=None if anchor is None else anchor[0],
        anchor_seq=0 if anchor is None else anchor[1],
    )


# -- the import -----------------------------------------------------------------------


async def import_sdk(
    store: EventStore,
    source: str,
    *,
    sessions_table: str = "agent_sessions",
    messages_table: str = "agent_messages",
    progress: Callable[[int], None] | None = None,
) -> SdkImportResult:
    """Import every session of the SDK database ``source`` (a SQLite path or a URL).

    Creates the tables the imported sessions need (the history's; the usage
    projection's too from an ``AdvancedSQLiteSession`` database). Rows and sessions
    that cannot be imported are counted in ``skipped_rows`` / ``skipped_sessions`` and
    explained in ``notes``; everything else is imported.
    """
    reader = _Reader(sessions_table, messages_table)
    result = SdkImportResult()
    src = ReadOnlySource(source)
    try:
        stored_ids, advanced = await src.read(reader.session_ids)
        store.keep([HISTORY, USAGE] if advanced else [HISTORY])
        await store.ensure_tables()
        for stored_id in stored_ids:
            try:
                sid = _valid_id(stored_id, "the session id")
            except InvalidArgumentError as error:
                refusal = Refusal(None, "the whole session", error)
                result.skipped_sessions += 1
                result.refused.append(refusal)
                result.notes.append(str(refusal))
                continue
            found = await src.read(partial(reader.read, stored_id=stored_id, session_id=sid))
            await _import_session(store, found, result)
            if progress is not None:
                progress(1)
    finally:
        await src.close()
    return result


async def _import_session(store: EventStore, found: _SdkSession, result: SdkImportResult) -> None:
    sid = found.session_id
    plan = _Plan(sid, result, frozenset(row.message_id for row in found.messages))
    started = NewEvent(SessionStarted(metadata={"imported_from": "agents-sdk"}), _event_id(sid))
    stored = await store.read_stream(sid)
    if stored and stored[0].event_id != str(started.event_id):
        refusal = Refusal(
            sid,
            "the whole session",
            InvalidArgumentError(
                "a convstore session of that id, not imported from the SDK, is in this "
                "database: left as it is"
            ),
        )
        result.skipped_sessions += 1
        result.refused.append(refusal)
        result.notes.append(str(refusal))
        return
    have = {e.event_id for e in stored}
    events = [started, *(e for r in found.messages if (e := plan.item_event(MAIN_BRANCH, r)))]
    new = [e for e in events if str(e.event_id) not in have]
    version = await _append(store, sid, new, len(stored))
    usage = _usage_rows(plan, found.usage)
    if found.branches:
        stored = await store.read_stream(sid)
        branch = [
            e
            for e in _branch_events(plan, found, stored, usage)
            if str(e.event_id) not in {s.event_id for s in stored}
        ]
        version = await _append(store, sid, branch, version)
        new += branch
    if usage:
        stored = await store.read_stream(sid)
        fresh = await _usage_events(store, plan, found, stored, usage)
        await _append(store, sid, fresh, version)
        new += fresh
    if not new:
        result.up_to_date += 1
        return
    result.sessions += 1
    result.items += sum(isinstance(e.event, ItemsAdded) for e in new)
    result.usage += sum(isinstance(e.event, UsageRecorded) for e in new)
    result.branches += sum(isinstance(e.event, BranchCreated) for e in new)


def _seqs(plan: _Plan, stored: Sequence[RecordedEvent], branch_id: str) -> dict[int, int]:
    """SDK message id -> the key of its imported item on ``branch_id``."""
    versions = {e.event_id: e.version for e in stored}
    return {
        message_id: item_seq(versions[str(event_id)], 0)
        for (branch, message_id), event_id in plan.row_events.items()
        if branch == branch_id and str(event_id) in versions
    }


def _branch_events(
    plan: _Plan,
    found: _SdkSession,
    stored: Sequence[RecordedEvent],
    usage: Mapping[str, list[tuple[Any, int]]],
) -> list[NewEvent]:
    """Each other branch: created from main after the items it shares with main (the SDK
    listed them again under the branch), then its own items."""
    main_seqs = _seqs(plan, stored, MAIN_BRANCH)
    created_before = {
        e.event.branch_id: e.event.fork_seq for e in stored if isinstance(e.event, BranchCreated)
    }
    events: list[NewEvent] = []
    seqs = [main_seqs.get(row.message_id) for row in found.messages]
    for key, rows in found.branches.items():
        try:
            branch_id = _valid_id(key, "its id")
        except InvalidArgumentError as error:
            plan.skip(f"branch {key!r} ({len(rows)} row(s))", error)
            continue
        branch_usage = [row for row, _ in usage.get(branch_id, [])]
        if branch_id in created_before:  # imported before: the fork point is in the log
            fork_seq = created_before[branch_id]
            shared = _shared_prefix(found.messages, rows, ())
            while shared and (seqs[shared - 1] or 0) > fork_seq:
                shared -= 1
        else:
            shared = _shared_prefix(found.messages, rows, branch_usage)
            fork_seq = max((s for s in seqs[:shared] if s is not None), default=0)
        plan.shared[branch_id] = shared
        created = BranchCreated(
            branch_id=branch_id, parent_branch_id=MAIN_BRANCH, fork_seq=fork_seq, name=branch_id
        )
        events.append(NewEvent(created, _event_id(plan.sid, "branch", branch_id)))
        events.extend(e for row in rows[shared:] if (e := plan.item_event(branch_id, row)))
    return events


async def _usage_events(
    store: EventStore,
    plan: _Plan,
    found: _SdkSession,
    stored: Sequence[RecordedEvent],
    usage: Mapping[str, list[tuple[Any, int]]],
) -> list[NewEvent]:
    """Each usage row not imported yet, anchored at the user message that starts its
    turn on its branch (main's, for a turn a branch shares with main)."""
    anchors: list[tuple[Any, int, str, tuple[str, int] | None]] = []
    have = {e.event_id for e in stored}
    main_seqs = _seqs(plan, stored, MAIN_BRANCH)
    for branch_id, rows in usage.items():
        messages = found.messages if branch_id == MAIN_BRANCH else found.branches.get(branch_id)
        own = main_seqs if branch_id == MAIN_BRANCH else _seqs(plan, stored, branch_id)
        for row, turn in rows:
            if str(_event_id(plan.sid, "usage", branch_id, turn)) in have:
                continue
            anchor = None
            first = None if messages is None else _first_of_turn(messages, turn)
            if messages is not None and first is not None:
                if branch_id != MAIN_BRANCH and first < plan.shared.get(branch_id, 0):
                    seq = main_seqs.get(found.messages[first].message_id)
                    anchor = None if seq is None else (MAIN_BRANCH, seq)
                else:
                    seq = own.get(messages[first].message_id)
                    anchor = None if seq is None else (branch_id, seq)
            anchors.append((row, turn, branch_id, anchor))

    def ordinals(conn: Connection) -> list[int | None]:
        return [
            None if anchor is None else HISTORY.read_user_turn(conn, plan.sid, *anchor)
            for _, _, _, anchor in anchors
        ]

    events = []
    for (row, turn, branch_id, anchor), ordinal in zip(
        anchors, await store.run(ordinals), strict=True
    ):
        if ordinal is None:
            anchor = None
            plan.result.notes.append(
                f"session {plan.sid!r}: the usage of branch {branch_id!r} turn {turn} has no "
                "imported user message to belong to: counted for the session only"
            )
        event = _usage_event(row, turn, branch_id, anchor, ordinal or 0)
        events.append(NewEvent(event, _event_id(plan.sid, "usage", branch_id, turn)))
    return events


async def _append(store: EventStore, sid: str, events: list[NewEvent], version: int) -> int:
    for start in range(0, len(events), APPEND_BATCH):
        chunk = events[start : start + APPEND_BATCH]
        version = (await store.append(sid, chunk, expected_version=version)).last_version
    return version
