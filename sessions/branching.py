"""Branches, turns and time travel: what AdvancedSQLiteSession adds, on any backend.

Every operation is an event: creating a branch is one BranchCreated pointing at
(parent, fork point) plus a BranchSwitched, appended together; nothing is copied (see
projections/history.py). Each decision that depends on the current state (does the
turn exist, is the name free) is taken inside the append transaction, under the
session's lock, so two processes cannot both create "retry" or branch from a turn
that a concurrent pop just removed.

The current branch. A session object reads the durable current branch from the
projection once, then checks at each call that a branch other than main still exists:
once it is deleted (by ``delete_branch`` or ``clear_session``, through any session
object), the object is on main again, as the SDK's session is after another one
cleared. A write that changes the current branch and whose caller is cancelled after it
committed first moves the object to the branch the log now has as current, then lets
the cancellation go on. Branch names follow the rules of session ids
(``eventstore.store.check_stream_id``) and must not be blank (the SDK's words).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import string
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from eventstore import (
    MAIN_BRANCH,
    BranchCreated,
    BranchDeleted,
    BranchError,
    BranchSwitched,
    CancelledAfterCommit,
    Event,
    InvalidArgumentError,
    SessionCleared,
    TurnNotFoundError,
    check_stream_id,
    decode_item,
    is_integer,
)
from eventstore.records import to_datetime, to_micros
from projections import BranchInfo, fold
from projections.history import SEQ_SHIFT, TOOL_CALL_KINDS, HistoryState
from projections.history_table import Turn, decode_entry

from ._settings import resolve_limit
from ._tracing import instrument
from .base import HISTORY, StoreSession

PREVIEW_LENGTH = 100


@dataclass(frozen=True, slots=True)
class BranchNode:
    """One branch of a session's tree (what ``get_branch_tree`` returns)."""

    branch_id: str
    parent_branch_id: str | None  # None for main
    fork_seq: int | None  # the parent's last shared item key (see projections.history)
    fork_version: int | None  # the stream version of that item's event
    created_version: int  # stream version of the BranchCreated event (0 for main)
    created_at: datetime | None
    is_current: bool
    user_turns: int


def content_preview(content: Any, max_length: int | None = None) -> str:
    """A user message's content as text (parts joined as JSON), cut at ``max_length``."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if max_length is not None and len(text) > max_length:
        return text[:max_length] + "..."
    return text


# Case-insensitive for ASCII letters only, as the SDK's search (SQLite LIKE) is: "CAFÉ"
# does not contain "é" there, so it does not here either.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def text_matcher(search_term: str) -> Callable[[str], bool]:
    """A test of whether a text contains ``search_term``, ignoring the case of ASCII
    letters (not of other letters), as the SDK's ``find_turns_by_content`` does."""
    if not isinstance(search_term, str):
        raise InvalidArgumentError(f"search_term must be a string, not {search_term!r}")
    needle = search_term.translate(_ASCII_LOWER)
    return lambda text: needle in text.translate(_ASCII_LOWER)


