"""Child processes of tests/eventstore/test_subscribe.py.

Run as ``python -m tests.eventstore.subscriber_child COMMAND ...``:

``write TARGET PREFIX STREAMS COUNT``: append COUNT events (COUNT 0: forever), one at a
time, round-robin over STREAMS streams named PREFIX0, PREFIX1, ..., printing
``stream version position`` once each append has returned.

``read TARGET AFTER``: subscribe to the whole log after position AFTER and print
``position stream version`` for each event, as soon as it arrives (the parent kills it).
"""

from __future__ import annotations

import asyncio
import sys

sys.modules.setdefault("agents", None)  # type: ignore[arg-type]  # not needed: faster start

from eventstore import EventStore, ItemsAdded, encode_items  # noqa: E402


async def write(target: str, prefix: str, streams: int, count: int) -> None:
    async with EventStore(target, projectors=()) as store:
        n = 0
        while count == 0 or n < count:
            stream = f"{prefix}{n % streams}"
            result = await store.append(stream, [ItemsAdded(items=encode_items([n]))])
            print(stream, result.last_version, result.last_position, flush=True)
            n += 1


async def read(target: str, after: int) -> None:
    async with EventStore(target, projectors=()) as store:
        print("ready", flush=True)
        async with store.subscribe(after_position=after, page_size=5) as events:
            async for event in events:
                print(event.position, event.stream_id, event.version, flush=True)


def main() -> None:
    command, target, *rest = sys.argv[1:]
    if command == "write":
        prefix, streams, count = rest
        asyncio.run(write(target, prefix, int(streams), int(count)))
    elif command == "read":
        asyncio.run(read(target, int(rest[0])))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
