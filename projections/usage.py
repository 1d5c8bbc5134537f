"""The usage projection: model usage per turn, per branch and per session.

Each ``UsageRecorded`` event is an increment spent answering one turn, named by its
*anchor*: the user message that starts the turn, as ``(owner branch, seq)`` of that
item (see :mod:`projections.history`). The rules:

* **The session's totals** count every recording, forever: usage is spent even if the
  turn is later popped, cleared, expired or its branch deleted.
* **A branch's figures** count the recordings whose anchor the branch's history still
  shows: its own turns and the turns it inherits (each counted once for the session,
  whatever the number of branches sharing it). A turn leaves a branch's figures when
  its user message leaves the branch's history.

So that a branch's figures cost the same at 10 and at 10,000 turns, the usage of each
owner branch is kept in anchor order with running totals (``cum_*``): what a segment
``(src, lo, hi]`` of a branch shows is the running total at ``hi`` minus the one at
``lo``, two index look-ups. Items are only ever deleted from the newest end of an
owner (history.py), so deleting their usage rows never changes an earlier running
total. The projection follows the branch structure itself (segments and how far each
owner is shared), with the history's own segment functions, so it is rebuilt from the
log alone: a pop that deletes a turn's user message deletes that turn's usage row,
and a pop of a shared item only narrows the popping branch's segments.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from eventstore import (
    MAIN_BRANCH,
    BranchCreated,
    BranchDeleted,
    HistoryCompacted,
    ItemPopped,
    ItemsExpired,
    RecordedEvent,
    SessionCleared,
    UsageRecorded,
    is_integer,
)

from .history import (
    OPEN,
    Segment,
    cleared_segments,
    compacted_segments,
    expire_segments,
    fork_segments,
    segment_of,
    split_segments,
)


def add_details(a: Mapping[str, Any], b: Mapping[str, Any], sign: int = 1) -> dict[str, Any]:
    """``a + sign * b`` on the integer leaves of two nested detail dicts."""
    out: dict[str, Any] = dict(a)
    for key, value in b.items():
        mine = out.get(key)
        if isinstance(value, Mapping):
            out[key] = add_details(mine if isinstance(mine, Mapping) else {}, value, sign)
        elif is_integer(value):
            base = mine if is_integer(mine) else 0
            out[key] = base + sign * value
    return out


def details_zero(details: Mapping[str, Any]) -> bool:
    return all(
        details_zero(v) if isinstance(v, Mapping) else not v or isinstance(v, bool)
        for v in details.values()
    )


@dataclass(frozen=True, slots=True)
class Tokens:
    """Requests and tokens (with their details), as the SDK's ``Usage`` counts them."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def plus(self, other: Tokens, sign: int = 1) -> Tokens:
        return Tokens(
            self.requests + sign * other.requests,
            self.input_tokens + sign * other.input_tokens,
            self.output_tokens + sign * other.output_tokens,
            self.total_tokens + sign * other.total_tokens,
            add_details(self.details, other.details, sign),
        )

    def minus(self, other: Tokens) -> Tokens:
        return self.plus(other, -1)

    @property
    def is_zero(self) -> bool:
        return not (
            self.requests or self.input_tokens or self.output_tokens or self.total_tokens
        ) and details_zero(self.details)

    @property
    def is_negative(self) -> bool:
        counts = (self.requests, self.input_tokens, self.output_tokens, self.total_tokens)
        return any(n < 0 for n in counts) or _any_negative(self.details)

    @classmethod
    def of_event(cls, event: UsageRecorded) -> Tokens:
        return cls(
            event.requests,
            event.input_tokens,
            event.output_tokens,
            event.total_tokens,
            add_details({}, event.details),
        )


def _any_negative(details: Mapping[str, Any]) -> bool:
    return any(
        _any_negative(v) if isinstance(v, Mapping) else isinstance(v, int) and v < 0
        for v in details.values()
    )


@dataclass(frozen=True, slots=True)
class Figures:
    """Usage over some turns: ``turns`` with usage, ``recordings`` made, and tokens."""

    turns: int = 0
    recordings: int = 0
    tokens: Tokens = field(default_factory=Tokens)

    def plus(self, other: Figures, sign: int = 1) -> Figures:
        return Figures(
            self.turns + sign * other.turns,
            self.recordings + sign * other.recordings,
            self.tokens.plus(other.tokens, sign),
        )


@dataclass(frozen=True, slots=True)
class BranchShape:
    """What the projection keeps of a branch: its segments and how far it is shared."""

    pinned: int = 0
    segments: tuple[Segment, ...] | None = None  # None: all of its own items

    def shown(self, branch_id: str) -> tuple[Segment, ...]:
        return ((branch_id, 0, OPEN),) if self.segments is None else self.segments


class _Ops(Protocol):
    """Where the rules keep their state: a dict (the pure fold) or the tables."""

    def shape(self, sid: str, bid: str) -> BranchShape: ...
    def save_shape(self, sid: str, bid: str, shape: BranchShape) -> None: ...
    def has_shape(self, sid: str, bid: str) -> bool: ...
    def known_branches(self, sid: str) -> set[str]: ...
    def drop_above(self, sid: str, owner: str, above: int) -> None: ...
    def record(
        self, sid: str, owner: str | None, seq: int, ordinal: int, tokens: Tokens
    ) -> None: ...


