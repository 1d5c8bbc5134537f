"""Encoding of events and items: one encoder and one decoder, built once.

Payloads are JSON (readable with any SQL client, exported as is). An old revision of
an event is lifted to the current shape by an explicit upcaster per revision, applied
on read; the stored bytes are never rewritten.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from .errors import ArgumentTypeError, DecodeError, IntegrityError, SerializationError
from .events import EVENT_TYPES, AnyEvent, Event, event_type_of

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(AnyEvent)
_dict_decoder = msgspec.json.Decoder(dict[str, Any])
_any_decoder = msgspec.json.Decoder()
_list_decoder = msgspec.json.Decoder(list[Any])

# The deepest nesting of lists and dicts an item may have. Decoding is recursive, so a
# fixed bound (well below Python's recursion limit) keeps every stored item readable
# whatever the depth of the stack that reads it.
MAX_DEPTH = 256

# (event_type, revision) -> function lifting a payload of that revision to revision + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` as the upcaster of ``event_type`` revision ``from_version``."""

    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


@upcaster("ItemsAdded", 1)
def _items_added_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """Revision 1 stored ``messages`` and had no branches: all items were on main."""
    return {"type": "ItemsAdded", "items": payload["messages"], "branch_id": "main"}


def encode_event(event: Event) -> bytes:
    """The payload bytes of ``event`` (current revision)."""
    return _encoder.encode(event)


def decode_event(event_type: str, schema_version: int, payload: bytes) -> AnyEvent:
    """Decode a stored payload, upcasting it revision by revision if it is old."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise DecodeError(f"unknown event type {event_type!r}")
    event: AnyEvent
    try:
        if schema_version == cls.schema_version:
            event = _event_decoder.decode(payload)
        elif schema_version < cls.schema_version:
            raw = _dict_decoder.decode(payload)
            for revision in range(schema_version, cls.schema_version):
                lift = UPCASTERS.get((event_type, revision))
                if lift is None:
                    raise DecodeError(f"no upcaster for {event_type} revision {revision}")
                try:
                    raw = lift(raw)
                except (KeyError, TypeError, ValueError) as exc:
                    raise DecodeError(
                        f"{event_type} r{revision}: payload does not have that revision's "
                        f"shape ({type(exc).__name__}: {exc})"
                    ) from exc
            # Through JSON again: item fields are kept as raw JSON, which only the
            # decoder (not msgspec.convert of Python objects) produces.
            event = _event_decoder.decode(_encoder.encode(raw))
        else:
            raise DecodeError(
                f"{event_type} revision {schema_version} is newer than this release "
                f"understands ({cls.schema_version}); upgrade convstore"
            )
    except msgspec.ValidationError as exc:
        raise DecodeError(f"{event_type} r{schema_version}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise DecodeError(f"{event_type} r{schema_version}: undecodable payload: {exc}") from exc
    if event_type_of(event) != event_type:
        raise DecodeError(f"payload tagged {event_type_of(event)!r}, row says {event_type!r}")
    return event


def encode_item(item: Any, *, where: str = "item") -> msgspec.Raw:
    """Encode one SDK item to exact JSON, refusing anything that would not round-trip.

    A value is accepted only if decoding its JSON gives back an equal value: this
    refuses NaN/Infinity (JSON has none), non-string keys, tuples, bytes, dates and
    other objects a JSON encoder would silently change.
    """
    try:
        data = _encoder.encode(item)
    except (TypeError, ValueError, OverflowError, UnicodeError) as exc:
        raise SerializationError(f"{where} is not JSON-serialisable: {exc}") from exc
    except RecursionError as exc:
        raise SerializationError(_too_deep(where)) from exc
    if nested_too_deep(data):
        raise SerializationError(_too_deep(where))
    if _any_decoder.decode(data) != item:
        raise SerializationError(f"{where} would not round-trip as JSON: {_find_non_json(item)}")
    return msgspec.Raw(data)


def nested_too_deep(data: bytes) -> bool:
    """Whether the JSON ``data`` nests lists and dicts more than :data:`MAX_DEPTH` levels
    deep (what :func:`encode_item` refuses), measured without decoding it: JSON from
    elsewhere can be checked before a recursive decoder meets it."""
    # Brackets bound the nesting depth from above: only an item with many of them
    # needs the exact (slower) measurement.
    return data.count(b"[") + data.count(b"{") > MAX_DEPTH and _deeper_than(data, MAX_DEPTH)


def _too_deep(where: str) -> str:
    return f"{where} is nested more than {MAX_DEPTH} levels deep, the most convstore stores"


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


def _deeper_than(data: bytes, limit: int) -> bool:
    """Whether the JSON ``data`` nests lists/dicts more than ``limit`` levels deep.

    With strings removed, only the brackets remain; each pass deletes every innermost
    pair, so a document ``limit`` deep is empty after ``limit`` passes (all in C).
    """
    brackets = _JSON_STRING.sub(b"", data).translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"()", b"")
    return bool(brackets)


def encode_items(items: list[Any] | tuple[Any, ...]) -> tuple[msgspec.Raw, ...]:
    """Encode every item, or raise for the first one that cannot be stored exactly.

    ``items`` must be a list (or tuple) of items: a string, dict or bytes would
    otherwise be taken apart into characters, keys or integers and stored as such.
    """
    if not isinstance(items, list | tuple):
        raise ArgumentTypeError(
            f"items must be a list of items, not {type(items).__name__} "
            f"(to add one item, pass [item])"
        )
    return tuple(encode_item(item, where=f"items[{i}]") for i, item in enumerate(items))


def decode_item(data: bytes | msgspec.Raw) -> Any:
    """The item stored as ``data``."""
    return _any_decoder.decode(data)


def decode_items(rows: Iterable[bytes | msgspec.Raw]) -> list[Any]:
    """The items stored as ``rows``, with the cyclic garbage collector paused.

    Decoding a long history allocates one container per item and per nested object;
    the allocations trigger collections that walk the new containers again and again
    as they move up the collector's generations (docs/design.md, "Measured").
    Items are plain JSON values: they cannot form reference cycles, so pausing the
    collector while they are built leaves nothing for it to find.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return [_any_decoder.decode(data) for data in rows]
    finally:
        if paused:
            gc.enable()


