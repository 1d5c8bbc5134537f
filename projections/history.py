"""The history projection: the items of each branch of each session, in order.

Branches share, never copy. Every item is stored once, under the branch that added
it (its *owner*), keyed by ``seq`` (item ``i`` of the event at stream version ``v``
has ``seq = v * 2**20 + i``: increasing along a stream, unique, known without a
read). What a branch *shows* is a short list of **segments** ``(source, lo, hi)``:
the source branch's items with ``lo < seq <= hi``, oldest segment first. A branch
created from a parent at ``fork_seq`` gets the parent's segments cut at
``fork_seq`` plus an open tail of its own, so creating it touches no item and costs
the same at 100 items as at 1,000,000; reading its newest 20 items reads at most 20
rows from each segment it needs, newest first.

A branch whose segments are just "all of my own items" (every session's main branch
until something forces more) stores no segments at all: that is the common case and
it reads with one range scan.

The rules (one implementation each, in :func:`apply`, mirrored by the table in
:mod:`projections.history_table`):

* **ItemsAdded** on B: new rows owned by B (they fall in B's open tail).
* **ItemPopped** ``seq`` on B: if B owns the row and no other branch's segment can
  reach it (``seq > pinned(B)``), the row is deleted; otherwise B's segment holding
  it is split around it (the row stays for the branches that share it).
* **SessionCleared** on B (or every branch): B shows nothing from here on (its
  segments become an open tail after this version); its unshared rows are deleted.
* **ItemsExpired** ``upto_seq`` on B: B's segments start after ``upto_seq``.
* **HistoryCompacted** on B keeping ``keep_upto``: B's segments are cut at
  ``keep_upto`` (as a fork's are) plus an open tail from this event, its unshared rows
  above the cut are deleted, and the event's items are added as new rows of B (the
  replaced items stay in the log, and in the rows another branch shares).
* **BranchCreated** C from P at ``fork_seq``: C's segments are P's cut at
  ``fork_seq`` plus C's open tail; each source it shares is pinned up to the cut.
* **BranchSwitched**: the session's current branch. **BranchDeleted**: B leaves the
  tree (its unshared rows are deleted; its id stays used).

Turn numbers come from ``user_turn``: the number of user messages among the owner's
rows up to and including that row (rows are only ever deleted from the newest end of
an owner, so it never needs renumbering). A segment ``(src, lo, hi)`` therefore
holds ``ordinal(src, hi) - ordinal(src, lo)`` user turns, found with two index
look-ups, and turn ``n`` of any branch is found without reading the history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from eventstore import (
    MAIN_BRANCH,
    AnyEvent,
    BranchCreated,
    BranchDeleted,
    BranchSwitched,
    HistoryCompacted,
    ItemPopped,
    ItemsAdded,
    ItemsExpired,
    RecordedEvent,
    SessionCleared,
)
from eventstore.records import to_micros

SEQ_SHIFT = 20
MAX_ITEMS_PER_EVENT = 1 << SEQ_SHIFT
OPEN = 1 << 62  # the upper bound of an open tail: above every seq
Segment = tuple[str, int, int]  # (source branch, lo exclusive, hi inclusive)


# The items of one ItemsAdded event take at most this many bytes (an item larger than
# that has an event of its own). The history table points into event payloads, and a
# read fetches each payload its items point into: the bound keeps a read of a few items
# cheap whatever the size of the add_items call that stored them (docs/design.md).
MAX_EVENT_ITEM_BYTES = 16 * 1024


def item_seq(version: int, index: int) -> int:
    """The key of item ``index`` of the event at stream version ``version``."""
    return (version << SEQ_SHIFT) | index


def item_batches(items: Sequence[msgspec.Raw]) -> list[tuple[msgspec.Raw, ...]]:
    """``items`` cut, in order, into the item lists of consecutive ItemsAdded events:
    at most :data:`MAX_ITEMS_PER_EVENT` items and :data:`MAX_EVENT_ITEM_BYTES` bytes
    each (a larger item alone)."""
    batches: list[tuple[msgspec.Raw, ...]] = []
    start, size = 0, 0
    for index, raw in enumerate(items):
        length = len(raw)
        count = index - start
        if count and (size + length > MAX_EVENT_ITEM_BYTES or count == MAX_ITEMS_PER_EVENT):
            batches.append(tuple(items[start:index]))
            start, size = index, 0
        size += length
    if start < len(items):
        batches.append(tuple(items[start:]))
    return batches


def batch_seqs(first_version: int, batches: Sequence[Sequence[Any]]) -> list[int]:
    """The item keys of ``batches`` appended as consecutive events from ``first_version``."""
    return [
        item_seq(first_version + n, index)
        for n, batch in enumerate(batches)
        for index in range(len(batch))
    ]


# -- what an item is (for turns, tools and search) ----------------------------------

TOOL_CALL_KINDS = frozenset(
    {
        "tool_call",
        "function_call",
        "computer_call",
        "file_search_call",
        "web_search_call",
        "code_interpreter_call",
        "tool_search_call",
        "custom_tool_call",
        "mcp_call",
        "mcp_approval_request",
        "shell_call",
        "apply_patch_call",
    }
)
_TYPE_NAMED = frozenset(
    {
        "computer_call",
        "file_search_call",
        "web_search_call",
        "code_interpreter_call",
        "shell_call",
        "apply_patch_call",
    }
)


class _Shape(msgspec.Struct):
    """The few fields of an SDK item that classify it (others are skipped unread)."""

    role: Any = None
    type: Any = None
    name: Any = None
    namespace: Any = None
    server_label: Any = None


class _Common(msgspec.Struct, frozen=True, gc=False):
    """:class:`_Shape` when every field is a string or absent (the usual case): exact
    equality and a hash, so the classification of a shape seen before is looked up.
    (Strings cannot form cycles: the garbage collector need not track one.)"""

    role: str | None = None
    type: str | None = None
    name: str | None = None
    namespace: str | None = None
    server_label: str | None = None


_shape = msgspec.json.Decoder(_Shape)
_shapes = msgspec.json.Decoder(list[_Shape])
_commons = msgspec.json.Decoder(list[_Common])
# Classifications of common shapes. Few distinct ones occur (the kinds, times the tool
# names), so a bounded cache holds them; past the bound, shapes are classified anew.
_classified: dict[_Common, tuple[str, str | None]] = {}
_CLASSIFIED_MAX = 4096


@dataclass(frozen=True, slots=True)
class ItemKind:
    """How the SDK's AdvancedSQLiteSession would classify an item."""

    kind: str  # "user", "assistant", the item's "type", or "other"
    tool_name: str | None

    @property
    def is_user(self) -> bool:
        return self.kind == "user"