def content_texts(content: Any) -> list[str]:
    """The text a user message says: its string, or the ``text`` of each part."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
    return []


@functools.lru_cache(maxsize=1024)
def _timestamp(seconds: int) -> str:
    """A time as the SDK's AdvancedSQLiteSession shows it (UTC, to the second)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def turn_summary(turn: Turn, item: Any) -> dict[str, Any]:
    """A user turn as ``get_conversation_turns`` returns it, from its decoded message."""
    content = item.get("content", "") if isinstance(item, dict) else ""
    return {
        "turn": turn.number,
        "content": content_preview(content, PREVIEW_LENGTH),
        "full_content": content,
        "timestamp": _timestamp(turn.recorded_at // 1_000_000),
        "can_branch": True,
    }


def conversation_turns(turns: Iterable[tuple[Turn, Any]]) -> list[dict[str, Any]]:
    """Each ``(turn, decoded message)`` as ``get_conversation_turns`` returns it."""
    return [turn_summary(turn, item) for turn, item in turns]


def turns_containing(
    turns: Iterable[tuple[Turn, Any]], matches: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """The turns whose message says a text that ``matches`` (see ``text_matcher``)."""
    found = []
    for turn, item in turns:
        content = item.get("content", "") if isinstance(item, dict) else ""
        if any(matches(text) for text in content_texts(content)):
            found.append(turn_summary(turn, item))
    return found


def _check_name(branch_name: str | None) -> None:
    """BranchError unless ``branch_name`` is None or a valid, non-blank branch name."""
    if branch_name is None:
        return
    if not isinstance(branch_name, str):
        raise BranchError(f"a branch name must be a string, not {type(branch_name).__name__}")
    if not branch_name.strip():
        raise BranchError("Branch name cannot be empty")
    check_stream_id(branch_name, what="a branch name", error=BranchError)


def _check_turn(turn_number: object) -> int:
    """``turn_number`` if it is an integer >= 1, else TurnNotFoundError."""
    if not is_integer(turn_number) or turn_number < 1:
        raise TurnNotFoundError(f"a turn number is an integer >= 1, not {turn_number!r}")
    return turn_number


@instrument  # OpenTelemetry spans, when installed (sessions/_tracing.py)
class BranchingSession(StoreSession):
    """A session with branches: a mixin over SQLiteSession and SQLAlchemySession.

    The current branch is durable (BranchSwitched is an event): a new session object
    starts on the branch the session was last switched to; a session object stays on
    its branch until it switches, or until that branch is deleted (``delete_branch``,
    ``clear_session``, through any object), which puts it back on main.
    """

    _current_loaded: bool = False

    async def _branch(self, *, verify: bool = True) -> str:
        """The current branch: read once, then (``verify``) checked to still exist."""
        if not self._current_loaded:
            self._check_open()
            self._branch_id = await self._store.run(
                lambda conn: HISTORY.read_current(conn, self.session_id), quick=True
            )
            self._current_loaded = True
        elif verify and self._branch_id != MAIN_BRANCH:
            self._check_open()
            branch = self._branch_id
            if not await self._store.run(lambda conn: self._exists(conn, branch), quick=True):
                self._branch_id = MAIN_BRANCH
        return self._branch_id

    async def current_branch(self) -> str:
        """The current branch, as the log says (read once, then checked at each call)."""
        return await self._branch()

    async def _resolve(self, branch_id: str | None) -> str:
        """``branch_id`` (checked), or the current branch when it is None."""
        if branch_id is None:
            return await self._branch()
        return check_stream_id(branch_id, what="a branch id", error=BranchError)

    # -- the Session protocol, on the current branch ---------------------------------

    async def get_items(
        self,
        limit: int | None = None,
        branch_id: str | None = None,
        *,
        turns: int | None = None,
        as_of: int | datetime | None = None,
        wrapper: Any = None,
    ) -> list[Any]:
        """Items of the current branch (or ``branch_id``), oldest first.

        ``limit`` keeps the newest items, ``turns`` the last whole turns, and
        ``as_of`` shows the branch as it was at that stream version (inclusive, as
        ``convstore DB log`` numbers them) or time, folded from the log.
        """
        self._check_open()
        n = resolve_limit(limit, self.session_settings)
        if branch_id is None and as_of is None:
            # The hot path: a deleted branch reads as empty, so the current branch is
            # checked only when the read finds nothing (no look-up for every read).
            branch = await self._branch(verify=False)
            found = await self._read(branch, n, turns)
            if found or branch == MAIN_BRANCH or await self._branch() == branch:
                return found
            return await self._read(MAIN_BRANCH, n, turns)
        branch = await self._resolve(branch_id)
        if as_of is None:
            return await self._read(branch, n, turns)
        state = await self.state_as_of(as_of)
        if not state.exists(branch):
            raise BranchError(f"Branch '{branch}' does not exist at that point")
        items = [decode_item(row) for row in state.items(branch)]
        return items if n is None else items[max(0, len(items) - n) :] if n else []

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        await self._branch()
        await super().add_items(items, wrapper=wrapper)

    async def pop_item(self, *, wrapper: Any = None) -> Any | None:
        await self._branch()
        return await super().pop_item(wrapper=wrapper)

    async def clear_session(self, *, wrapper: Any = None) -> None:
        """Empty the session and delete every branch but main, which becomes current
        (as the SDK does). The log keeps everything; the branches' ids stay used."""
        self._check_open()
        sid = self.session_id

        def decide(conn: Connection, version: int) -> tuple[list[Event], None]:
            # Decided under the session's lock: a branch created concurrently is
            # either deleted here or created after the clear.
            branches = HISTORY.read_branches(conn, sid)
            live = [
                b for b, info in branches.items() if info.parent is not None and not info.deleted
            ]
            # Deleting the durable current branch makes main current (the projection).
            return [SessionCleared(), *(BranchDeleted(branch_id=b) for b in live)], None

        try:
            with self._following(lambda _: MAIN_BRANCH):
                await self._store.append_decided(sid, decide, on_new_stream=self._preamble())
        finally:
            self._mutated()  # a later add of the same items is not a cancelled add's retry
        self._branch_id = MAIN_BRANCH
        self._current_loaded = True

    @contextlib.contextmanager
    def _following(self, current: Callable[[Any], str | None]) -> Iterator[None]:
        """Around a write that changes the current branch to ``current(result)``."""
        try:
            yield
        except CancelledAfterCommit as committed:
            branch = current(committed.result)
            if branch is not None:
                self._branch_id = branch
                self._current_loaded = True
            raise

    # -- time travel -------------------------------------------------------------------

    async def state_as_of(self, as_of: int | datetime) -> HistoryState:
        """The session's history state at a stream version or time, from the log."""
        self._check_open()
        if isinstance(as_of, datetime):
            if as_of.tzinfo is None:
                raise InvalidArgumentError(
                    f"as_of needs a timezone, not the naive {as_of!r}: pass an aware "
                    "datetime, e.g. datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc)"
                )
            moment = to_micros(as_of)
            events = [
                e
                for e in await self._store.read_stream(self.session_id)
                if to_micros(e.recorded_at) <= moment
            ]
            return fold(events)
        if not is_integer(as_of) or as_of < 0:
            raise InvalidArgumentError(
                f"as_of is a stream version >= 0 or an aware datetime, not {as_of!r}"
            )
        info = await self._store.stream_info(self.session_id)
        if as_of > (info.version if info else 0):
            raise InvalidArgumentError(
                f"session {self.session_id!r} has no version {as_of} "
                f"(it is at {info.version if info else 0})"
            )
        return fold(await self._store.read_stream(self.session_id, upto=as_of))

    # -- branches ----------------------------------------------------------------------

    async def create_branch_from_turn(
        self, turn_number: int, branch_name: str | None = None
    ) -> str:
        """A new branch holding the turns before ``turn_number``, made current.

        Raises TurnNotFoundError for a turn the current branch does not have, and
        BranchError for a blank or already used name (deleted branches' names too).
        """
        _check_name(branch_name)
        turn = _check_turn(turn_number)
        parent = await self._branch()

        def fork_point(conn: Connection) -> tuple[int, str]:
            found = HISTORY.find_turn(conn, self.session_id, parent, turn)
            if found is None:
                raise TurnNotFoundError(
                    f"Turn {turn} does not contain a user message in branch '{parent}'"
                )
            return found.seq - 1, f"branch_from_turn_{turn}_{int(time.time())}"

        return await self._create_branch(parent, fork_point, branch_name)

    async def create_branch_from_item(self, index: int, branch_name: str | None = None) -> str:
        """A new branch holding the current branch's items up to and including item
        ``index`` (0-based; negative counts from the end, -1 being the newest), made
        current. Branches from any item, not only user turns."""
        _check_name(branch_name)
        if not is_integer(index):
            raise TurnNotFoundError(f"an item index is an integer, not {index!r}")
        parent = await self._branch()

        def fork_point(conn: Connection) -> tuple[int, str]:
            if index < 0:
                found = HISTORY.read_entries(conn, self.session_id, parent, -index)
                ok = len(found) == -index
                seq = found[0][0] if ok else 0
            else:
                found = HISTORY.read_entries(conn, self.session_id, parent, None)
                ok = index < len(found)
                seq = found[index][0] if ok else 0
            if not ok:
                raise TurnNotFoundError(f"branch '{parent}' has no item {index}")
            return seq, f"branch_from_item_{index}_{int(time.time())}"

        return await self._create_branch(parent, fork_point, branch_name)

    async def create_branch_from_content(
        self, search_term: str, branch_name: str | None = None
    ) -> str:
        """A new branch from the first user turn whose text contains ``search_term``."""
        _check_name(branch_name)
        matches = await self.find_turns_by_content(search_term)
        if not matches:
            raise TurnNotFoundError(f"No user turns found containing '{search_term}'")
        return await self.create_branch_from_turn(matches[0]["turn"], branch_name)

    async def _create_branch(
        self,
        parent: str,
        fork_point: Any,
        branch_name: str | None,
    ) -> str:
        """Append a branch of ``parent`` at ``fork_point(conn)``, and switch to it."""
        self._check_open()

        def decide(conn: Connection, version: int) -> tuple[list[Event], str]:
            fork_seq, default_name = fork_point(conn)
            used = HISTORY.read_branches(conn, self.session_id)
            if branch_name is not None:
                if branch_name == MAIN_BRANCH or branch_name in used:
                    raise BranchError(
                        f"Branch ID '{branch_name}' has already been used. Choose a new branch ID."
                    )
                name = branch_name
            else:
                name = next(
                    candidate
                    for candidate in itertools.chain(
                        [default_name], (f"{default_name}_{n}" for n in itertools.count(2))
                    )
                    if candidate not in used
                )
            created = BranchCreated(
                branch_id=name, parent_branch_id=parent, fork_seq=fork_seq, name=branch_name
            )
            return [created, BranchSwitched(branch_id=name)], name

        with self._following(lambda result: result[1] if isinstance(result, tuple) else None):
            decided = await self._store.append_decided(
                self.session_id, decide, on_new_stream=self._preamble()
            )
        assert decided is not None  # decide always appends
        self._branch_id = decided[1]
        self._current_loaded = True
        self._logger.info(
            "session %r: created branch %r from %r and switched to it",
            self.session_id,
            decided[1],
            parent,
        )
        return decided[1]

    async def switch_to_branch(self, branch_id: str) -> None:
        """Make ``branch_id`` current (durably). BranchError if it does not exist."""
        self._check_open()
        if branch_id is None:  # not "the current branch": the SDK finds no branch None
            raise BranchError(
                "switch_to_branch needs the id of the branch to switch to, not None "
                "(list_branches() shows them; 'main' is the first)"
            )
        target = await self._resolve(branch_id)

        def decide(conn: Connection, version: int) -> tuple[list[Event], None]:
            if not self._exists(conn, target):
                raise BranchError(f"Branch '{target}' does not exist")
            return [BranchSwitched(branch_id=target)], None

        with self._following(lambda _: target):
            await self._store.append_decided(
                self.session_id, decide, on_new_stream=self._preamble()
            )
        old = self._branch_id
        self._branch_id = target
        self._current_loaded = True
        self._logger.info("session %r: switched from branch %r to %r", self.session_id, old, target)

    def _exists(self, conn: Connection, branch_id: str) -> bool:
        """Whether ``branch_id`` is main or a branch that was created and not deleted."""
        if branch_id == MAIN_BRANCH:
            return True
        info = HISTORY.read_info(conn, self.session_id, branch_id)
        return info is not None and info.parent is not None and not info.deleted

    async def delete_branch(self, branch_id: str, force: bool = False) -> None:
        """Remove a branch from the tree (its events stay in the log; its id stays used).

        Never main; the current branch only with ``force``, which switches to main.
        Branches forked from it keep everything they share with it.
        """
        if not isinstance(branch_id, str) or not branch_id.strip():
            raise BranchError("Branch ID cannot be empty")
        check_stream_id(branch_id, what="a branch id", error=BranchError)
        if branch_id == MAIN_BRANCH:
            raise BranchError("Cannot delete the 'main' branch")
        current = await self._branch()
        if branch_id == current and not force:
            raise BranchError(
                f"Cannot delete current branch '{branch_id}'. "
                "Use force=True or switch branches first"
            )

        def decide(conn: Connection, version: int) -> tuple[list[Event], None]:
            if not self._exists(conn, branch_id):
                raise BranchError(f"Branch '{branch_id}' does not exist")
            events: list[Event] = []
            if branch_id == current:
                events.append(BranchSwitched(branch_id=MAIN_BRANCH))
            events.append(BranchDeleted(branch_id=branch_id))
            return events, None

        with self._following(lambda _: MAIN_BRANCH if branch_id == current else None):
            await self._store.append_decided(
                self.session_id, decide, on_new_stream=self._preamble()
            )
        if branch_id == current:
            self._branch_id = MAIN_BRANCH
        self._logger.info("session %r: deleted branch %r", self.session_id, branch_id)

    async def list_branches(self) -> list[dict[str, Any]]:
        """Every branch: ``branch_id``, ``message_count``, ``user_turns``,
        ``is_current`` and ``created_at``, as the SDK returns them (main first)."""
        current = await self._branch()
        nodes = await self._tree()
        found = []
        for node, count in nodes:
            found.append(
                {
                    "branch_id": node.branch_id,
                    "message_count": count,
                    "user_turns": node.user_turns,
                    "is_current": node.branch_id == current,
                    "created_at": (
                        f"{node.created_at:%Y-%m-%d %H:%M:%S}" if node.created_at else None
                    ),
                }
            )
        return found

    async def get_branch_tree(self) -> list[BranchNode]:
        """Every branch with its parent and fork point, main first, then by creation."""
        return [node for node, _ in await self._tree()]

    async def _tree(self) -> list[tuple[BranchNode, int]]:
        """Every live branch with its item count, main first, then by creation."""
        self._check_open()
        current = await self._branch()
        sid = self.session_id

        def read(conn: Connection) -> list[tuple[BranchNode, int]]:
            infos = HISTORY.read_branches(conn, sid)
            created = sorted(
                (
                    (b, info)
                    for b, info in infos.items()
                    if b != MAIN_BRANCH and info.parent is not None and not info.deleted
                ),
                key=lambda pair: (pair[1].created_version, pair[0]),
            )
            out = [(self._node(MAIN_BRANCH, infos.get(MAIN_BRANCH), current, conn), 0)]
            out += [(self._node(b, info, current, conn), 0) for b, info in created]
            return [(node, HISTORY.count_items(conn, sid, node.branch_id)) for node, _ in out]

        nodes = await self._store.run(read)
        info = await self._store.stream_info(sid)
        main, count = nodes[0]
        started = info.created_at if info is not None else None
        nodes[0] = (
            BranchNode(
                main.branch_id,
                None,
                None,
                None,
                0,
                started,
                main.is_current,
                main.user_turns,
            ),
            count,
        )
        return nodes

    def _node(
        self, branch_id: str, info: BranchInfo | None, current: str, conn: Connection
    ) -> BranchNode:
        """The tree node of a branch, from its projection row (``info``)."""
        info = info or BranchInfo()
        return BranchNode(
            branch_id=branch_id,
            parent_branch_id=info.parent,
            fork_seq=info.fork_seq,
            fork_version=None if info.fork_seq is None else info.fork_seq >> SEQ_SHIFT,
            created_version=info.created_version,
            created_at=to_datetime(info.created_at) if info.parent is not None else None,
            is_current=branch_id == current,
            user_turns=HISTORY.turn_count(conn, self.session_id, branch_id),
        )

    # -- turns -------------------------------------------------------------------------

    async def stored_turns(self, branch_id: str | None = None) -> list[Turn]:
        """Each user turn of a branch (default: the current one) with its message as
        stored, undecoded: what a session that wraps this one and stores its items in
        another form (EncryptedSession) reads turns from."""
        branch = await self._resolve(branch_id)
        return await self._store.run(lambda conn: HISTORY.read_turns(conn, self.session_id, branch))

    async def _decoded_turns(self, branch_id: str | None) -> list[tuple[Turn, Any]]:
        """Each user turn of a branch, with its message decoded."""
        branch = await self._resolve(branch_id)
        sid = self.session_id
        turns = await self.stored_turns(branch)
        return [(turn, decode_entry(sid, branch, turn.seq, turn.item)) for turn in turns]

    async def get_conversation_turns(self, branch_id: str | None = None) -> list[dict[str, Any]]:
        """Each user turn: ``turn``, ``content`` (a preview), ``full_content``,
        ``timestamp`` and ``can_branch``, as the SDK returns them."""
        return conversation_turns(await self._decoded_turns(branch_id))

    async def find_turns_by_content(
        self, search_term: str, branch_id: str | None = None
    ) -> list[dict[str, Any]]:
        """User turns whose text contains ``search_term``, ignoring the case of ASCII
        letters (as the SDK does): the text of the message (its string, or its parts'
        text), never the JSON around it."""
        matches = text_matcher(search_term)
        return turns_containing(await self._decoded_turns(branch_id), matches)

    async def get_conversation_by_turns(
        self, branch_id: str | None = None
    ) -> dict[int, list[dict[str, str | None]]]:
        """The branch's items grouped by turn (items before the first user message are
        turn 0): ``{turn: [{"type": ..., "tool_name": ...}, ...]}``."""
        rows = await self._view(branch_id)
        turns: dict[int, list[dict[str, str | None]]] = {}
        number = 0
        for row in rows:
            if row.kind == "user":
                number += 1
            turns.setdefault(number, []).append({"type": row.kind, "tool_name": row.tool_name})
        return turns

    async def get_tool_usage(self, branch_id: str | None = None) -> list[tuple[str, int, int]]:
        """``(tool name, calls, turn)`` for each tool used in each turn, by turn."""
        rows = await self._view(branch_id)
        counts: dict[tuple[int, str], int] = {}
        searched: set[tuple[int, str]] = set()
        number = 0
        outputs: list[tuple[int, str]] = []
        for row in rows:
            if row.kind == "user":
                number += 1
            if row.kind in TOOL_CALL_KINDS and row.tool_name:
                counts[(number, row.tool_name)] = counts.get((number, row.tool_name), 0) + 1
                if row.kind == "tool_search_call":
                    searched.add((number, row.tool_name))
            elif row.kind == "tool_search_output" and row.tool_name:
                outputs.append((number, row.tool_name))
        for key in outputs:  # an output whose call is not in the history counts once
            if key not in searched:
                counts[key] = counts.get(key, 0) + 1
        return [(tool, n, turn) for (turn, tool), n in sorted(counts.items())]

    async def _view(self, branch_id: str | None) -> Sequence[Any]:
        """The kind and tool name of each item of a branch, oldest first."""
        branch = await self._resolve(branch_id)
        return await self._store.run(lambda conn: HISTORY.read_view(conn, self.session_id, branch))
