"""What the ``convstore`` command does, as functions that scripts can import.

Every command of ``convstore DB COMMAND`` is one function here (export and import are
in :mod:`sessions.transfer`, the SDK import in :mod:`sessions.sdk_import`), taking an
:class:`~eventstore.EventStore` opened with :func:`open_store`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import (
    MAIN_BRANCH,
    AuditReport,
    Checkpoint,
    ConvstoreError,
    EventStore,
    HistoryCompacted,
    IntegrityError,
    InvalidArgumentError,
    RecordedEvent,
    RemovedStream,
    RepairReport,
    StreamInfo,
    audit,
    decode_item,
    encode_item,
    repair_positions,
)
from eventstore.checkpoints import dump_checkpoints
from projections import fold, rebuild
from projections.compaction_check import CompactionCheck
from projections.maintenance import ProjectionCheck, VerifyReport, verify
from projections.usage_table import USAGE

from .base import HISTORY, StoreSession


class NotFoundError(ConvstoreError, LookupError):
    """The session, branch or version asked for does not exist."""


class AuditFailedError(IntegrityError):
    """The log did not pass its audit, so the operation that needs a sound log refused."""

    def __init__(self, what: str, report: AuditReport) -> None:
        super().__init__(
            f"{what}: the log did not pass its audit ({len(report.findings)} finding(s)); "
            "run 'convstore DB audit' to see them"
        )
        self.report = report


def open_store(db: str | os.PathLike[str] | AsyncEngine, *, create: bool = False) -> EventStore:
    """A store on a convstore database; its tables are created only with ``create``."""
    return EventStore(db, create_tables=create, projectors=[HISTORY])


async def init_database(db: str | os.PathLike[str] | AsyncEngine) -> None:
    """Create the convstore tables in ``db`` (nothing changes where they exist)."""
    async with open_store(db, create=True) as store:
        store.keep([USAGE])  # the Advanced sessions' projection, for create_tables=False
        await store.ensure_tables()


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One session: its log length, items on the main branch, and when it was written."""

    session_id: str
    version: int
    items: int
    created_at: datetime
    updated_at: datetime


async def list_sessions(store: EventStore) -> list[SessionSummary]:
    """Every session, by id."""
    counts = await store.run(lambda conn: HISTORY.own_item_counts(conn, MAIN_BRANCH))
    return [
        SessionSummary(
            s.stream_id, s.version, counts.get(s.stream_id, 0), s.created_at, s.updated_at
        )
        for s in await store.list_streams()
    ]


async def session_log(store: EventStore, session_id: str) -> list[RecordedEvent]:
    """Every event of one session, oldest first; NotFoundError if it has none."""
    events = await store.read_stream(session_id)
    if not events:
        raise NotFoundError(f"no session {session_id!r} in this database")
    return events


async def session_history(
    store: EventStore,
    session_id: str,
    *,
    branch: str = MAIN_BRANCH,
    as_of: int | datetime | None = None,
) -> list[Any]:
    """The items of a session's branch now, or as they were at ``as_of``.

    ``as_of`` is a stream version (the one ``session_log`` shows, included) or an
    aware datetime (every event recorded at or before it). The present of ``main`` is
    read from the projection; the past, and other branches, are folded from the log.
    Raises NotFoundError for an unknown session, branch or version.
    """
    info = await store.stream_info(session_id)
    if info is None:
        raise NotFoundError(f"no session {session_id!r} in this database")
    if isinstance(as_of, int) and not 1 <= as_of <= info.version:
        raise NotFoundError(f"session {session_id!r} has versions 1..{info.version}, not {as_of}")
    if as_of is None:

        def read(conn: Connection) -> list[bytes] | None:
            if branch != MAIN_BRANCH:
                info = HISTORY.read_info(conn, session_id, branch)
                if info is None or info.parent is None or info.deleted:
                    return None
            return HISTORY.read_items(conn, session_id, branch, None)

        rows = await store.run(read)
        if rows is None:
            raise NotFoundError(f"session {session_id!r} has no branch {branch!r}")
        return [decode_item(row) for row in rows]
    upto = as_of if isinstance(as_of, int) else None
    events = await store.read_stream(session_id, upto=upto)
    if isinstance(as_of, datetime):
        if as_of.tzinfo is None:
            raise InvalidArgumentError("as_of needs a timezone (e.g. 2026-01-31T12:00:00Z)")
        events = [e for e in events if e.recorded_at <= as_of]
        if not events:
            raise NotFoundError(f"session {session_id!r} did not exist yet at {as_of}")
    state = fold(events)
    if not state.exists(branch):
        raise NotFoundError(f"session {session_id!r} has no branch {branch!r}")
    return [decode_item(row) for row in state.items(branch)]


