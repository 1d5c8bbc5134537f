"""Bytes on disk against the SDK's SQLiteSession (each item stored once).

The history table points into the log instead of holding a copy of every item, so a
conversation of ~1 KB messages takes at most 1.5x the bytes of the SDK's
SQLiteSession, which keeps one row per message and no log. Bytes, not time: the
assertion cannot depend on the machine. (benchmarks/storage.py measures more sizes
and PostgreSQL.)
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sessions import SQLiteSession

pytest.importorskip("agents")

WORDS = [
    "the",
    "order",
    "shipped",
    "yesterday",
    "and",
    "should",
    "arrive",
    "within",
    "three",
    "business",
    "days",
]


def messages(count: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    out: list[dict[str, Any]] = []
    for n in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(160))[:960]
        if n % 2 == 0:
            out.append({"role": "user", "content": text})
        else:
            out.append(
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text[:900], "annotations": []}],
                }
            )
    return out


def file_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


async def test_kilobyte_messages_take_at_most_one_and_a_half_times_the_sdk(
    tmp_path: Path,
) -> None:
    from agents.memory import SQLiteSession as SdkSQLiteSession

    items = messages(600)
    ours = SQLiteSession("user-1", db_path=tmp_path / "ours.db")
    sdk = SdkSQLiteSession("user-1", db_path=str(tmp_path / "sdk.db"))
    for item in items:  # one add per item: one event per item, the log's worst case
        await ours.add_items([item])
        await sdk.add_items([item])
    assert await ours.get_items() == items == await sdk.get_items()
    await ours.close()
    sdk.close()
    ratio = file_bytes(tmp_path / "ours.db") / file_bytes(tmp_path / "sdk.db")
    assert ratio <= 1.5, f"convstore takes {ratio:.2f}x the SDK's bytes"