_OTHER = ItemKind("other", None)
Classified = tuple[str, str | None]  # an ItemKind's kind and tool_name
_OTHER_PAIR: Classified = ("other", None)
# The item types whose tool name does not come from ``name`` alone.
_NAMED_BY_TYPE = frozenset(
    {*_TYPE_NAMED, "mcp_call", "mcp_approval_request", "tool_search_call", "tool_search_output"}
)


def describe(item: bytes) -> ItemKind:
    """Classify one stored item (its JSON) without decoding all of it."""
    try:
        shape = _shape.decode(item)
    except msgspec.ValidationError:  # not a JSON object
        return _OTHER
    kind, tool_name = _classify(shape)
    return ItemKind(kind, tool_name)


def describe_all(items: Sequence[bytes | msgspec.Raw]) -> tuple[list[str], list[str | None]]:
    """The kinds and tool names of ``items`` (each one's JSON), as :func:`describe`
    gives them, with one decode of them all instead of one each, and the shapes seen
    before looked up instead of classified (this runs per item of a replay)."""
    joined = b"".join((b"[", b",".join(items), b"]"))
    try:
        commons = _commons.decode(joined)
    except msgspec.ValidationError:  # a field that is not a string, or not an object
        pass
    else:
        try:
            pairs = list(map(_classified.__getitem__, commons))  # in C, per item
        except KeyError:
            pairs = list(map(_classify_common, commons))
        return [pair[0] for pair in pairs], [pair[1] for pair in pairs]
    try:
        pairs = list(map(_classify, _shapes.decode(joined)))
    except msgspec.ValidationError:  # an item that is not a JSON object
        pairs = [(d.kind, d.tool_name) for d in map(describe, map(bytes, items))]
    return [pair[0] for pair in pairs], [pair[1] for pair in pairs]


