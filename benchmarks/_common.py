"""Shared helpers of the benchmark scripts: sample items, database set-up, output.

Not part of convstore: the scripts import it as a sibling module (``python
benchmarks/<script>.py`` puts this directory on ``sys.path``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/bench"
MYSQL_URL = "mysql://root@127.0.0.1:3306/bench"

# Tables the benchmarks create (and drop before each measurement).
CONVSTORE_PREFIX = "convstore_"
SDK_TABLES = ("agent_sessions", "agent_messages")
BASELINE_PREFIX = "bench_"

_ASYNC_DRIVERS = {"postgresql": "asyncpg", "postgres": "asyncpg", "mysql": "asyncmy"}


# -- sample data ---------------------------------------------------------------------

_VOCABULARY = (
    "the order shipped yesterday and should arrive within three business days please "
    "check tracking number below if package does not show up by friday we can issue "
    "refund or send replacement customer asked about warranty coverage for battery "
    "which lasts two years from purchase date invoice attached summary of account "
    "balance next payment due on the first of month thanks for your patience"
)
_WORDS = tuple(_VOCABULARY.split())

_TOOLS = ("lookup_order", "get_weather", "search_docs", "create_ticket", "get_balance")


def _text(rng: random.Random, size: int) -> str:
    """Plausible English-like text of about ``size`` characters."""
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words).capitalize() + "."


def _hex_id(rng: random.Random, prefix: str) -> str:
    return f"{prefix}_{rng.getrandbits(96):024x}"


def make_items(count: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` conversation items in the Responses API shapes an agent run stores.

    A user message, an assistant message, a tool call and its output, in turn; about
    200 bytes of JSON each on average (see :func:`mean_json_size`).
    """
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    call_id = ""
    for i in range(count):
        kind = i % 4
        if kind == 0:
            items.append({"role": "user", "content": _text(rng, rng.randint(80, 210))})
        elif kind == 1:
            items.append(
                {
                    "id": _hex_id(rng, "msg"),
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {
                            "type": "output_text",
                            "text": _text(rng, rng.randint(20, 120)),
                            "annotations": [],
                        }
                    ],
                }
            )
        elif kind == 2:
            call_id = _hex_id(rng, "call")
            arguments = json.dumps({"query": _text(rng, rng.randint(10, 40)), "limit": 5})
            items.append(
                {
                    "id": _hex_id(rng, "fc"),
                    "type": "function_call",
                    "call_id": call_id,
                    "name": rng.choice(_TOOLS),
                    "arguments": arguments,
                    "status": "completed",
                }
            )
        else:
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": call_id,
                    "output": _text(rng, rng.randint(50, 160)),
                }
            )
    return items


def mean_json_size(items: Sequence[Any]) -> float:
    """Mean size in bytes of the items as compact JSON."""
    sizes = [len(json.dumps(item, separators=(",", ":")).encode()) for item in items]
    return statistics.fmean(sizes) if sizes else 0.0


# -- databases -----------------------------------------------------------------------


