"""What each page of the viewer shows, read from the store: one function per page,
returning a typed record that the HTML page renders and the JSON endpoint returns.

Reads are bounded where a session can be long: a conversation page reads the newest
:data:`PAGE_ITEMS` items of a branch (``before=`` pages further back, a page at a
time), a log page :data:`PAGE_EVENTS` events. Time travel folds the log up to the
version asked (:mod:`projections.history`), as ``convstore DB history --as-of`` does,
except at the latest version, which the history projection holds already.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Connection, inspect, select

from eventstore import (
    MAIN_BRANCH,
    BranchDeleted,
    DecodeError,
    DecryptionError,
    EventStore,
    HistoryCompacted,
    InvalidArgumentError,
    ItemPopped,
    ItemsExpired,
    RecordedEvent,
    SessionCleared,
    SessionStarted,
    decode_item,
    queries,
)
from eventstore.audit import audit_stream
from eventstore.records import recorded_from_row, to_datetime
from projections import fold
from projections.history import SEQ_SHIFT
from projections.maintenance import ProjectionCheck
from projections.usage_table import USAGE

from .. import admin
from ..base import HISTORY, StoreSession
from ..cli.output import summary as event_summary
from ..crypto.envelope import MARKER
from ..crypto.tables import data_keys
from ..encrypted import EncryptedSession
from ..usage import UsageStats, usage_report
from .items import ItemView, locked_item, view_item

PAGE_ITEMS = 50
PAGE_EVENTS = 100
PAGE_SESSIONS = 50
SORTS = ("activity", "id", "events", "size", "created")


class NotFound(admin.NotFoundError):
    """No such session, branch or version (the page answers 404)."""


class BadRequest(InvalidArgumentError):
    """A malformed parameter (the page answers 400 with the reason)."""


# -- the sessions page -------------------------------------------------------------


class SessionRow(msgspec.Struct, frozen=True):
    """One session in the list: ``kind`` is plain, Advanced or encrypted (and
    imported for the SDK's), ``size`` the bytes of its events' payloads."""

    session_id: str
    kind: str
    events: int
    items: int
    size: int
    created_at: datetime
    updated_at: datetime


class SessionsPage(msgspec.Struct, frozen=True):
    sessions: tuple[SessionRow, ...]
    total: int
    query: str
    sort: str
    page: int
    pages: int


def _kind(started: Any, encrypted: bool) -> str:
    metadata = started.metadata if isinstance(started, SessionStarted) else {}
    name = metadata.get("session_class", "")
    if encrypted:
        return "encrypted, Advanced" if name.startswith("Advanced") else "encrypted"
    if name.startswith("Advanced"):
        return "Advanced"
    if metadata.get("imported_from"):
        return f"imported ({metadata['imported_from']})"
    return "plain"


async def sessions_page(
    store: EventStore, *, query: str = "", sort: str = "activity", page: int = 1
) -> SessionsPage:
    """Sessions whose id contains ``query``, sorted, a page of :data:`PAGE_SESSIONS`."""
    if sort not in SORTS:
        raise BadRequest(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    if page < 1:
        raise BadRequest(f"page must be 1 or more, not {page}")

    def read(conn: Connection) -> tuple[int, list[Any], dict[str, int], dict[str, str]]:
        total, rows = queries.stream_page_tx(
            conn,
            contains=query,
            order=sort,
            limit=PAGE_SESSIONS,
            offset=(page - 1) * PAGE_SESSIONS,
        )
        ids = [row.stream_id for row in rows]
        counts = HISTORY.own_item_counts(conn, MAIN_BRANCH, ids)
        return total, rows, counts, read_kinds(conn, ids)

    total, rows, counts, kinds = await store.run(read)
    out = [
        SessionRow(
            row.stream_id,
            kinds.get(row.stream_id, "plain"),
            row.version,
            int(counts.get(row.stream_id, 0)),
            int(row.size or 0),
            to_datetime(row.created_at),
            to_datetime(row.updated_at),
        )
        for row in rows
    ]
    pages = max(1, -(-total // PAGE_SESSIONS))
    return SessionsPage(tuple(out), total, query, sort, page, pages)


def read_kinds(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    """The kind of each session (see :class:`SessionRow`): from the metadata of its
    first event, and whether it has a data key (an encrypted session)."""
    if not ids:
        return {}
    keyed: set[str] = set()
    if inspect(conn).has_table(data_keys.name):
        k = data_keys
        keyed = set(conn.execute(select(k.c.stream_id).where(k.c.stream_id.in_(ids))).scalars())
    kinds = {}
    for row in queries.first_events_tx(conn, ids):
        try:
            started = recorded_from_row(row).event
        except DecodeError:  # the log page shows why
            started = None
        kinds[row.stream_id] = _kind(started, row.stream_id in keyed)
    return kinds


# -- opening items: plain or encrypted --------------------------------------------


class Keyring:
    """The master key the viewer was given, and an :class:`EncryptedSession` per
    session it opened with it (each remembers its unwrapped data key: a passphrase's
    key derivation costs a tenth of a second, once per session, not per page)."""

    MAX_SESSIONS = 256

    def __init__(self, key: str | bytes) -> None:
        self.key = key
        self._sessions: dict[tuple[int, str], EncryptedSession] = {}

    def session(self, store: EventStore, session_id: str) -> EncryptedSession:
        found = self._sessions.pop((id(store), session_id), None)
        if found is None:
            found = EncryptedSession(
                session=StoreSession(session_id, store), encryption_key=self.key, ttl=None
            )
        self._sessions[(id(store), session_id)] = found  # newest last
        if len(self._sessions) > self.MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        return found


class Opener:
    """Turns stored items of one session into item views: plaintext as it is;
    envelopes decrypted in this process with the viewer's key, or shown locked."""

    def __init__(self, store: EventStore, session_id: str, keyring: Keyring | None) -> None:
        self.store = store
        self.session_id = session_id
        self.keyring = keyring
        self.locked_reason: str | None = None

    async def views(self, stored: Sequence[tuple[int | None, bytes]]) -> list[ItemView]:
        """``(seq, item bytes)`` pairs as views (``seq`` None: not known)."""
        decoded = [(seq, decode_item(raw), raw) for seq, raw in stored]
        sealed = [i for i, (_, item, _) in enumerate(decoded) if _is_sealed(item)]
        opened: dict[int, Any] = {}
        if sealed and self.keyring is not None and self.locked_reason is None:
            session = self.keyring.session(self.store, self.session_id)
            try:
                items = await session.open_stored([decoded[i][2] for i in sealed])
                opened = dict(zip(sealed, items, strict=True))
            except DecryptionError as error:
                self.locked_reason = f"locked: {error}"
        elif sealed and self.locked_reason is None:
            self.locked_reason = "locked: encrypted, and the viewer was given no key (--key-file)"
        out = []
        for i, (seq, item, _) in enumerate(decoded):
            version = None if seq is None else seq >> SEQ_SHIFT
            if i in opened:
                out.append(view_item(opened[i], seq=seq, version=version))
            elif _is_sealed(item):
                reason = self.locked_reason or "locked"
                out.append(locked_item(item, reason, seq=seq, version=version))
            else:
                out.append(view_item(item, seq=seq, version=version))
        return out


def _is_sealed(item: Any) -> bool:
    return isinstance(item, dict) and MARKER in item


# -- a conversation -----------------------------------------------------------------


class BranchRef(msgspec.Struct, frozen=True):
    branch_id: str
    name: str | None
    parent_branch_id: str | None
    is_current: bool


class ConversationPage(msgspec.Struct, frozen=True):
    """The newest :data:`PAGE_ITEMS` items of a branch (``before``: older than that
    key), the branches to switch to, and the session's version now. ``older``: the
    ``before`` of the next page back, None at the start."""

    session_id: str
    kind: str
    branch_id: str
    branches: tuple[BranchRef, ...]
    version: int
    turns: int
    items: tuple[ItemView, ...]
    before: int | None
    older: int | None
    locked: str | None


async def _known_session(store: EventStore, session_id: str) -> int:
    info = await store.stream_info(session_id)
    if info is None:
        raise NotFound(f"no session {session_id!r} in this database")
    return info.version


async def conversation_page(
    store: EventStore,
    session_id: str,
    *,
    branch: str | None = None,
    before: int | None = None,
    keyring: Keyring | None = None,
) -> ConversationPage:
    version = await _known_session(store, session_id)

    def read(conn: Connection) -> Any:
        current = HISTORY.read_current(conn, session_id)
        infos = HISTORY.read_branches(conn, session_id)
        target = current if branch is None else branch
        info = infos.get(target)
        if target != MAIN_BRANCH and (info is None or info.parent is None or info.deleted):
            return None
        if before is None:
            entries = HISTORY.read_entries(conn, session_id, target, PAGE_ITEMS + 1)
        else:
            entries = HISTORY.read_before(conn, session_id, target, before, PAGE_ITEMS + 1)
        refs = [BranchRef(MAIN_BRANCH, None, None, current == MAIN_BRANCH)]
        refs += [
            BranchRef(b, i.name, i.parent, b == current)
            for b, i in sorted(infos.items(), key=lambda kv: kv[1].created_version)
            if i.parent is not None and not i.deleted
        ]
        turns = HISTORY.turn_count(conn, session_id, target)
        return target, refs, entries, turns

    found = await store.run(read)
    if found is None:
        raise NotFound(f"session {session_id!r} has no branch {branch!r}")
    target, refs, entries, turns = found
    older = entries[1][0] if len(entries) > PAGE_ITEMS else None
    entries = entries[-PAGE_ITEMS:]
    opener = Opener(store, session_id, keyring)
    views = await opener.views(entries)
    kinds = await store.run(lambda conn: read_kinds(conn, [session_id]))
    return ConversationPage(
        session_id,
        kinds.get(session_id, "plain"),
        target,
        tuple(refs),
        version,
        turns,
        tuple(views),
        before,
        older,
        opener.locked_reason,
    )


# -- time travel -------------------------------------------------------------------


class EventRow(msgspec.Struct, frozen=True):
    """One event of a session's log as the log and time travel pages list it."""

    version: int
    position: int
    recorded_at: datetime
    type: str
    summary: str
    hash: str
    payload: str


def event_row(event: RecordedEvent) -> EventRow:
    return EventRow(
        event.version,
        event.position,
        event.recorded_at,
        event.event_type,
        event_summary(event),
        event.hash,
        event.payload.decode("utf-8", "replace"),
    )


class TravelPage(msgspec.Struct, frozen=True):
    """The history of a branch as it was at ``version`` (the last event recorded at
    or before ``at`` when a time was asked), what that event changed (``added``
    items, ``removed`` ones), and the events around it."""

    session_id: str
    branch_id: str
    version: int
    latest: int
    recorded_at: datetime
    items: tuple[ItemView, ...]
    shown_from: int
    total_items: int
    added: tuple[int, ...]
    removed: tuple[ItemView, ...]
    events: tuple[EventRow, ...]
    branches: tuple[str, ...]
    locked: str | None


async def travel_page(
    store: EventStore,
    session_id: str,
    *,
    version: int | None = None,
    at: datetime | None = None,
    branch: str = MAIN_BRANCH,
    keyring: Keyring | None = None,
    offset: int = 0,
) -> TravelPage:
    latest = await _known_session(store, session_id)
    if version is not None and not 1 <= version <= latest:
        raise NotFound(f"session {session_id!r} has versions 1..{latest}, not {version}")
    if at is None and version in (None, latest):
        now = await _travel_now(store, session_id, latest, branch, keyring, offset)
        if now is not None:
            return now
    events = await store.read_stream(session_id, upto=version)
    if at is not None:
        events = [e for e in events if e.recorded_at <= at]
        if not events:
            raise NotFound(f"session {session_id!r} did not exist yet at {at.isoformat()}")
    if version is None and at is None:
        version = latest
    chosen = events[-1]
    before = fold(events[:-1])
    after = fold([chosen], before)
    if not after.exists(branch):
        raise NotFound(f"session {session_id!r} had no branch {branch!r} at v{chosen.version}")
    rows = after.view(branch)
    kept = {row.seq for row in rows}
    gone = (
        [row for row in before.view(branch) if row.seq not in kept] if before.exists(branch) else []
    )
    total = len(rows)
    end = max(0, total - offset)
    start = max(0, end - PAGE_ITEMS)
    opener = Opener(store, session_id, keyring)
    shown = await opener.views([(row.seq, row.item) for row in rows[start:end]])
    removed = await opener.views([(row.seq, row.item) for row in gone])
    near = await store.read_stream(
        session_id, after=max(0, chosen.version - 6), upto=chosen.version + 5
    )
    return TravelPage(
        session_id,
        branch,
        chosen.version,
        latest,
        chosen.recorded_at,
        tuple(shown),
        start,
        total,
        tuple(row.seq for row in rows if row.seq >> SEQ_SHIFT == chosen.version),
        tuple(removed),
        tuple(event_row(e) for e in near),
        tuple(b for b in after.branch_ids() if after.exists(b)),
        opener.locked_reason,
    )


def _removes_from(event: Any, branch: str) -> bool:
    """Whether ``event`` removes items of ``branch`` (or the branch itself)."""
    match event:
        case (
            ItemPopped(branch_id=b)
            | ItemsExpired(branch_id=b)
            | BranchDeleted(branch_id=b)
            | HistoryCompacted(branch_id=b)
        ):
            return bool(b == branch)
        case SessionCleared(branch_id=b):
            return b is None or b == branch
        case _:
            return False


async def _travel_now(
    store: EventStore,
    session_id: str,
    latest: int,
    branch: str,
    keyring: Keyring | None,
    offset: int,
) -> TravelPage | None:
    """The time-travel page at the latest version, from the history projection (a page
    of items, as a conversation page reads them) instead of a fold of the whole log;
    None when the last event removed items of the branch (the fold lists them)."""
    near = await store.read_stream(session_id, after=max(0, latest - 6))
    chosen = near[-1]
    if _removes_from(chosen.event, branch):
        return None

    def read(conn: Connection) -> Any:
        infos = HISTORY.read_branches(conn, session_id)
        info = infos.get(branch)
        if branch != MAIN_BRANCH and (info is None or info.parent is None or info.deleted):
            return None
        entries = HISTORY.read_entries(conn, session_id, branch, offset + PAGE_ITEMS)
        total = HISTORY.count_items(conn, session_id, branch)
        names = [MAIN_BRANCH, *(b for b, i in infos.items() if i.parent and not i.deleted)]
        return entries, total, names

    found = await store.run(read)
    if found is None:
        raise NotFound(f"session {session_id!r} had no branch {branch!r} at v{latest}")
    entries, total, names = found
    page = entries[: max(0, len(entries) - offset)][-PAGE_ITEMS:]
    opener = Opener(store, session_id, keyring)
    shown = await opener.views(page)
    return TravelPage(
        session_id,
        branch,
        latest,
        latest,
        chosen.recorded_at,
        tuple(shown),
        max(0, total - offset - len(page)),
        total,
        tuple(seq for seq, _ in page if seq >> SEQ_SHIFT == latest),
        (),
        tuple(event_row(e) for e in near),
        tuple(names),
        opener.locked_reason,
    )


# -- the branch tree ----------------------------------------------------------------


class TreePage(msgspec.Struct, frozen=True):
    session_id: str
    nodes: tuple[admin.TreeNode, ...]


async def tree_page(store: EventStore, session_id: str) -> TreePage:
    await _known_session(store, session_id)
    return TreePage(session_id, tuple(await admin.session_tree(store, session_id)))


# -- usage ---------------------------------------------------------------------------


class UsagePage(msgspec.Struct, frozen=True):
    """``stats`` is None where the database keeps no usage (no Advanced session ever
    opened it)."""

    session_id: str
    branch_id: str | None
    stats: dict[str, Any] | None


async def has_usage(store: EventStore) -> bool:
    await store.ensure_tables()
    return USAGE.name in {p.name for p in store.projectors}


async def usage_page(store: EventStore, session_id: str, *, branch: str | None) -> UsagePage:
    await _known_session(store, session_id)
    if not await has_usage(store):
        return UsagePage(session_id, branch, None)
    try:
        stats: UsageStats = await usage_report(store, session_id, branch=branch)
    except InvalidArgumentError as error:  # BranchError: no such branch
        raise NotFound(str(error)) from error
    return UsagePage(session_id, stats.branch_id, stats.to_dict())


# -- the log -------------------------------------------------------------------------


class LogPage(msgspec.Struct, frozen=True):
    """Events after version ``after``, :data:`PAGE_EVENTS` of them, with the hash of
    each; ``audit`` is the session's audit: no finding (clean) or each finding;
    ``projections``: whether the audit compared the projections too."""

    session_id: str
    version: int
    after: int
    events: tuple[EventRow, ...]
    next_after: int | None
    audit: tuple[str, ...]
    projections: bool


async def log_page(
    store: EventStore, session_id: str, *, after: int = 0, projections: bool = False
) -> LogPage:
    """The log's page after ``after``, and the session's audit: its chain, versions,
    positions and streams row; with ``projections`` also its projections against a
    fold of its log (that reads every item of the session: on demand)."""
    version = await _known_session(store, session_id)
    events = await store.read_stream(session_id, after=after, limit=PAGE_EVENTS)
    checks = [ProjectionCheck(store.projectors)] if projections else []
    found = await audit_stream(store, session_id, checks=checks)
    findings = tuple(str(f) for f in found)
    last = events[-1].version if events else after
    return LogPage(
        session_id,
        version,
        after,
        tuple(event_row(e) for e in events),
        last if last < version and len(events) == PAGE_EVENTS else None,
        findings,
        projections,
    )