def _classify_common(shape: _Common) -> Classified:
    found = _classified.get(shape)
    if found is None:
        found = _classify(shape)
        if len(_classified) < _CLASSIFIED_MAX:
            _classified[shape] = found
    return found


def _classify(shape: _Shape | _Common) -> Classified:
    role, kind = shape.role, shape.type
    if role == "user":
        kind = "user"
    elif role == "assistant":
        kind = "assistant"
    elif not isinstance(kind, str) or not kind:
        return _OTHER_PAIR
    if shape.name is None and not (isinstance(shape.type, str) and shape.type in _NAMED_BY_TYPE):
        return kind, None  # the usual case, decided without _tool_name's rules
    return kind, _tool_name(shape)


def _tool_name(shape: _Shape | _Common) -> str | None:
    kind, name, namespace, label = shape.type, shape.name, shape.namespace, shape.server_label
    if kind in ("mcp_call", "mcp_approval_request") and label is not None:
        if name and label:
            return f"{label}.{name}"
        return str(label) if label else (str(name) if name else None)
    if kind in ("tool_search_call", "tool_search_output"):
        return "tool_search"
    if isinstance(kind, str) and kind in _TYPE_NAMED:  # (a "type" may be any JSON)
        return kind
    if name is None:
        return None
    text = str(name)
    if isinstance(namespace, str) and namespace and namespace != text:
        return f"{namespace}.{text}"
    return text


# -- the pure fold ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One stored item, in a persistent stack per owner branch (newest first)."""

    seq: int
    item: bytes
    kind: ItemKind
    user_turn: int | None
    prev: Row | None


@dataclass(frozen=True, slots=True)
class BranchInfo:
    """One branch of a session's tree."""

    parent: str | None = None
    fork_seq: int | None = None
    name: str | None = None
    created_version: int = 0
    created_at: int = 0  # microseconds since the epoch
    deleted: bool = False
    pinned: int = 0  # rows of this branch up to here may be shown by another branch
    segments: tuple[Segment, ...] | None = None  # None: all of its own rows


@dataclass(frozen=True, slots=True)
class HistoryState:
    """Everything the history projection knows of one session."""

    rows: dict[str, Row | None] = field(default_factory=dict)
    branches: dict[str, BranchInfo] = field(default_factory=dict)
    switched_to: str | None = None  # the last BranchSwitched (None: never switched)

    @property
    def current(self) -> str:
        """The session's current branch."""
        return MAIN_BRANCH if self.switched_to is None else self.switched_to

    def segments(self, branch_id: str) -> tuple[Segment, ...]:
        info = self.branches.get(branch_id)
        if info is None or info.segments is None:
            return ((branch_id, 0, OPEN),)
        return info.segments

    def view(self, branch_id: str = MAIN_BRANCH) -> list[Row]:
        """The rows a branch shows, oldest first."""
        shown: list[Row] = []
        for src, lo, hi in self.segments(branch_id):
            part = [r for r in _walk(self.rows.get(src)) if lo < r.seq <= hi]
            shown.extend(reversed(part))
        return shown

    def items(self, branch_id: str = MAIN_BRANCH) -> list[bytes]:
        """The item JSON a branch shows, oldest first."""
        return [row.item for row in self.view(branch_id)]

    def branch_ids(self) -> list[str]:
        """Every branch that exists (main first, then by creation)."""
        created = sorted(
            (b for b, info in self.branches.items() if not info.deleted and b != MAIN_BRANCH),
            key=lambda b: (self.branches[b].created_version, b),
        )
        return [MAIN_BRANCH, *created]

    def exists(self, branch_id: str) -> bool:
        if branch_id == MAIN_BRANCH:
            return True
        info = self.branches.get(branch_id)
        return info is not None and not info.deleted


