"""A database to browse with ``convstore DB serve``: every kind of session the viewer shows.

    python examples/viewer_demo.py demo.db        # or a URL: postgresql://user@host/db
    convstore demo.db serve                       # then open the address it prints
    convstore demo.db serve --key-file demo.key   # the encrypted session, decrypted

It writes, with the real Agents SDK ``Runner`` and a scripted offline model:

* ``trip_planner``: an ``AdvancedSQLiteSession`` of five turns (tool calls and their
  outputs, reasoning, an image the user sent), usage recorded per turn, and a branch
  ``cheaper`` from turn 2 with two turns of its own;
* ``notes``: a plain ``SQLiteSession`` with a pop and a clear (its history is empty
  now, but time travel shows it as it was);
* ``medical_1``: an ``EncryptedSession`` whose key is written to ``demo.key`` beside the
  database (shown locked unless the viewer is given that key).

Running it again on the same database adds nothing: each session is written once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import struct
import zlib
from pathlib import Path
from typing import Any

from agents import Agent, Runner, Usage, function_tool, set_tracing_disabled
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

from sessions import (
    AdvancedSQLAlchemySession,
    AdvancedSQLiteSession,
    EncryptedSession,
    SQLAlchemySession,
    SQLiteSession,
)

KEY = "demo-master-key-change-me-please-0123"  # a passphrase (16+ characters)


def _png(width: int = 48, height: int = 32) -> str:
    """A small PNG (a blue-to-orange gradient) as a data URL, made here (no file)."""
    rows = b"".join(
        b"\x00"
        + b"".join(
            bytes((40 + 200 * x // width, 110, 230 - 180 * x // width)) for x in range(width)
        )
        for _ in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    )
    png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _usage(tokens_in: int, tokens_out: int) -> Usage:
    return Usage(
        requests=1,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        total_tokens=tokens_in + tokens_out,
    )


@function_tool
def search_trains(origin: str, destination: str) -> str:
    """Trains between two cities."""
    return f"{origin} -> {destination}: 08:12 (3h05, 89 EUR), 10:40 (3h20, 59 EUR)"


@function_tool
def book_hotel(city: str, nights: int) -> str:
    """Book a hotel."""
    return f"booked 'Hotel du Parc' in {city} for {nights} nights, ref HX-2291"


def _agent(steps: list[ModelStep]) -> Agent[Any]:
    return Agent(
        name="TripPlanner",
        instructions="Plan trips. Use the tools.",
        tools=[search_trains, book_hotel],
        model=ScriptedModel(steps),
    )


def _session(session_id: str, target: str) -> Any:
    """An Advanced session on a SQLite path or a database URL."""
    if "://" in target:
        return AdvancedSQLAlchemySession.from_url(session_id, url=target, create_tables=True)
    return AdvancedSQLiteSession(session_id=session_id, db_path=target, create_tables=True)


async def trip_planner(target: str) -> None:
    session = _session("trip_planner", target)
    async with session:
        if await session.get_items(limit=1):
            return
        runs = [
            (
                "I want to go from Paris to Lyon next Friday.",
                [
                    ModelStep(
                        output=[
                            function_call(
                                "search_trains",
                                {"origin": "Paris", "destination": "Lyon"},
                                call_id="t1",
                            )
                        ],
                        usage=_usage(412, 38),
                    ),
                    ModelStep(
                        output=[
                            assistant_message(
                                "Two trains: 08:12 (89 EUR) and 10:40 (59 EUR). Which one?"
                            )
                        ],
                        usage=_usage(498, 41),
                    ),
                ],
            ),
            (
                "The 08:12 one. And a hotel for two nights, please.",
                [
                    ModelStep(
                        output=[
                            function_call("book_hotel", {"city": "Lyon", "nights": 2}, call_id="h1")
                        ],
                        usage=_usage(620, 29),
                    ),
                    ModelStep(
                        output=[
                            assistant_message("Booked Hotel du Parc for two nights (ref HX-2291).")
                        ],
                        usage=_usage(701, 33),
                    ),
                ],
            ),
            (
                "What should I see there?",
                [
                    ModelStep(
                        output=[
                            assistant_message(
                                "Vieux Lyon and its traboules, the Fourvière hill at sunset, "
                                "and a bouchon for dinner."
                            )
                        ],
                        usage=_usage(842, 120),
                    )
                ],
            ),
        ]
        for message, steps in runs:
            await Runner.run(_agent(steps), message, session=session)
        # A turn with an image and the model's reasoning, as the Responses API stores them.
        await session.add_items(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Here is the view from my room. Nice?"},
                        {"type": "input_image", "image_url": _png(), "detail": "auto"},
                    ],
                },
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [
                        {
                            "type": "summary_text",
                            "text": "The image is a colour gradient; answer kindly.",
                        }
                    ],
                },
                {
                    "id": "msg_5",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {
                            "type": "output_text",
                            "text": "Lovely colours: a sunset over the Saône?",
                            "annotations": [],
                        }
                    ],
                },
            ]
        )
        await Runner.run(
            _agent(
                [
                    ModelStep(
                        output=[assistant_message("Have a great trip!")], usage=_usage(1204, 12)
                    )
                ]
            ),
            "Thanks, that's all.",
            session=session,
        )
        await session.create_branch_from_turn(2, "cheaper")  # turn 1 only; now current
        cheaper = [
            (
                "Actually, the 10:40 one is cheaper: book that and a hostel instead.",
                [
                    ModelStep(
                        output=[
                            function_call("book_hotel", {"city": "Lyon", "nights": 2}, call_id="h2")
                        ],
                        usage=_usage(655, 31),
                    ),
                    ModelStep(
                        output=[
                            assistant_message("Done: the 10:40 train (59 EUR) and a hostel bed.")
                        ],
                        usage=_usage(720, 27),
                    ),
                ],
            ),
            (
                "How much did I save?",
                [
                    ModelStep(
                        output=[assistant_message("About 30 EUR on the train.")],
                        usage=_usage(801, 15),
                    )
                ],
            ),
        ]
        for message, steps in cheaper:
            await Runner.run(_agent(steps), message, session=session)


async def notes(target: str) -> None:
    session: Any = (
        SQLAlchemySession.from_url("notes", url=target, create_tables=True)
        if "://" in target
        else SQLiteSession("notes", target)
    )
    async with session:
        if await session.store.stream_info("notes") is not None:
            return
        await session.add_items([{"role": "user", "content": "Remember: buy milk"}])
        await session.add_items([{"role": "assistant", "content": "Noted: buy milk."}])
        await session.add_items([{"role": "user", "content": "And eggs"}])
        await session.pop_item()
        await session.add_items([{"role": "user", "content": "And eggs, a dozen"}])
        await session.clear_session()


async def medical(target: str) -> None:
    base: Any = (
        SQLAlchemySession.from_url("medical_1", url=target, create_tables=True)
        if "://" in target
        else SQLiteSession("medical_1", target)
    )
    async with EncryptedSession(session=base, encryption_key=KEY, ttl=None) as session:
        if await base.store.stream_info("medical_1") is not None:
            return
        await session.add_items(
            [
                {"role": "user", "content": "My blood pressure was 150/95 this morning."},
                {
                    "role": "assistant",
                    "content": "That is high: measure again tonight, seated and rested.",
                },
            ]
        )


async def build(target: str) -> None:
    """Write the demo's sessions to ``target`` (a SQLite path or a URL)."""
    set_tracing_disabled(True)
    await trip_planner(target)
    await notes(target)
    await medical(target)


def write_key(key_file: Path) -> None:
    """The encrypted session's master key, for ``serve --key-file``."""
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("db", help="a SQLite file or a database URL")
    args = parser.parse_args()
    key_file = None if "://" in args.db else Path(args.db).with_suffix(".key")
    asyncio.run(build(args.db))
    if key_file is not None:
        write_key(key_file)
    where = f" (key in {key_file})" if key_file else ""
    print(f"demo sessions written to {args.db}{where}; now: convstore {args.db} serve")


if __name__ == "__main__":
    main()
