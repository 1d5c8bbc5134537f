"""Usage analytics recorded by themselves: what AdvancedSQLiteSession adds to branches.

When the SDK's Runner passes ``wrapper=`` to ``add_items``, the usage the run spent
since the session last recorded it is appended as a ``UsageRecorded`` event in the
same append as the items (they commit together or not at all). The event names the
turn the run answers by its anchor, the user message that started it (see
:mod:`projections.usage` for how branches, pops and clears count it, and
``docs/usage.md``). ``store_run_usage(result)`` keeps the SDK's form and records only
what was not recorded automatically.

Each increment's turn is checked under the session's lock, when its UsageRecorded is
appended: a turn whose user message is gone records for the session only; a run that
saved no user message answers the branch's last turn, if any. A run known only from
``store_run_usage`` with no turn to answer records nothing, as the SDK's
``store_run_usage`` skips a branch without turns. The usage projection is kept from a
session's first use of it (AdvancedSQLiteSession asks at construction, the others at
their first call).
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Connection

from eventstore import (
    MAIN_BRANCH,
    BranchError,
    ConvstoreError,
    Event,
    EventStore,
    InvalidArgumentError,
    ItemsAdded,
    UsageRecorded,
    encode_items,
)
from eventstore.registry import register_projector
from projections.history import batch_seqs, describe, item_batches, segment_of
from projections.usage import Figures
from projections.usage_table import USAGE

from ._tracing import instrument
from ._usage_runs import Anchor, Claim, RunUsage, RunUsages
from .base import HISTORY
from .branching import BranchingSession

_details = msgspec.json.Decoder(dict[str, Any])

# Every store of a process that uses these sessions can keep the usage projection of
# a database, whoever opened it (the entry point does the same for installed copies).
register_projector(USAGE, replace=False)


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Requests and tokens over some turns: ``turns`` that have usage, ``recordings``
    made, and the token details summed (``input_tokens_details``, ...)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    turns: int = 0
    recordings: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, figures: Figures) -> UsageTotals:
        t = figures.tokens
        return cls(
            t.requests,
            t.input_tokens,
            t.output_tokens,
            t.total_tokens,
            figures.turns,
            figures.recordings,
            t.details,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "turns": self.turns,
            "recordings": self.recordings,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class TurnUsage:
    """The usage of one turn of a branch (``turn`` as ``get_conversation_turns``
    numbers them)."""

    turn: int
    usage: UsageTotals

    def to_dict(self) -> dict[str, Any]:
        return {"turn": self.turn, **self.usage.to_dict()}


@dataclass(frozen=True, slots=True)
class UsageStats:
    """What ``get_usage_stats()`` and ``usage_report()`` return.

    ``session``: everything the session spent, every branch and removed turn included
    (None if nothing was recorded). ``branch_id`` / ``branch``: one branch's current
    history (its own and inherited turns). ``branches``: the same for every branch.
    ``turns``: per turn of ``branch_id``, those with usage.
    """

    session_id: str
    session: UsageTotals | None
    branch_id: str
    branch: UsageTotals
    branches: Mapping[str, UsageTotals]
    turns: tuple[TurnUsage, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "session": None if self.session is None else self.session.to_dict(),
            "branch_id": self.branch_id,
            "branch": self.branch.to_dict(),
            "branches": {b: u.to_dict() for b, u in self.branches.items()},
            "turns": [t.to_dict() for t in self.turns],
        }


def _parts(
    conn: Connection, session_id: str, branch_id: str
) -> list[tuple[str, int, int, int, int]]:
    """Per segment of a branch: ``(source, lo, hi, first ordinal, turns before)``."""
    segments = HISTORY.segments(conn, session_id, branch_id)
    ranges = HISTORY.turn_ranges(conn, session_id, branch_id)
    parts, before = [], 0
    for (src, lo, hi), (_, first, last) in zip(segments, ranges, strict=True):
        parts.append((src, lo, hi, first, before))
        before += last - first
    return parts


def turn_figures(conn: Connection, session_id: str, branch_id: str) -> list[tuple[int, Figures]]:
    """``(turn number, usage)`` of each turn with usage a branch shows: reads only the
    usage rows, numbered by their owner's ordinals (no scan of the history)."""
    found = []
    for src, lo, hi, first, before in _parts(conn, session_id, branch_id):
        for _seq, ordinal, figures in USAGE.turn_rows(conn, session_id, src, lo, hi):
            found.append((before + ordinal - first, figures))
    return found