async def decrypt_items(
    store: EventStore,
    session_id: str,
    items: Sequence[Any],
    master_key: str | bytes,
    *,
    key_store: EventStore | str | os.PathLike[str] | None = None,
) -> list[Any]:
    """The ``items`` of an encrypted session (as :func:`session_history` gives them:
    envelopes) decrypted with its master key; plaintext items stay as they are. Expired
    items are shown too (this is a look at the record, not ``get_items``). A wrong key
    raises :class:`WrongKeyError`, a shredded one :class:`KeyShreddedError`; nothing is
    written. ``key_store`` names the key database when the keys live apart."""
    from .crypto.envelope import MARKER
    from .encrypted import EncryptedSession

    sealed_at = [n for n, item in enumerate(items) if isinstance(item, dict) and MARKER in item]
    if not sealed_at:
        return list(items)
    sealed = EncryptedSession(
        session=StoreSession(session_id, store),
        encryption_key=master_key,
        ttl=None,
        key_store=key_store,
    )
    try:
        opened = await sealed.open_stored([bytes(encode_item(items[n])) for n in sealed_at])
    finally:
        await sealed.close()
    shown = list(items)
    for n, item in zip(sealed_at, opened, strict=True):
        shown[n] = item
    return shown


@dataclass(frozen=True, slots=True)
class TreeNode:
    """One branch of a session, as ``convstore DB tree`` draws it."""

    branch_id: str
    parent_branch_id: str | None
    depth: int
    is_current: bool
    items: int
    user_turns: int
    fork_turn: int | None  # the parent's last turn the branch shares (None: main)
    fork_preview: str | None  # what the user said in that turn
    created_version: int
    compactions: int = 0  # HistoryCompacted events of the branch (reverts included)


async def session_tree(store: EventStore, session_id: str) -> list[TreeNode]:
    """Every branch of a session in tree order (a parent before its children), with
    its fork point as a turn of the parent and a preview of what was said there.
    Raises NotFoundError for an unknown session."""
    from .branching import BranchingSession, content_preview

    if await store.stream_info(session_id) is None:
        raise NotFoundError(f"no session {session_id!r} in this database")
    session = BranchingSession(session_id, store)
    nodes = await session._tree()
    by_parent: dict[str | None, list[Any]] = {}
    for node, count in nodes:
        by_parent.setdefault(node.parent_branch_id, []).append((node, count))

    def fork_turn(conn: Connection, *, parent: str, fork_seq: int) -> tuple[int, str] | None:
        shared = [t for t in HISTORY.read_turns(conn, session_id, parent) if t.seq <= fork_seq]
        if not shared:
            return None
        content = decode_item(shared[-1].item).get("content", "")
        return shared[-1].number, content_preview(content, 60)

    out: list[TreeNode] = []
    compacted = await compactions_by_branch(store, session_id)

    async def visit(parent: str | None, depth: int) -> None:
        for node, count in by_parent.get(parent, []):
            fork = None
            if node.parent_branch_id is not None and node.fork_seq is not None:
                fork = await store.run(
                    partial(fork_turn, parent=node.parent_branch_id, fork_seq=node.fork_seq)
                )
            out.append(
                TreeNode(
                    node.branch_id,
                    node.parent_branch_id,
                    depth,
                    node.is_current,
                    count,
                    node.user_turns,
                    None if fork is None else fork[0],
                    None if fork is None else fork[1],
                    node.created_version,
                    len(compacted.get(node.branch_id, ())),
                )
            )
            await visit(node.branch_id, depth + 1)

    await visit(None, 0)
    return out


async def compactions_by_branch(
    store: EventStore, session_id: str
) -> dict[str, list[RecordedEvent]]:
    """The HistoryCompacted events of a session, by branch, oldest first."""
    found: dict[str, list[RecordedEvent]] = {}
    for recorded in await store.read_stream(session_id):
        if isinstance(recorded.event, HistoryCompacted):
            found.setdefault(recorded.event.branch_id, []).append(recorded)
    return found


# -- audit, verify, replay --------------------------------------------------------