def decode_arrays(arrays: Iterable[tuple[Any, int]]) -> list[Any]:
    """The items stored as JSON arrays of items, ``(array, count)`` pairs in order
    (as :meth:`projections.HistoryProjector.read_arrays` returns them), with the
    collector paused as in :func:`decode_items`.

    An array's elements are the items' stored bytes one comma apart, so each element
    decodes to what :func:`decode_item` makes of its item; one call per array
    instead of one per item. ``count`` is how many items the array must hold: any
    other number means the history's pointers do not match the payload they point
    into, and raises IntegrityError rather than return other items.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        out: list[Any] = []
        for data, count in arrays:
            found = _list_decoder.decode(data)
            if len(found) != count:
                raise IntegrityError(
                    f"{count} items of the history point into an event's payload, which "
                    f"holds {len(found)} there (convstore DB audit tells more)"
                )
            if out:
                out += found
            else:
                out = found
        return out
    finally:
        if paused:
            gc.enable()


def _find_non_json(value: Any, path: str = "$") -> str:
    """Describe the first part of ``value`` that is not plain JSON (for error messages)."""
    return _first_non_json(value, path) or f"{path} changes when encoded"


def _first_non_json(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f"{path} is {value!r}, which JSON cannot represent"
        return None
    if isinstance(value, dict):
        for key, sub in value.items():
            if not isinstance(key, str):
                return (
                    f"{path} has a key {key!r} of type {type(key).__name__}; JSON keys are strings"
                )
            found = _first_non_json(sub, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, list):
        for i, sub in enumerate(value):
            found = _first_non_json(sub, f"{path}[{i}]")
            if found:
                return found
        return None
    return f"{path} is a {type(value).__name__}, not a JSON value"