def _walk(row: Row | None) -> Iterator[Row]:
    while row is not None:
        yield row
        row = row.prev


def _info(state: HistoryState, branch_id: str) -> BranchInfo:
    return state.branches.get(branch_id) or BranchInfo()


def split_segments(
    segments: Sequence[Segment], seq: int, prev_seq: int | None
) -> tuple[Segment, ...]:
    """``segments`` without the row ``seq`` (``prev_seq``: the row before it in the
    same source and segment, or None). Empty pieces go, except an open tail."""
    out: list[Segment] = []
    for src, lo, hi in segments:
        if not lo < seq <= hi:
            out.append((src, lo, hi))
            continue
        if prev_seq is not None and prev_seq > lo:
            out.append((src, lo, prev_seq))
        if hi == OPEN or hi > seq:
            out.append((src, seq, hi))
    return tuple(out)


def segment_of(segments: Sequence[Segment], seq: int) -> Segment | None:
    for segment in segments:
        if segment[1] < seq <= segment[2]:
            return segment
    return None


def expire_segments(segments: Sequence[Segment], upto: int) -> tuple[Segment, ...]:
    return tuple((src, max(lo, upto), hi) for src, lo, hi in segments if hi == OPEN or hi > upto)


def fork_segments(
    parent: Sequence[Segment], fork_seq: int, child: str, version: int
) -> tuple[Segment, ...]:
    """A new branch's segments: the parent's cut at ``fork_seq``, then its own tail."""
    shared = tuple((src, lo, min(hi, fork_seq)) for src, lo, hi in parent if lo < min(hi, fork_seq))
    return (*shared, (child, version << SEQ_SHIFT, OPEN))


def compacted_segments(
    segments: Sequence[Segment], keep_upto: int, branch_id: str, version: int
) -> tuple[Segment, ...]:
    """A branch's segments after a compaction at ``version`` that keeps what it shows up
    to ``keep_upto``: those cut there, then an open tail holding the event's items."""
    kept = tuple(
        (src, lo, min(hi, keep_upto)) for src, lo, hi in segments if lo < min(hi, keep_upto)
    )
    return (*kept, (branch_id, (version << SEQ_SHIFT) - 1, OPEN))


def cleared_segments(branch_id: str, version: int) -> tuple[Segment, ...]:
    return ((branch_id, version << SEQ_SHIFT, OPEN),)


def apply(
    state: HistoryState,
    event: AnyEvent,
    version: int,
    *,
    recorded_at: int = 0,
) -> HistoryState:
    """The history after ``event`` (stored at stream ``version``). Never mutates ``state``."""
    match event:
        case ItemsAdded(items=items, branch_id=b):
            return _add(state, b, items, version)
        case HistoryCompacted(items=items, branch_id=b, keep_upto=keep):
            return _add(_compact(state, b, keep, version), b, items, version)
        case ItemPopped(seq=seq, branch_id=b):
            info = _info(state, b)
            segments = state.segments(b)
            segment = segment_of(segments, seq)
            if segment is None:
                return state
            src = segment[0]
            if src == b and seq > info.pinned:
                rows = [r for r in _walk(state.rows.get(b)) if r.seq != seq]
                return replace(state, rows={**state.rows, b: _restack(rows)})
            below = [r.seq for r in _walk(state.rows.get(src)) if segment[1] < r.seq < seq]
            split = split_segments(segments, seq, max(below) if below else None)
            return _with_info(state, b, replace(info, segments=split))
        case SessionCleared(branch_id=None):
            cleared = state
            for b in {*state.rows, *state.branches, MAIN_BRANCH}:
                cleared = _clear(cleared, b, version)
            return cleared
        case SessionCleared(branch_id=str(b)):
            return _clear(state, b, version)
        case ItemsExpired(upto_seq=upto, branch_id=b):
            info = _info(state, b)
            return _with_info(
                state, b, replace(info, segments=expire_segments(state.segments(b), upto))
            )
        case BranchCreated(branch_id=c, parent_branch_id=p, fork_seq=fork, name=name):
            segments = fork_segments(state.segments(p), fork, c, version)
            branches = dict(state.branches)
            for src, _lo, hi in segments[:-1]:
                held = branches.get(src) or BranchInfo()
                branches[src] = replace(held, pinned=max(held.pinned, hi))
            branches[c] = BranchInfo(
                parent=p,
                fork_seq=fork,
                name=name,
                created_version=version,
                created_at=recorded_at,
                pinned=(branches.get(c) or BranchInfo()).pinned,
                segments=segments,
            )
            return replace(state, branches=branches)
        case BranchSwitched(branch_id=b):
            return replace(state, switched_to=b)
        case BranchDeleted(branch_id=b):
            info = _info(state, b)
            kept = [r for r in _walk(state.rows.get(b)) if r.seq <= info.pinned]
            deleted = replace(state, rows={**state.rows, b: _restack(kept)})
            deleted = _with_info(deleted, b, replace(info, deleted=True, segments=()))
            if deleted.current == b:
                deleted = replace(deleted, switched_to=MAIN_BRANCH)
            return deleted
        case _:
            return state


def _add(state: HistoryState, b: str, items: Sequence[msgspec.Raw], version: int) -> HistoryState:
    """``items`` of the event at ``version`` added to branch ``b`` as its newest rows."""
    top = state.rows.get(b)
    turn = _last_turn(top)
    for index, raw in enumerate(items):
        data = bytes(raw)
        kind = describe(data)
        if kind.is_user:
            turn += 1
        top = Row(item_seq(version, index), data, kind, turn if kind.is_user else None, top)
    return replace(state, rows={**state.rows, b: top})


def _compact(state: HistoryState, b: str, keep: int, version: int) -> HistoryState:
    """Branch ``b`` cut at ``keep`` for a compaction at ``version`` (its items not added)."""
    info = _info(state, b)
    above = max(info.pinned, keep)
    kept = [r for r in _walk(state.rows.get(b)) if r.seq <= above]
    compacted = replace(state, rows={**state.rows, b: _restack(kept)})
    if not keep and b not in state.branches:
        return compacted  # nothing shared, no segments: its own rows are the new items
    segments = compacted_segments(state.segments(b), keep, b, version)
    return _with_info(compacted, b, replace(info, segments=segments))


def _last_turn(top: Row | None) -> int:
    for row in _walk(top):
        if row.user_turn is not None:
            return row.user_turn
    return 0


def _restack(newest_first: list[Row]) -> Row | None:
    top = None
    for row in reversed(newest_first):
        top = Row(row.seq, row.item, row.kind, row.user_turn, top)
    return top


def _with_info(state: HistoryState, branch_id: str, info: BranchInfo) -> HistoryState:
    return replace(state, branches={**state.branches, branch_id: info})


def _clear(state: HistoryState, branch_id: str, version: int) -> HistoryState:
    info = _info(state, branch_id)
    kept = [r for r in _walk(state.rows.get(branch_id)) if r.seq <= info.pinned]
    cleared = replace(state, rows={**state.rows, branch_id: _restack(kept)})
    if branch_id not in state.branches:
        return cleared  # nothing shared, no segments: the branch is simply empty again
    return _with_info(
        cleared, branch_id, replace(info, segments=cleared_segments(branch_id, version))
    )


def fold(events: Sequence[RecordedEvent], state: HistoryState | None = None) -> HistoryState:
    """Fold recorded events of one stream into its history."""
    state = state or HistoryState()
    for recorded in events:
        state = apply(
            state,
            recorded.event,
            recorded.version,
            recorded_at=to_micros(recorded.recorded_at),
        )
    return state