def apply_event(ops: _Ops, recorded: RecordedEvent) -> None:
    """One event's effect on usage (the one implementation of the rules)."""
    sid, version, event = recorded.stream_id, recorded.version, recorded.event
    match event:
        case UsageRecorded(anchor_branch=owner, anchor_seq=seq, turn=ordinal):
            ops.record(sid, owner, seq, ordinal, Tokens.of_event(event))
        case ItemPopped(seq=seq, branch_id=b):
            shape = ops.shape(sid, b)
            segments = shape.shown(b)
            found = segment_of(segments, seq)
            if found is None:
                return
            if found[0] == b and seq > shape.pinned:
                ops.drop_above(sid, b, seq - 1)  # the item (b's newest) is deleted
                return
            # Shared: the branch stops showing it. (The history splits at the item
            # before it; for sums, ``seq - 1`` bounds the same items.)
            ops.save_shape(sid, b, replace(shape, segments=split_segments(segments, seq, seq - 1)))
        case SessionCleared(branch_id=None):
            for b in ops.known_branches(sid) | {MAIN_BRANCH}:
                _clear(ops, sid, b, version)
        case SessionCleared(branch_id=str(b)):
            _clear(ops, sid, b, version)
        case HistoryCompacted(branch_id=b, keep_upto=keep):
            # The turns it replaced leave the branch's figures (the session keeps them).
            shape = ops.shape(sid, b)
            ops.drop_above(sid, b, max(shape.pinned, keep))
            if keep or ops.has_shape(sid, b):
                segments = compacted_segments(shape.shown(b), keep, b, version)
                ops.save_shape(sid, b, replace(shape, segments=segments))
        case ItemsExpired(upto_seq=upto, branch_id=b):
            shape = ops.shape(sid, b)
            ops.save_shape(sid, b, replace(shape, segments=expire_segments(shape.shown(b), upto)))
        case BranchCreated(branch_id=c, parent_branch_id=p, fork_seq=fork):
            segments = fork_segments(ops.shape(sid, p).shown(p), fork, c, version)
            for src, _lo, hi in segments[:-1]:
                held = ops.shape(sid, src)
                if hi > held.pinned:
                    ops.save_shape(sid, src, replace(held, pinned=hi))
            ops.save_shape(sid, c, replace(ops.shape(sid, c), segments=segments))
        case BranchDeleted(branch_id=b):
            shape = ops.shape(sid, b)
            ops.drop_above(sid, b, shape.pinned)
            ops.save_shape(sid, b, replace(shape, segments=()))
        case _:
            pass


def _clear(ops: _Ops, sid: str, b: str, version: int) -> None:
    shape = ops.shape(sid, b)
    ops.drop_above(sid, b, shape.pinned)
    if ops.has_shape(sid, b):
        ops.save_shape(sid, b, replace(shape, segments=cleared_segments(b, version)))


# -- the pure fold --------------------------------------------------------------------


@dataclass
class UsageState:
    """Everything the usage projection knows of one session (mutable, for folding)."""

    session: Figures | None = None
    shapes: dict[str, BranchShape] = field(default_factory=dict)
    turns: dict[str, dict[int, Figures]] = field(default_factory=dict)  # owner -> seq -> own
    ordinals: dict[tuple[str, int], int] = field(default_factory=dict)  # (owner, seq) -> n

    def shape(self, sid: str, bid: str) -> BranchShape:
        return self.shapes.get(bid) or BranchShape()

    def save_shape(self, sid: str, bid: str, shape: BranchShape) -> None:
        self.shapes[bid] = shape

    def has_shape(self, sid: str, bid: str) -> bool:
        return bid in self.shapes

    def known_branches(self, sid: str) -> set[str]:
        return set(self.shapes) | set(self.turns)

    def drop_above(self, sid: str, owner: str, above: int) -> None:
        rows = self.turns.get(owner, {})
        for seq in [s for s in rows if s > above]:
            del rows[seq]

    def record(self, sid: str, owner: str | None, seq: int, ordinal: int, tokens: Tokens) -> None:
        new_turn = 0
        if owner is not None:
            rows = self.turns.setdefault(owner, {})
            new_turn = int(seq not in rows)
            if new_turn:
                self.ordinals[(owner, seq)] = ordinal
            rows[seq] = (rows.get(seq) or Figures(turns=1)).plus(Figures(0, 1, tokens))
        self.session = (self.session or Figures()).plus(Figures(new_turn, 1, tokens))

    def running(self, owner: str) -> Iterator[tuple[int, Figures, Figures]]:
        """``(seq, own, running total)`` of an owner's turns in anchor order."""
        total = Figures()
        for seq, own in sorted(self.turns.get(owner, {}).items()):
            total = total.plus(own)
            yield seq, own, total


def fold(events: Iterable[RecordedEvent], state: UsageState | None = None) -> UsageState:
    """Fold the recorded events of one stream into its usage."""
    state = state or UsageState()
    for recorded in events:
        apply_event(state, recorded)
    return state
