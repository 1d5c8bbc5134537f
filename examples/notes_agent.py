"""A notes agent whose conversation lives in convstore: ``make demo``.

It runs the real Agents SDK ``Runner`` with convstore's ``SQLiteSession`` on a file,
in two separate processes, to show the history surviving a restart; then it pops and
clears, and prints the event log beside the history after each step, so you can see
what event sourcing means: the history is a reading of the log, and the log only grows.

Offline by default (a scripted model answers); with ``OPENAI_API_KEY`` set it talks to
a real model instead.

    python examples/notes_agent.py                 # both runs, fresh database
    python examples/notes_agent.py --db my.db      # keep the database somewhere else
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.models.interface import Model
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

from eventstore import ItemPopped, ItemsAdded, RecordedEvent, SessionCleared, decode_item
from projections.history import MAX_ITEMS_PER_EVENT
from sessions import SQLiteSession

SESSION_ID = "user_123"
WIDTH = 58


# -- the agent ------------------------------------------------------------------------


def notes_file(db: Path) -> Path:
    return db.with_suffix(".notes.json")


def make_agent(db: Path, model: Model | None) -> Agent[Any]:
    path = notes_file(db)

    def load() -> dict[str, str]:
        return json.loads(path.read_text()) if path.exists() else {}

    @function_tool
    def create_note(title: str, body: str) -> str:
        """Create (or replace) a note."""
        notes = load()
        notes[title] = body
        path.write_text(json.dumps(notes))
        return f"saved note {title!r}"

    @function_tool
    def list_notes() -> str:
        """List the titles of all notes."""
        return ", ".join(load()) or "no notes"

    kwargs: dict[str, Any] = {"model": model} if model is not None else {}
    return Agent(
        name="NotesAgent",
        instructions="Help the user with notes.",
        tools=[create_note, list_notes],
        **kwargs,
    )


def first_user_message(call: Any) -> list[Any]:
    """Scripted answer that can only be right if the earlier turns were sent as history."""
    users = [i for i in call.input if isinstance(i, dict) and i.get("role") == "user"]
    first = users[0]["content"] if users else "nothing"
    return [assistant_message(f"Your first request in this conversation was: {first!r}.")]


def scripted_model(phase: str) -> Model | None:
    if os.environ.get("OPENAI_API_KEY"):
        return None  # the SDK's default OpenAI model
    set_tracing_disabled(True)  # offline: there is nowhere to send traces
    if phase == "first":
        return ScriptedModel(
            [
                [function_call("create_note", {"title": "Test", "body": "hi"}, call_id="c1")],
                [assistant_message("Created the note 'Test'.")],
                [function_call("list_notes", {}, call_id="c2")],
                [assistant_message("You have one note: Test.")],
            ]
        )
    return ScriptedModel([ModelStep.respond(first_user_message)])


# -- printing the log beside the history ---------------------------------------------


def describe(recorded: RecordedEvent) -> str:
    event = recorded.event
    text = f"v{recorded.version} {recorded.event_type}"
    if isinstance(event, ItemsAdded):
        text += f" ({len(event.items)} item{'s' if len(event.items) != 1 else ''})"
    elif isinstance(event, ItemPopped):
        version, index = divmod(event.seq, MAX_ITEMS_PER_EVENT)
        text += f" (item {index + 1} of v{version})"
    elif isinstance(event, SessionCleared):
        text += " (whole session)"
    return text


def summarise(item: dict[str, Any]) -> str:
    kind = item.get("type") or "message"
    if "role" in item:
        content = item.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        return f"{item['role']}: {content}"
    if kind == "function_call":
        return f"tool call {item.get('name')}({item.get('arguments')})"
    if kind == "function_call_output":
        return f"tool result: {item.get('output')}"
    return str(kind)


async def show(session: SQLiteSession, title: str) -> None:
    log = await session.store.read_stream(session.session_id)
    history = await session.get_items()
    left = ["EVENT LOG (append-only)", "-" * 23] + [describe(e) for e in log]
    right = ["HISTORY (a projection of the log)", "-" * 33] + [
        f"{n}. {summarise(item)}" for n, item in enumerate(history, 1)
    ]
    if not history:
        right.append("(empty)")
    print(f"\n== {title} ==")
    for a, b in itertools.zip_longest(left, right, fillvalue=""):
        print(f"  {textwrap.shorten(a, WIDTH):<{WIDTH}}  {textwrap.shorten(b, WIDTH)}")


# -- the two runs --------------------------------------------------------------------


async def first_run(db: Path) -> None:
    print(f"[process {os.getpid()}] first run on {db}")
    async with SQLiteSession(SESSION_ID, db) as session:
        agent = make_agent(db, scripted_model("first"))
        for message in ("Create a note titled Test", "Now list my notes"):
            result = await Runner.run(agent, message, session=session)
            print(f"  user: {message}\n  agent: {result.final_output}")
        await show(session, "after two turns")


async def second_run(db: Path) -> None:
    print(f"\n[process {os.getpid()}] second run: a new process opens the same file")
    async with SQLiteSession(SESSION_ID, db) as session:
        print(f"  history found on disk: {len(await session.get_items())} items")
        agent = make_agent(db, scripted_model("second"))
        message = "What did I ask you first?"
        result = await Runner.run(agent, message, session=session)
        print(f"  user: {message}\n  agent: {result.final_output}")

        removed = await session.pop_item()
        print(f"\n  pop_item() removed -> {summarise(removed) if removed else None}")
        await show(session, "after pop_item(): one more event, one item fewer")

        await session.clear_session()
        await show(session, "after clear_session(): the history is empty, the log is not")
        log = await session.store.read_stream(session.session_id)
        kept = [
            decode_item(raw)
            for e in log
            if isinstance(e.event, ItemsAdded)
            for raw in e.event.items
        ]
        print(
            f"\n  The log still holds all {len(kept)} items ever added "
            f"(first: {summarise(kept[0])!r}); branches, time travel and audits read them."
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, help="SQLite file (default: a fresh temporary one)")
    parser.add_argument("--phase", choices=["first", "second"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase == "first":
        asyncio.run(first_run(args.db))
        return
    if args.phase == "second":
        asyncio.run(second_run(args.db))
        return

    workdir = None
    if args.db is None:
        workdir = Path(tempfile.mkdtemp(prefix="convstore-demo-"))
        db = workdir / "conversations.db"
    else:
        db = args.db.resolve()
        for path in (db, notes_file(db)):
            path.unlink(missing_ok=True)
    mode = (
        "a real model (OPENAI_API_KEY is set)"
        if os.environ.get("OPENAI_API_KEY")
        else "a scripted offline model"
    )
    print(f"convstore demo: a notes agent with {mode}, history in {db}\n")
    try:
        for phase in ("first", "second"):
            subprocess.run(
                [sys.executable, __file__, "--db", str(db), "--phase", phase], check=True
            )
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