def one_turn_figures(
    conn: Connection, session_id: str, branch_id: str, number: int
) -> Figures | None:
    """The usage of turn ``number`` of a branch: the history finds the turn's user
    message by its ordinal (index look-ups), then its usage row is a key look-up."""
    turn = HISTORY.find_turn(conn, session_id, branch_id, number)
    if turn is None:
        return None
    found = segment_of(HISTORY.segments(conn, session_id, branch_id), turn.seq)
    return None if found is None else USAGE.turn_figures(conn, session_id, found[0], turn.seq)


def read_usage(conn: Connection, session_id: str, branch_id: str) -> UsageStats:
    """The usage figures of a session and one of its branches, in one transaction."""
    turns = tuple(
        TurnUsage(n, UsageTotals.of(figures))
        for n, figures in turn_figures(conn, session_id, branch_id)
    )
    names = [
        MAIN_BRANCH,
        *(
            b
            for b, i in HISTORY.read_branches(conn, session_id).items()
            if i.parent is not None and not i.deleted
        ),
    ]
    branches = {b: UsageTotals.of(USAGE.branch_figures(conn, session_id, b)) for b in names}
    spent = USAGE.session_figures(conn, session_id)
    return UsageStats(
        session_id,
        None if spent is None else UsageTotals.of(spent),
        branch_id,
        UsageTotals.of(USAGE.branch_figures(conn, session_id, branch_id)),
        branches,
        turns,
    )


async def usage_report(store: EventStore, session_id: str, branch: str | None = None) -> UsageStats:
    """A session's usage: totals, one branch (default: its current one) and its turns.

    The store is asked to keep the usage projection (a database opened without
    ``create_tables`` must have its tables already). Unknown sessions and branches
    raise InvalidArgumentError / BranchError.
    """
    store.keep([USAGE])
    if await store.stream_info(session_id) is None:
        raise InvalidArgumentError(f"no session {session_id!r} in this database")

    def read(conn: Connection) -> UsageStats:
        target = HISTORY.read_current(conn, session_id) if branch is None else branch
        known = HISTORY.read_branches(conn, session_id).get(target)
        if target != MAIN_BRANCH and (known is None or known.parent is None or known.deleted):
            raise BranchError(f"Branch '{target}' does not exist")
        return read_usage(conn, session_id, target)

    return await store.run(read)


def render_usage(stats: UsageStats) -> str:
    """``usage_report`` as text: one line per turn, then the branch and session."""

    def line(label: str, u: UsageTotals) -> str:
        return (
            f"{label:<24} requests {u.requests:>6}  input {u.input_tokens:>9}  "
            f"output {u.output_tokens:>9}  total {u.total_tokens:>9}"
        )

    lines = [f"session {stats.session_id}, branch {stats.branch_id}"]
    lines += [line(f"turn {t.turn}", t.usage) for t in stats.turns]
    lines.append(line(f"branch {stats.branch_id} ({stats.branch.turns} turns)", stats.branch))
    spent = stats.session or UsageTotals()
    lines.append(line(f"session ({spent.turns} turns)", spent))
    return "\n".join(lines)


def _sdk_tokens(figures: Figures) -> dict[str, Any]:
    """Requests and token counts under the SDK's keys."""
    t = figures.tokens
    return {
        "requests": t.requests,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "total_tokens": t.total_tokens,
    }


def _sdk_turn(figures: Figures) -> dict[str, Any]:
    """One turn's usage in the SDK's shape (``get_turn_usage(n)``)."""
    details = figures.tokens.details
    return {
        **_sdk_tokens(figures),
        "input_tokens_details": details.get("input_tokens_details"),
        "output_tokens_details": details.get("output_tokens_details"),
    }