def async_url(url: str) -> str:
    """``url`` with the async driver SQLAlchemy needs (asyncpg, asyncmy) made explicit."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if parsed.drivername == backend and backend in _ASYNC_DRIVERS:
        canonical = "postgresql" if backend == "postgres" else backend
        parsed = parsed.set(drivername=f"{canonical}+{_ASYNC_DRIVERS[backend]}")
    return parsed.render_as_string(hide_password=False)


def plain_url(url: str) -> str:
    """``url`` without a driver name (the form asyncpg.connect takes)."""
    parsed = make_url(url)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=False)


def display_url(url: str) -> str:
    """``url`` with any password masked, for output."""
    return make_url(url).render_as_string(hide_password=True)


async def probe(url: str, *, within: float = 5.0) -> tuple[str | None, str]:
    """``(None, server version)`` if the database answers, else ``(reason, "")``."""
    try:
        engine = create_async_engine(async_url(url))
    except Exception as error:  # e.g. the driver is not installed
        return f"{type(error).__name__}: {error}", ""
    try:
        async with asyncio.timeout(within):
            async with engine.connect() as conn:
                version = (await conn.execute(text("SELECT version()"))).scalar_one()
        return None, str(version).split(" on ")[0]
    except TimeoutError:
        return f"no answer within {within:.0f} s", ""
    except Exception as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        return f"{type(error).__name__}: {reason[0] if reason else ''}", ""
    finally:
        await engine.dispose()


def _is_benchmark_table(name: str) -> bool:
    return name.startswith((CONVSTORE_PREFIX, BASELINE_PREFIX)) or name in SDK_TABLES


async def drop_benchmark_tables(engine: AsyncEngine) -> list[str]:
    """Drop every table a benchmark creates (convstore_*, the SDK's, bench_*)."""
    async with engine.begin() as conn:
        names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        doomed = sorted(name for name in names if _is_benchmark_table(name))
        if not doomed:
            return []
        quote = engine.dialect.identifier_preparer.quote
        listed = ", ".join(quote(name) for name in doomed)
        if engine.dialect.name == "postgresql":
            await conn.execute(text(f"DROP TABLE IF EXISTS {listed} CASCADE"))
        else:
            await conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            await conn.execute(text(f"DROP TABLE IF EXISTS {listed}"))
            await conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
    return doomed


async def drop_tables_at(url: str) -> list[str]:
    """:func:`drop_benchmark_tables` on a new engine for ``url``."""
    engine = create_async_engine(async_url(url))
    try:
        return await drop_benchmark_tables(engine)
    finally:
        await engine.dispose()


# -- environment ---------------------------------------------------------------------


def _version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(servers: dict[str, str]) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "convstore": _version_of("convstore"),
        "openai-agents": _version_of("openai-agents"),
        "sqlalchemy": _version_of("sqlalchemy"),
        "asyncpg": _version_of("asyncpg"),
        "asyncmy": _version_of("asyncmy"),
        "servers": servers,
    }


def describe_environment(env: dict[str, Any]) -> str:
    lines = [
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs; "
        f"SQLite {env['sqlite']}; convstore {env['convstore']}, "
        f"openai-agents {env['openai-agents']}, SQLAlchemy {env['sqlalchemy']}"
    ]
    lines += [f"{name}: {version}" for name, version in env["servers"].items()]
    return "\n".join(lines)


# -- output --------------------------------------------------------------------------


class Status:
    """A one-line progress note that erases itself, drawn only when stdout is a terminal."""

    def __init__(self, *, enabled: bool | None = None) -> None:
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self._shown = 0

    def show(self, message: str) -> None:
        if not self.enabled:
            return
        width = shutil.get_terminal_size().columns - 1
        message = message[:width]
        sys.stdout.write("\r" + message + " " * max(self._shown - len(message), 0))
        sys.stdout.flush()
        self._shown = len(message)

    def clear(self) -> None:
        if self.enabled and self._shown:
            sys.stdout.write("\r" + " " * self._shown + "\r")
            sys.stdout.flush()
            self._shown = 0


def say(status: Status, message: str, *, quiet: bool = False) -> None:
    """Print a line of the report (to stderr when stdout carries JSON)."""
    status.clear()
    print(message, file=sys.stderr if quiet else sys.stdout, flush=True)


def render_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()
) -> str:
    """A plain-text table; columns listed in ``right`` are right-aligned."""
    body = [list(row) for row in rows]
    aligned_right = set(right)
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(widths[i]) if i in aligned_right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in body)])


def fmt_rate(per_second: float, unit: str) -> str:
    return f"{per_second:,.0f} {unit}/s"


def fmt_seconds(seconds: float) -> str:
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:,.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x"


def benchmark_parser(description: str, backends: Sequence[str]) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick, --json, --backends and server URLs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a smaller, shorter run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--backends",
        default=",".join(backends),
        help=f"comma-separated, from {','.join(backends)} (default: all)",
    )
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="default: %(default)s")
    parser.add_argument("--mysql-url", default=MYSQL_URL, help="default: %(default)s")
    return parser


def parse_benchmark_args(
    parser: argparse.ArgumentParser, backends: Sequence[str], argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse, and turn --backends into the chosen names in ``backends`` order."""
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(backends))
    if unknown or not chosen:
        parser.error(f"unknown backends {unknown}; choose from {','.join(backends)}")
    args.backends = [b for b in backends if b in chosen]
    return args
