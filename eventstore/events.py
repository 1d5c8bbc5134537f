"""The event types of the conversation log.

Each event is a frozen, tagged :class:`msgspec.Struct`. The tag (field ``type`` in the
payload) names the event; the class variable ``schema_version`` names the revision of
its shape. Shapes evolve by msgspec's rules (new fields get defaults, a field never
changes type); a change that breaks those rules bumps ``schema_version`` and registers
an upcaster in :mod:`eventstore.codec` that lifts the old payload on read. Stored rows
are never rewritten.

Items are kept as :class:`msgspec.Raw`: the exact JSON text the user's item encoded
to, so a payload never re-encodes an item and reads return it byte for byte.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

MAIN_BRANCH = "main"


class Event(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    """Base of every event type. ``schema_version`` is the current revision."""

    schema_version: ClassVar[int] = 1


class SessionStarted(Event, frozen=True, tag="SessionStarted"):
    """First event of every session stream."""

    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class ItemsAdded(Event, frozen=True, tag="ItemsAdded"):
    """Items appended to the end of a branch, in order.

    Revision 2 renamed revision 1's ``messages`` to ``items`` and added ``branch_id``
    (revision 1 predates branches: its items belong to ``main``).
    """

    schema_version: ClassVar[int] = 2

    items: tuple[msgspec.Raw, ...]
    branch_id: str = MAIN_BRANCH


class ItemPopped(Event, frozen=True, tag="ItemPopped"):
    """The last item of a branch (its sequence number ``seq``) was removed."""

    seq: int
    branch_id: str = MAIN_BRANCH


class SessionCleared(Event, frozen=True, tag="SessionCleared"):
    """Every item of one branch (or, with ``branch_id=None``, of the session) was removed."""

    branch_id: str | None = None


class ItemsExpired(Event, frozen=True, tag="ItemsExpired"):
    """Every item of a branch up to and including the key ``upto_seq`` expired (TTL).

    Expiry removes the oldest items of a branch, so it is a bound, not a list: items
    with ``seq <= upto_seq`` leave the branch's history; the log keeps them.
    """

    upto_seq: int
    branch_id: str = MAIN_BRANCH


class HistoryCompacted(Event, frozen=True, tag="HistoryCompacted"):
    """Part of a branch's history replaced by other items in one event (a compaction,
    or the revert of one). The log keeps every replaced item in the event that added it.

    The branch keeps the items it showed up to and including the key ``keep_upto``
    (0: none) and shows ``items`` after them: the first ``added`` are new (a summary,
    or the items a revert restores), the rest are verbatim copies of the items it
    showed after the replaced ones. ``replaced`` items were replaced, the shown run
    from key ``replaced_from`` to ``replaced_upto``; ``based_on`` is the stream version
    whose history was compacted, ``reverts`` the version of the compaction a revert
    undoes (0: this is not a revert).
    """

    items: tuple[msgspec.Raw, ...]
    added: int
    branch_id: str = MAIN_BRANCH
    keep_upto: int = 0
    replaced: int = 0
    replaced_from: int = 0
    replaced_upto: int = 0
    based_on: int = 0
    reverts: int = 0


class BranchCreated(Event, frozen=True, tag="BranchCreated"):
    """A branch forked from ``parent_branch_id``, sharing its items up to ``fork_seq``."""

    branch_id: str
    parent_branch_id: str
    fork_seq: int
    name: str | None = None


class BranchSwitched(Event, frozen=True, tag="BranchSwitched"):
    """The session's current branch became ``branch_id``."""

    branch_id: str


class BranchDeleted(Event, frozen=True, tag="BranchDeleted"):
    """A branch was removed from the tree (its events stay in the log)."""

    branch_id: str


class UsageRecorded(Event, frozen=True, tag="UsageRecorded"):
    """Model usage spent answering a turn: an increment, added to what was recorded.

    The turn is named by its *anchor*: the user message that starts it, as the key
    ``anchor_seq`` of that item under the branch that stored it (``anchor_branch``).
    ``anchor_branch=None`` records spending that no turn of the history answers (it
    counts for the session only). ``turn`` is the anchor's user-turn ordinal in its
    owner branch (its ``user_turn`` in the history; 0 without an anchor), which numbers
    the turn in every branch that shows it. ``branch_id`` is the session's branch when
    the usage was recorded (informative).
    ``details`` holds the token details, e.g. ``{"input_tokens_details":
    {"cached_tokens": 3}, "output_tokens_details": {"reasoning_tokens": 5}}``.
    """

    branch_id: str = MAIN_BRANCH
    turn: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    anchor_branch: str | None = None
    anchor_seq: int = 0


AnyEvent = (
    SessionStarted
    | ItemsAdded
    | ItemPopped
    | SessionCleared
    | ItemsExpired
    | HistoryCompacted
    | BranchCreated
    | BranchSwitched
    | BranchDeleted
    | UsageRecorded
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        SessionStarted,
        ItemsAdded,
        ItemPopped,
        SessionCleared,
        ItemsExpired,
        HistoryCompacted,
        BranchCreated,
        BranchSwitched,
        BranchDeleted,
        UsageRecorded,
    )
}


def event_type_of(event: Event) -> str:
    """The tag under which ``event`` is stored."""
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag
