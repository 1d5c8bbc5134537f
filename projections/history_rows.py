"""The rows of the history's reads, resolved into items.

A read returns items as pointers into event payloads (``seq, item_at, item_size,
item``), together with, once each, the payloads they point into: a row's kind is its
``seq`` column, an item's seq (never negative) or a :class:`RowKind`. :func:`resolve`
slices each item out of the payload of the event at version ``seq >> SEQ_SHIFT``;
:func:`item_arrays` reads the one-row-per-event form (``array_read`` in
projections/history_queries.py) as JSON arrays of consecutive items.

These run per item of a whole-history read, so they are comprehensions over the rows,
not a function call per row, and compare kinds with module names bound to the enum's
members, not attributes of the enum (an attribute of an enum class is several times
slower to read than a global name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, unique
from operator import itemgetter
from typing import Any

import msgspec

from eventstore import decode_item
from eventstore.errors import IntegrityError, ProjectionMismatchError
from eventstore.records import stored_bytes

from .history import SEQ_SHIFT, BranchInfo, Segment


@unique
class RowKind(IntEnum):
    """What a row of a history read holds, when it is not an item (an item's row has
    its ``seq`` there, which is never negative)."""

    MARKER = -1  # the branch's segments
    PAYLOAD = -2  # an event's payload, which items point into
    SPAN = -3  # the items one event shows: where they lie in its payload, and the payload
    COUNT = -4  # how many items the read shows


_MARKER, _PAYLOAD, _SPAN = RowKind.MARKER, RowKind.PAYLOAD, RowKind.SPAN
_first = itemgetter(0)
_second = itemgetter(1)
_segments_codec = msgspec.json.Encoder()
_segments_decoder = msgspec.json.Decoder(tuple[tuple[str, int, int], ...])


@dataclass(frozen=True, slots=True)
class ViewRow:
    """One item a branch shows, with what classifies it."""

    seq: int
    item: bytes
    kind: str
    tool_name: str | None
    user_turn: int | None  # the owner's ordinal: see projections/history.py
    owner: str


@dataclass(frozen=True, slots=True)
class Turn:
    """The user message that starts a turn of a branch."""

    number: int
    seq: int
    item: bytes
    recorded_at: int  # microseconds since the epoch


def encode_segments(segments: tuple[Segment, ...] | None) -> bytes | None:
    """The stored form of a branch's segments (None: it has none)."""
    return None if segments is None else _segments_codec.encode(segments)


def decode_segments(data: bytes | None) -> tuple[Segment, ...] | None:
    """A branch's segments from their stored form."""
    return None if data is None else _segments_decoder.decode(bytes(data))


def info_of(row: Mapping[Any, Any]) -> BranchInfo:
    """A row of the branches table, by column name, as a BranchInfo."""
    return BranchInfo(
        parent=row["parent_branch_id"],
        fork_seq=row["fork_seq"],
        name=row["name"],
        created_version=int(row["created_version"]),
        created_at=int(row["created_at"]),
        deleted=bool(row["deleted"]),
        pinned=int(row["pinned"]),
        segments=decode_segments(row["segments"]),
    )


def info_tuple(info: BranchInfo) -> tuple[Any, ...]:
    """The columns of a branch's row after its key, as the checking rows hold them."""
    return (
        info.parent,
        info.fork_seq,
        info.name,
        info.created_version,
        info.created_at,
        info.deleted,
        info.pinned,
        info.segments,
    )


def resolve(rows: Sequence[Any]) -> tuple[bytes | None, list[tuple[Any, ...]]]:
    """The rows of a read built by ``with_payloads``: the marker's segments (or None),
    and ``(seq, item)`` per item in ``seq`` order, each item sliced out of the payload
    of the event at version ``seq >> SEQ_SHIFT``; a ``full`` read adds ``kind,
    tool_name, user_turn, recorded_at``."""
    marker, found, events, full = _sorted_rows(rows)
    try:
        if full:
            return marker, [
                (
                    row[0],
                    stored_item(row[3], (event := events[row[0] >> SEQ_SHIFT])[0], row[1], row[2]),
                    row[4],
                    row[5],
                    row[6],
                    event[1],
                )
                for row in found
            ]
        return marker, [
            (
                seq,
                bytes(copy) if copy is not None else events[seq >> SEQ_SHIFT][0][at : at + size],
            )
            for seq, at, size, copy in found
        ]
    except KeyError as missing:
        raise _missing_event(missing) from None


def resolve_items(rows: Sequence[Any]) -> tuple[bytes | None, list[bytes]]:
    """:func:`resolve` of a read that is not ``full``, without the ``seq`` of each
    item: the marker's segments (or None) and the items in ``seq`` order (a large
    read builds no pair per item)."""
    marker, found, events, _ = _sorted_rows(rows)
    try:
        return marker, [
            bytes(copy) if copy is not None else events[seq >> SEQ_SHIFT][0][at : at + size]
            for seq, at, size, copy in found
        ]
    except KeyError as missing:
        raise _missing_event(missing) from None


def item_arrays(rows: Sequence[Any]) -> tuple[bytes | None, list[tuple[Any, int]]]:
    """The rows of ``array_read``: the marker's segments (or None), and per event,
    oldest first, ``(array, count)``: a JSON array whose elements are the stored bytes
    of ``count`` items, in ``seq`` order. The array is the payload itself when the
    items are its whole list (a view, nothing copied), its range in brackets when they
    are consecutive, else the items joined."""
    marker: bytes | None = None
    total = 0
    spans: list[Any] = []
    loose: dict[int, list[Any]] = {}
    for row in rows:
        kind = row[0]
        if kind == _SPAN:
            spans.append(row)
        elif kind >= 0:
            loose.setdefault(kind >> SEQ_SHIFT, []).append(row)
        elif kind == _MARKER:
            marker = row[6]
        else:
            total = int(row[4])
    spans.sort(key=_second)
    arrays: list[tuple[Any, int]] = []
    shown = 0
    for _, version, at, end, items, whole, payload in spans:
        count = int(items)
        shown += count
        data = None if payload is None else stored_bytes(payload)
        if whole and data is not None:
            at, end = int(at), int(end)
            view = memoryview(data)
            if data[at - 1 : at] == b"[" and data[end : end + 1] == b"]":
                arrays.append((view[at - 1 : end + 1], count))  # the event's whole list
            else:
                arrays.append((b"".join((b"[", view[at:end], b"]")), count))
            continue
        arrays.append((_joined(version, count, data, loose.get(version, ())), count))
    if shown != total:
        raise IntegrityError(
            f"the history shows {total} items here but the log holds the events of only "
            f"{shown} of them (convstore DB audit tells more)"
        )
    return marker, arrays


def _joined(version: int, count: int, data: bytes | None, rows: Sequence[Any]) -> bytes:
    """The JSON array of one event's ``count`` items that are not consecutive in its
    payload ``data`` (or are copies): their rows, one per item, joined."""
    found = sorted(rows, key=_first)
    if data is None:  # the event is gone: only copies can be shown
        datas = [bytes(copy) for *_, copy in found if copy is not None]
    else:
        datas = [
            bytes(copy) if copy is not None else data[at:end]
            for _, _, at, end, _, _, copy in found
            if copy is not None or not (at is None or end is None)
        ]
    if len(datas) != count:
        raise IntegrityError(
            f"the event at version {version} that items of the history point into "
            "is gone from the log (convstore DB audit tells more)"
        )
    return b"".join((b"[", b",".join(datas), b"]"))


def sliced_items(rows: Sequence[Any]) -> tuple[bytes | None, list[bytes] | None]:
    """The rows of ``sliced_read`` (newest first): the marker's segments (or None), and
    the items' bytes, oldest first, or None if an item lies in a payload too large
    for the database to cut it out (the caller reads arrays instead)."""
    items: list[bytes] = []
    for seq, copy, sliced, payload_size in rows:
        if seq < 0:
            return copy, None  # the branch has segments: its own items are not the answer
        if copy is not None:
            items.append(copy)
        elif sliced is not None:
            items.append(sliced)
        elif payload_size is None:
            raise IntegrityError(
                f"the event at version {seq >> SEQ_SHIFT} that items of the history point "
                "into is gone from the log (convstore DB audit tells more)"
            )
        else:
            return None, None
    items.reverse()
    return None, items


def one_array(items: list[bytes]) -> list[tuple[Any, int]]:
    """Items read one by one as ``read_arrays`` returns them: one JSON array of all of
    them (none if there are none)."""
    return [(b"[" + b",".join(items) + b"]", len(items))] if items else []


def stored_item(
    copy: bytes | None, payload: bytes | None, at: int | None, size: int | None
) -> bytes | None:
    """An item's bytes: its copy, or its slice of the payload (None if that is gone)."""
    if copy is not None:
        return bytes(copy)
    if payload is None or at is None or size is None:
        return None
    return payload[at : at + size]


def _sorted_rows(
    rows: Sequence[Any],
) -> tuple[bytes | None, list[Any], dict[int, tuple[bytes, Any]], bool]:
    """The parts of a read built by ``with_payloads``: the marker's segments (or None),
    the item rows in ``seq`` order, the payloads by version (with ``recorded_at`` in a
    ``full`` read), and whether it is ``full``."""
    found = [row for row in rows if row[0] >= 0]
    found.sort(key=_first)
    full = bool(found) and len(found[0]) > 4
    events = {
        row[1]: (stored_bytes(row[3]), row[7] if full else None)
        for row in rows
        if row[0] == _PAYLOAD
    }
    marker = next((row[3] for row in rows if row[0] == _MARKER), None)
    return marker, found, events, full


def _missing_event(version: KeyError) -> IntegrityError:
    """The error for an item whose event is gone from the log."""
    return IntegrityError(
        f"the event at version {version} that an item of the history points into "
        "is gone from the log (convstore DB audit tells more)"
    )


def mismatch(
    stream_id: str, branch_id: str, seq: int | None, detail: str
) -> ProjectionMismatchError:
    """The error for a history row (of item ``seq``, if known) that does not hold an
    item as its event stored it."""
    version = None if seq is None else seq >> SEQ_SHIFT
    row = "a row" if version is None else f"the row of an item of version {version}"
    return ProjectionMismatchError(
        f"session {stream_id!r}, branch {branch_id!r}: {row} of the history projection "
        f"does not match its event in the log ({detail}); the projection was changed "
        "outside convstore or is damaged: run 'convstore DB replay' to rebuild it from "
        "the log ('convstore DB audit' lists every difference)",
        stream_id=stream_id,
        version=version,
    )


def decode_entry(stream_id: str, branch_id: str, seq: int, item: bytes) -> Any:
    """The item of a history row ``(seq, item)``; ProjectionMismatchError if the row
    does not hold one."""
    try:
        return decode_item(item)
    except msgspec.DecodeError as error:
        raise mismatch(stream_id, branch_id, seq, str(error)) from None
