"""Audit, checkpoint, tamper, detect, export and replay: the maintenance functions at work.

    python examples/replay_audit.py [DB]      (default: a temporary SQLite file)

Every step is a function a script can import (the ``convstore`` command calls the same
ones): ``sessions.admin`` for audit, checkpoints, replay and retention,
``sessions.transfer`` for export and import.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
from pathlib import Path

from sqlalchemy import text

from eventstore.checkpoints import load_checkpoints
from sessions import SQLiteSession
from sessions.admin import (
    AuditFailedError,
    audit_database,
    open_store,
    replay,
    session_history,
    take_checkpoints,
)
from sessions.transfer import export_events, import_events

AUDIT_KEY = b"held by the application, never stored in the database"


async def main(db: Path) -> None:
    async with SQLiteSession("user_123", db) as session:
        await session.add_items([{"role": "user", "content": "Create a note titled Test"}])
        await session.add_items([{"role": "assistant", "content": "Created 'Test'."}])
        await session.add_items([{"role": "user", "content": "Now list my notes"}])

    async with open_store(db) as store:
        report = await audit_database(store)
        print(f"1. audit: ok={report.ok}, {report.streams} session(s), {report.events} events")

        checkpoints = await take_checkpoints(store, key=AUDIT_KEY)
        print(f"2. signed checkpoints taken ({len(checkpoints)} bytes, kept off the database)")

        backup = io.BytesIO()
        exported = await export_events(store, backup)
        print(f"3. exported {exported} events as JSON Lines")

        # Someone with write access edits the stored history...
        def tamper(conn: object) -> None:
            conn.execute(  # type: ignore[attr-defined]
                text(
                    "UPDATE convstore_events SET payload = CAST(REPLACE(CAST(payload AS TEXT), "
                    "'Test', 'Secret') AS BLOB) WHERE stream_id = 'user_123' AND version = 2"
                )
            )

        await store.run(tamper, write=True)
        report = await audit_database(
            store, checkpoints=load_checkpoints(checkpoints, key=AUDIT_KEY)
        )
        print(f"4. after an edit with raw SQL: ok={report.ok}")
        for finding in report.findings:
            print(f"     {finding}")

        try:
            await replay(store)
        except AuditFailedError as error:
            print(f"5. replay refused: {error}")

    restored = db.with_name("restored.db")
    async with open_store(restored, create=True) as store:
        result = await import_events(store, io.BytesIO(backup.getvalue()))
        report = await audit_database(store)
        items = await session_history(store, "user_123")
        print(f"6. restored {result.imported} events from the export: audit ok={report.ok}")
        print(f"   first item: {items[0]['content']!r}")
        print(f"   rebuilt projections up to position {await replay(store)}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(Path(tmp) / "conversations.db"))
