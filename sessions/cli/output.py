"""What the command prints: tables, JSON, one-line summaries of events and items, and
the files it writes (created readable by their owner only)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing for --version
if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from eventstore import RecordedEvent


def emit_json(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# The longest details column ``log`` prints (``--full``: all of it).
DETAILS_WIDTH = 72


def summary(recorded: RecordedEvent, *, full: bool = False) -> str:
    """What one event did, in a line of at most DETAILS_WIDTH characters (``full``:
    every field of the event)."""
    import msgspec

    from eventstore import HistoryCompacted, ItemPopped, ItemsAdded, UsageRecorded
    from projections.history import MAX_ITEMS_PER_EVENT

    event = recorded.event
    if isinstance(event, ItemsAdded):
        return f"{len(event.items)} item(s) on {event.branch_id}"
    if isinstance(event, HistoryCompacted) and not full:
        return compaction_text(event)
    if isinstance(event, ItemPopped):
        version, index = divmod(event.seq, MAX_ITEMS_PER_EVENT)
        return f"removed item {index + 1} of v{version} on {event.branch_id}"
    fields = msgspec.structs.asdict(event)
    text = ", ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, {}, ()))
    if full:
        return text
    if isinstance(event, UsageRecorded):
        text = (
            f"{event.requests} request(s), {event.input_tokens:,} in + "
            f"{event.output_tokens:,} out = {event.total_tokens:,} tokens on {event.branch_id}"
            + ("" if event.anchor_branch else " (session only)")
        )
    return text if len(text) <= DETAILS_WIDTH else text[: DETAILS_WIDTH - 3] + "..."


def compaction_text(event: Any) -> str:
    """What a HistoryCompacted did, in words (the replaced items stay in the log)."""
    from projections.history import SEQ_SHIFT

    run = ""
    if event.replaced:
        run = f" (v{event.replaced_from >> SEQ_SHIFT}..v{event.replaced_upto >> SEQ_SHIFT})"
    kept = len(event.items) - event.added
    if event.reverts:
        return (
            f"reverted the compaction at v{event.reverts}: {event.added} item(s) shown "
            f"again, {kept} kept, on {event.branch_id}"
        )
    return (
        f"compacted {event.replaced} item(s){run} into {event.added}, "
        f"{kept} kept, on {event.branch_id}"
    )


# The key of an encrypted item's envelope (sessions/crypto/envelope.py's MARKER).
_SEALED = "__convstore_encrypted__"


def item_text(item: Any) -> str:
    if isinstance(item, dict) and _SEALED in item:
        size = len(str(item.get("ct", "")))
        who = item.get("role") or "item"
        return f"{who}: [encrypted, {size:,} characters of ciphertext; --key-file decrypts]"
    if isinstance(item, dict):
        content = item.get("content", item.get("output", item.get("arguments", "")))
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        who = item.get("role") or item.get("type") or "item"
        text = f"{who}: {content}"
    else:
        text = repr(item)
    text = text.replace("\n", " ")
    return text if len(text) <= 100 else text[:97] + "..."


def when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}"


# The mode of the files the command creates (exports, checkpoints): readable by their
# owner only, as the SQLite databases are. An existing file keeps its mode.
OUTPUT_MODE = 0o600


def create_output(path: str) -> BinaryIO:
    """``path`` opened for writing, created with :data:`OUTPUT_MODE` if it is new."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OUTPUT_MODE)
    return os.fdopen(fd, "wb")


def write_output(path: str | None, data: bytes) -> None:
    if path is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        with create_output(path) as out:
            out.write(data)
