"""What the OpenTelemetry spans of sessions/_tracing.py cost per session operation.

Without ``opentelemetry-api`` the session classes are untouched (the methods are the
plain functions; tests/test_tracing.py checks it), so that case costs nothing by
construction. With it, each traced method keeps the plain one as ``__wrapped__``; this
script times both on the same session in the same process, in alternating batches (the
one that goes first changes every batch, so machine noise hits both alike), in two
set-ups, each in a fresh process:

* ``api``: the API installed, no SDK configured (the API's no-op tracer);
* ``sdk``: the SDK's TracerProvider with a SimpleSpanProcessor handing every span to an
  in-memory exporter (spans recorded and exported).

The operations are ``get_items(limit=20)`` on a 200-item session and ``add_items`` of
one item, on an in-memory SQLite session (the backend where an operation is cheapest,
so the tracing share is largest). Output: microseconds per operation, plain and
traced, as the median over the batches, and the difference; with the SDK, also what
one bare span with the same attributes costs (the SDK's own share).

    python benchmarks/tracing.py [--batches 30] [--ops 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import asyncio, json, statistics, sys, time
    mode, batches, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if mode == "sdk":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    from sessions import SQLiteSession, StoreSession

    async def timed(call, ops):
        start = time.perf_counter()
        for _ in range(ops):
            await call()
        return (time.perf_counter() - start) / ops * 1e6

    async def main():
        session = SQLiteSession("bench")
        await session.add_items([{"role": "user", "content": f"m{n}"} for n in range(200)])
        item = [{"role": "user", "content": "hello"}]
        plain_get = StoreSession.__dict__["get_items"].__wrapped__
        plain_add = StoreSession.__dict__["add_items"].__wrapped__
        calls = {
            "get_items": (
                lambda: plain_get(session, limit=20),
                lambda: session.get_items(limit=20),
            ),
            "add_items": (lambda: plain_add(session, item), lambda: session.add_items(item)),
        }
        found = {}
        for op, (plain, traced) in calls.items():
            await timed(plain, ops)  # warm up
            await timed(traced, ops)
            pairs = []
            for batch in range(batches):  # the one timed first changes every batch
                if batch % 2:
                    traced_us = await timed(traced, ops)
                    plain_us = await timed(plain, ops)
                else:
                    plain_us = await timed(plain, ops)
                    traced_us = await timed(traced, ops)
                pairs.append((plain_us, traced_us))
            found[op] = {
                "plain": statistics.median(p for p, _ in pairs),
                "traced": statistics.median(t for _, t in pairs),
                "difference": statistics.median(t - p for p, t in pairs),
            }
            if mode == "sdk":
                exporter.clear()
        await session.close()
        # For scale: one bare span with the same attributes, with nothing inside.
        tracer = trace.get_tracer("bench") if mode == "sdk" else None
        if tracer is not None:
            attributes = {"convstore.session.id": "bench", "db.system.name": "sqlite"}

            async def bare():
                with tracer.start_as_current_span("bare", attributes=attributes) as span:
                    span.set_attributes({"convstore.items": 20})

            runs = [await timed(bare, ops) for _ in range(batches)]
            found["bare span"] = {"plain": 0.0, "traced": statistics.median(runs)}
            found["bare span"]["difference"] = found["bare span"]["traced"]
        print(json.dumps(found))

    asyncio.run(main())
    """
)

MODES = ("api", "sdk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--ops", type=int, default=100)
    args = parser.parse_args()
    print(f"microseconds per operation, median of {args.batches} batches of {args.ops}")
    for mode in MODES:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(args.batches), str(args.ops)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for op, figures in json.loads(out).items():
            print(
                f"{mode:4} {op:10} plain {figures['plain']:7.1f}  traced "
                f"{figures['traced']:7.1f}  difference {figures['difference']:+6.1f}"
            )


if __name__ == "__main__":
    main()
