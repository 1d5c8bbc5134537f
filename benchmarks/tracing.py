"""What the OpenTelemetry spans of sessions/_tracing.py cost per session operation.

Three set-ups, each in a fresh process, run in turn several times:

* ``none``: as if ``opentelemetry-api`` were not installed (the classes are untouched);
* ``api``: the API installed, no SDK configured (the API's no-op tracer);
* ``sdk``: the SDK's TracerProvider with a BatchSpanProcessor (spans recorded and
  handed to an in-memory exporter).

Each process times ``get_items(limit=20)`` on a 200-item session and ``add_items`` of
one item, on an in-memory SQLite session (the backend where an operation is cheapest,
so the tracing share is largest), and prints microseconds per operation.

    python benchmarks/tracing.py [--runs 5] [--ops 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    mode, ops = sys.argv[1], int(sys.argv[2])
    if mode == "none":
        sys.modules["opentelemetry"] = None
    if mode == "sdk":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
        trace.set_tracer_provider(provider)
    from sessions import SQLiteSession

    async def main():
        session = SQLiteSession("bench")
        await session.add_items([{"role": "user", "content": f"m{n}"} for n in range(200)])
        for _ in range(200):  # warm up
            await session.get_items(limit=20)
        start = time.perf_counter()
        for _ in range(ops):
            await session.get_items(limit=20)
        read = (time.perf_counter() - start) / ops * 1e6
        item = [{"role": "user", "content": "hello"}]
        start = time.perf_counter()
        for _ in range(ops):
            await session.add_items(item)
        write = (time.perf_counter() - start) / ops * 1e6
        await session.close()
        print(json.dumps({"get_items": read, "add_items": write}))

    asyncio.run(main())
    """
)

MODES = ("none", "api", "sdk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ops", type=int, default=2000)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {m: {} for m in MODES}
    for _ in range(args.runs):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode, str(args.ops)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for op, micros in json.loads(out).items():
                results[mode].setdefault(op, []).append(micros)
    print(f"microseconds per operation, {args.runs} runs of {args.ops} (min-max, median)")
    for op in ("get_items", "add_items"):
        base = statistics.median(results["none"][op])
        for mode in MODES:
            values = results[mode][op]
            median = statistics.median(values)
            print(
                f"{op:10} {mode:5} {min(values):7.1f}-{max(values):7.1f}  "
                f"median {median:7.1f}  ({median - base:+.1f} vs none)"
            )


if __name__ == "__main__":
    main()