@instrument  # OpenTelemetry spans, when installed (sessions/_tracing.py)
class UsageSession(BranchingSession):
    """Branches plus usage: recorded from the Runner's ``wrapper``, queried with the
    SDK's methods. A mixin over SQLiteSession and SQLAlchemySession."""

    _usage_runs: RunUsages | None = None

    @property
    def _runs(self) -> RunUsages:
        """The runs seen; the first use also makes the store keep the usage projection."""
        if self._usage_runs is None:
            self._usage_runs = RunUsages()
            self._store.keep([USAGE])
        return self._usage_runs

    # -- recording ---------------------------------------------------------------------

    async def get_items(
        self,
        limit: int | None = None,
        branch_id: str | None = None,
        *,
        turns: int | None = None,
        as_of: int | datetime | None = None,
        wrapper: Any = None,
    ) -> list[Any]:
        await self._flush_usage(skip=self._runs.see(wrapper))
        return await super().get_items(limit, branch_id, turns=turns, as_of=as_of, wrapper=wrapper)

    async def pop_item(self, *, wrapper: Any = None) -> Any | None:
        await self._flush_usage(skip=self._runs.see(wrapper))
        return await super().pop_item(wrapper=wrapper)

    async def clear_session(self, *, wrapper: Any = None) -> None:
        await self._flush_usage(skip=self._runs.see(wrapper))
        await super().clear_session(wrapper=wrapper)

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        """Append ``items``; with the Runner's ``wrapper``, the usage spent since the
        last recording is appended with them, in the same transaction."""
        self._check_open()
        self.added_events = 0
        encoded = encode_items(items)
        branch = await self._branch()
        run = self._runs.see(wrapper)
        if not encoded:
            await self._flush_usage()
            return
        claims = self._runs.claim()
        if not claims:
            first_version = (await self._append_items(branch, encoded)).first_version
        else:
            added = [ItemsAdded(items=batch, branch_id=branch) for batch in item_batches(encoded)]
            try:
                first_version = await self._append_with_usage(added, claims, branch)
            except Exception:
                self._runs.unclaim(claims)
                raise
            self._undelivered.clear()
            self.added_events = len(added)
        if run is None:
            return
        users = [i for i, raw in enumerate(encoded) if describe(bytes(raw)).is_user]
        if users:  # the run's later usage answers its last user message
            run.anchor = (branch, batch_seqs(first_version, item_batches(encoded))[users[-1]])

    async def _append_with_usage(
        self, added: Sequence[Event], claims: list[Claim], branch: str
    ) -> int:
        """Append ``added`` and the usage of ``claims`` together; return the first version."""

        def decide(conn: Connection, version: int) -> tuple[list[Event], list[Anchor | None]]:
            events, anchors = self._usage_events(conn, claims, branch)
            return [*added, *events], anchors

        decided = await self._store.append_decided(
            self.session_id, decide, on_new_stream=self._preamble()
        )
        assert decided is not None
        for (run, _), anchor in zip(claims, decided[1], strict=True):
            if run.anchor is None:
                run.anchor = anchor
        return decided[0].first_version

    def _usage_events(
        self, conn: Connection, claims: list[Claim], branch: str
    ) -> tuple[list[Event], list[Anchor | None]]:
        """One UsageRecorded per increment, and its turn's anchor (see the module docstring)."""
        events: list[Event] = []
        anchors: list[Anchor | None] = []
        for run, tokens in claims:
            anchor = run.anchor if run.anchor is not None else self._last_turn(conn, branch)
            ordinal = None if anchor is None else self._ordinal(conn, anchor)
            if ordinal is None:
                anchor = None
            anchors.append(anchor)
            if anchor is None and run.needs_turn:
                self._logger.debug(
                    "session %r has no turn on %r: run usage not stored", self.session_id, branch
                )
                continue
            events.append(
                UsageRecorded(
                    branch_id=branch,
                    turn=ordinal or 0,
                    requests=tokens.requests,
                    input_tokens=tokens.input_tokens,
                    output_tokens=tokens.output_tokens,
                    total_tokens=tokens.total_tokens,
                    details=tokens.details,
                    anchor_branch=None if anchor is None else anchor[0],
                    anchor_seq=0 if anchor is None else anchor[1],
                )
            )
        return events, anchors

    def _ordinal(self, conn: Connection, anchor: Anchor) -> int | None:
        """The owner's user-turn ordinal of the anchor, if that user message is stored."""
        return HISTORY.read_user_turn(conn, self.session_id, anchor[0], anchor[1])

    def _last_turn(self, conn: Connection, branch: str) -> Anchor | None:
        """The anchor of the branch's last user turn, or None if it has none."""
        count = HISTORY.turn_count(conn, self.session_id, branch)
        turn = HISTORY.find_turn(conn, self.session_id, branch, count) if count else None
        return None if turn is None else self._anchor_of(conn, branch, turn.seq)

    def _anchor_of(self, conn: Connection, branch: str, seq: int) -> Anchor | None:
        """The anchor (owner branch, seq) of the item ``seq`` the branch shows, if any."""
        found = segment_of(HISTORY.segments(conn, self.session_id, branch), seq)
        return None if found is None else (found[0], seq)

    async def _flush_usage(self, *, skip: RunUsage | None = None) -> None:
        """Record every unrecorded increment but ``skip``'s (ended or other runs)."""
        if not self._runs.pending(skip=skip):
            return
        self._check_open()
        await self._write_usage(await self._branch(), skip)

    async def _write_usage(self, branch: str | None, skip: RunUsage | None) -> None:
        """Append the unrecorded increments (``branch``: the current one, if known)."""
        claims = self._runs.claim(skip=skip)
        if not claims:
            return
        sid = self.session_id

        def decide(conn: Connection, version: int) -> tuple[list[Event], list[Anchor | None]]:
            return self._usage_events(conn, claims, branch or HISTORY.read_current(conn, sid))

        try:
            decided = await self._store.append_decided(sid, decide, on_new_stream=self._preamble())
        except Exception:
            self._runs.unclaim(claims)
            raise
        if decided is None:  # every increment was skipped: nothing to write
            return
        for (run, _), anchor in zip(claims, decided[1], strict=True):
            if run.anchor is None:
                run.anchor = anchor

    async def store_run_usage(self, result: Any) -> None:
        """Record a run's usage (the SDK's form), for the current branch's last turn if
        the run saved no user message through this session (nothing if that branch has
        no turn). A run this session has recorded automatically adds nothing; anything
        with a ``context_wrapper`` (a RunResult, a streamed result, an exception's
        ``run_data``) is accepted.

        As with the SDK, a failure to record (a closed session, a database error) does
        not break the caller's flow: it is logged as a warning on ``convstore.usage``,
        and the next operation of this session records the usage if it can.
        """
        wrapper = getattr(result, "context_wrapper", None)
        if getattr(wrapper, "usage", None) is None:
            raise InvalidArgumentError(
                "store_run_usage needs a run result (something with context_wrapper.usage), "
                f"not {type(result).__name__}"
            )
        try:
            self._check_open()
            self._runs.see(wrapper, from_zero=True)
            await self._flush_usage()
        except ConvstoreError as error:
            self._logger.warning("usage of session %r not stored: %s", self.session_id, error)

    def _release(self) -> Coroutine[Any, Any, None] | None:
        """At close: first record what runs left unrecorded, then let go of the store."""
        release = super()._release
        if self._usage_runs is None or not self._usage_runs.pending():
            return release()
        branch = self._branch_id if self._current_loaded else None

        async def record_then_release() -> None:
            try:
                await self._write_usage(branch, None)
            except ConvstoreError as error:
                self._logger.warning(
                    "usage of session %r not recorded at close: %s", self.session_id, error
                )
            finally:
                rest = release()
                if rest is not None:
                    await rest

        return record_then_release()

    # -- the SDK's queries -------------------------------------------------------------

    async def _query(self, fn: Any, *, quick: bool = False) -> Any:
        """Run the read ``fn`` once the unrecorded usage is recorded."""
        await self._flush_usage()
        return await self._store.run(fn, quick=quick)

    async def get_session_usage(self, branch_id: str | None = None) -> dict[str, int] | None:
        """Usage of the whole session (``branch_id`` None: everything spent, removed
        turns included) or of one branch's current history; None if there is none.
        Keys as the SDK's: requests, input/output/total_tokens, total_turns."""
        self._check_open()
        if branch_id:
            branch = await self._resolve(branch_id)
            found: Figures | None = await self._query(
                lambda conn: USAGE.branch_figures(conn, self.session_id, branch), quick=True
            )
        else:
            found = await self._query(
                lambda conn: USAGE.session_figures(conn, self.session_id), quick=True
            )
        if found is None or not found.recordings:
            return None
        return {**_sdk_tokens(found), "total_turns": found.turns}

    async def get_turn_usage(
        self, user_turn_number: int | None = None, branch_id: str | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """One turn's usage (``{}`` if it has none), or every turn's that has usage, as
        the SDK returns them (with ``input_tokens_details`` / ``output_tokens_details``)."""
        self._check_open()
        branch = await self._resolve(branch_id)
        sid = self.session_id
        if user_turn_number is not None:

            def one(conn: Connection) -> dict[str, Any]:
                found = one_turn_figures(conn, sid, branch, user_turn_number)
                return {} if found is None else _sdk_turn(found)

            result: dict[str, Any] = await self._query(one, quick=True)
            return result

        def every(conn: Connection) -> list[dict[str, Any]]:
            found = []
            decode = _details.decode
            for src, lo, hi, first, before in _parts(conn, sid, branch):
                for n, r, i, o, t, d in USAGE.turn_rows_raw(conn, sid, src, lo, hi):
                    details = decode(bytes(d))
                    found.append(
                        {
                            "user_turn_number": before + n - first,
                            "requests": r,
                            "input_tokens": i,
                            "output_tokens": o,
                            "total_tokens": t,
                            "input_tokens_details": details.get("input_tokens_details"),
                            "output_tokens_details": details.get("output_tokens_details"),
                        }
                    )
            return found

        rows: list[dict[str, Any]] = await self._query(every)
        return rows

    async def get_usage_stats(self) -> UsageStats:
        """Totals of the session, of every branch and of each turn of the current one."""
        self._check_open()
        branch = await self._branch()
        sid = self.session_id
        stats: UsageStats = await self._query(lambda conn: read_usage(conn, sid, branch))
        return stats