async def audit_database(
    store: EventStore,
    *,
    checkpoints: Mapping[str, Checkpoint] | None = None,
    progress: Callable[[int], None] | None = None,
    projections: bool = True,
) -> AuditReport:
    """The full audit: the log (:func:`eventstore.audit`), each compaction against the
    history it compacted, and every projection of the store against a fold of the log,
    in one pass over one consistent snapshot."""
    checks: list[Any] = [CompactionCheck()]
    if projections:
        checks.append(ProjectionCheck(store.projectors))
    return await audit(store, checks=checks, checkpoints=checkpoints, progress=progress)


async def replay(store: EventStore, *, progress: Callable[[int], None] | None = None) -> int:
    """Rebuild every projection from the log; return the last position replayed.

    Refuses (:class:`AuditFailedError`, nothing changed) when the log itself does not
    pass its audit: rebuilding from a tampered log would make it look clean.
    """
    report = await audit(store)
    if not report.ok:
        raise AuditFailedError("refusing to replay", report)
    return await rebuild(store, progress=progress)


async def verify_projections(
    store: EventStore, *, progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Compare the live projections with a fold of the log (no writes, no lock)."""
    return await verify(store, progress=progress)


async def take_checkpoints(store: EventStore, *, key: bytes | None = None) -> bytes:
    """The checkpoint file of every stream's head (see :mod:`eventstore.checkpoints`),
    signed with ``key`` when given. Refuses when the log does not pass its audit:
    signing a tampered log would vouch for it."""
    report = await audit(store, collect_heads=True)
    if not report.ok:
        raise AuditFailedError("refusing to take checkpoints", report)
    return dump_checkpoints(report.heads.values(), head_position=report.head_position, key=key)


async def repair(store: EventStore, *, dry_run: bool = False) -> RepairReport:
    """Renumber the positions of every session whose positions do not follow its
    versions, giving its events its own positions sorted in version order (hashes,
    versions and payloads untouched: see :mod:`eventstore.repair`); with ``dry_run``,
    only report which sessions would change. Running it again changes nothing."""
    return await repair_positions(store, dry_run=dry_run)


# -- removing sessions (eventstore.removal: the only code that deletes events) ------


@dataclass(frozen=True, slots=True)
class RemovedSession:
    """A session that was (or, in a dry run, would be) removed, and its tombstone."""

    session_id: str
    version: int
    head_hash: str
    updated_at: datetime


async def delete_session(store: EventStore, session_id: str) -> RemovedSession:
    """Remove one session: its events and projection rows, leaving a tombstone.

    One of the two code paths that DELETE event rows (with :func:`retention`); the
    tombstone keeps the session's final version and head hash, so the audit still
    passes and tells this removal from a deletion behind the store's back. Refuses a
    session whose log does not pass its audit. NotFoundError if there is no session.
    """
    removed = await purge(store, [session_id])
    if not removed:
        raise NotFoundError(f"no session {session_id!r} in this database")
    return removed[0]


async def purge(
    store: EventStore, session_ids: Sequence[str], *, reason: str = "delete"
) -> list[RemovedSession]:
    """Remove several sessions as :func:`delete_session` does (unknown ids are skipped);
    each in its own short transaction. Returns what was removed."""
    return [_removed(r) for r in await store.remove_streams(session_ids, reason=reason)]


def _removed(stream: RemovedStream | StreamInfo) -> RemovedSession:
    """A removed (or, in a dry run, idle) stream as a :class:`RemovedSession`."""
    return RemovedSession(stream.stream_id, stream.version, stream.head_hash, stream.updated_at)


async def retention(
    store: EventStore,
    older_than: timedelta,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[RemovedSession]:
    """Remove every session idle (no event) for longer than ``older_than``.

    Whole sessions only: their events and projection rows go, a tombstone stays (see
    :func:`delete_session`). This and ``delete_session`` are the only code paths that
    DELETE event rows. With ``dry_run`` nothing changes and the sessions that would go
    are returned. A session written to after it was chosen is kept.
    """
    if older_than < timedelta(0):
        raise InvalidArgumentError("older_than must not be negative")
    cutoff = (now or datetime.now(UTC)) - older_than
    idle = await store.idle_streams(cutoff)
    if dry_run:
        return [_removed(stream) for stream in idle]
    chosen = [stream.stream_id for stream in idle]
    removed = await store.remove_streams(chosen, reason="retention", idle_before=cutoff)
    return [_removed(stream) for stream in removed]
