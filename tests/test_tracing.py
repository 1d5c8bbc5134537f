"""OpenTelemetry spans around session operations (sessions/_tracing.py), every backend.

The spans go to the SDK's in-memory exporter, installed as the global tracer provider
for this process (OpenTelemetry allows one; the spans other tests make cost little).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from eventstore import BranchError
from sessions import (
    AdvancedSQLAlchemySession,
    AdvancedSQLiteSession,
    BranchingSession,
    EncryptedSession,
    SQLiteSession,
    StoreSession,
)
from sessions._tracing import BRANCH_ID, DB_SYSTEM, EVENTS, ITEMS, SESSION_ID

from .conftest import Backend, make_engine

EXPORTER = InMemorySpanExporter()


def install_provider() -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    install_provider()
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def advanced(backend: Backend, session_id: str = "s") -> BranchingSession:
    if backend.name.startswith("sqlite"):
        return AdvancedSQLiteSession(session_id=session_id, db_path=backend.target)
    return AdvancedSQLAlchemySession(session_id, db_url=backend.target, create_tables=True)


@pytest.fixture
async def session(backend: Backend) -> AsyncIterator[BranchingSession]:
    made = advanced(backend)
    yield made
    await made.close()


def ours(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("convstore.")]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def version(session: StoreSession) -> int:
    info = await session.store.stream_info(session.session_id)
    return 0 if info is None else info.version


async def test_each_operation_is_one_span_with_its_counts(
    session: BranchingSession, spans: InMemorySpanExporter, backend: Backend
) -> None:
    await session.add_items([user("hello"), {"role": "assistant", "content": "hi"}])
    await session.add_items([user("again")])
    await session.get_items(limit=2)
    await session.pop_item()
    branch = await session.create_branch_from_turn(1, "retry")
    await session.switch_to_branch("main")
    await session.list_branches()
    await session.clear_session()
    found = ours(spans)
    assert [s.name for s in found] == [
        "convstore.add_items",
        "convstore.add_items",
        "convstore.get_items",
        "convstore.pop_item",
        "convstore.create_branch_from_turn",
        "convstore.switch_to_branch",
        "convstore.list_branches",
        "convstore.clear_session",
    ]
    system = {"postgres": "postgresql", "mysql": "mysql"}.get(backend.name, "sqlite")
    for span in found:
        assert span.attributes is not None
        assert span.attributes[SESSION_ID] == "s"
        assert span.attributes[DB_SYSTEM] == system
        assert span.status.status_code is StatusCode.UNSET
    attrs = [dict(s.attributes or {}) for s in found]
    assert (attrs[0][ITEMS], attrs[0][EVENTS], attrs[0][BRANCH_ID]) == (2, 1, "main")
    assert (attrs[2][ITEMS], attrs[3][ITEMS], attrs[3][EVENTS]) == (2, 1, 1)
    assert attrs[4][BRANCH_ID] == branch
    assert attrs[4][EVENTS] == 2
    assert attrs[5][BRANCH_ID] == "main"
    assert attrs[6]["convstore.branches"] == 2


async def test_event_counts_are_what_the_log_gained(
    session: BranchingSession, spans: InMemorySpanExporter
) -> None:
    await session.add_items([user("first")])  # opens the session (SessionStarted)
    operations = [
        lambda: session.add_items([user(f"m{n}") for n in range(250)]),
        lambda: session.add_items([]),
        session.pop_item,
        lambda: session.create_branch_from_turn(1),
        lambda: session.switch_to_branch("main"),
    ]
    for operation in operations:
        before = await version(session)
        spans.clear()
        await operation()
        (span,) = ours(spans)
        assert span.attributes is not None
        assert span.attributes[EVENTS] == await version(session) - before, span.name


async def test_nested_operations_make_one_span(
    session: BranchingSession, spans: InMemorySpanExporter
) -> None:
    await session.add_items([user("find me")])  # BranchingSession's add_items calls the base's
    await session.create_branch_from_content("find")  # finds the turn, then branches
    assert [s.name for s in ours(spans)] == [
        "convstore.add_items",
        "convstore.create_branch_from_content",
    ]


async def test_spans_nest_under_the_callers_span(
    session: BranchingSession, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("request") as parent:
        await session.add_items([user("hello")])
        await session.get_items()
    children = ours(spans)
    assert len(children) == 2
    for child in children:
        assert child.parent is not None
        assert child.parent.span_id == parent.get_span_context().span_id


async def test_a_refused_operation_is_an_error_span(
    session: BranchingSession, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(BranchError):
        await session.switch_to_branch("nope")
    (span,) = ours(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert EVENTS not in (span.attributes or {})


async def test_plain_sessions_are_traced_too(spans: InMemorySpanExporter) -> None:
    async with SQLiteSession("plain") as session:
        await session.add_items([user("hello")])
        assert await session.pop_item() is not None
        assert await session.pop_item() is None
    assert [(s.name, (s.attributes or {})[ITEMS]) for s in ours(spans)] == [
        ("convstore.add_items", 1),
        ("convstore.pop_item", 1),
        ("convstore.pop_item", 0),
    ]


async def test_encrypted_sessions_are_one_span_an_operation(
    backend: Backend, spans: InMemorySpanExporter
) -> None:
    session = EncryptedSession(
        session=advanced(backend, "secret"), encryption_key="k" * 32, ttl=None
    )
    await session.add_items([user("hello"), user("again")])
    assert len(await session.get_items()) == 2
    await session.create_branch_from_content("again")
    assert await session.pop_item() is not None
    await session.clear_session()
    await session.close()
    found = ours(spans)
    assert [s.name for s in found] == [
        "convstore.add_items",
        "convstore.get_items",
        "convstore.create_branch_from_content",
        "convstore.pop_item",
        "convstore.clear_session",
    ]
    attrs = [dict(s.attributes or {}) for s in found]
    assert all(a[SESSION_ID] == "secret" for a in attrs)
    assert (attrs[0][ITEMS], attrs[0][EVENTS], attrs[1][ITEMS]) == (2, 1, 2)
    assert attrs[2][BRANCH_ID] != "main"
    assert attrs[3][ITEMS] == 1


def test_without_opentelemetry_the_methods_are_the_plain_ones() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
        import inspect
        from sessions import StoreSession, BranchingSession
        for cls in (StoreSession, BranchingSession):
            for name in ("get_items", "add_items", "pop_item", "clear_session"):
                method = cls.__dict__[name]
                assert not hasattr(method, "__wrapped__"), (cls, name)
                assert inspect.getsourcefile(method).endswith(
                    ("base.py", "branching.py")
                ), (cls, name)
        print("plain")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "plain"


def test_with_opentelemetry_the_methods_are_wrapped() -> None:
    assert StoreSession.__dict__["add_items"].__wrapped__.__module__ == "sessions.base"
    assert BranchingSession.__dict__["get_items"].__wrapped__.__module__ == "sessions.branching"


async def test_sqlalchemy_instrumentation_sees_core_statements_not_the_hot_path(
    shared_backend: Backend,
) -> None:
    """What docs/observability.md says: the instrumentor hooks SQLAlchemy's
    cursor-execute events, which the prepared hot-path statements bypass."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = await make_engine(shared_backend)
    instrumentor = SQLAlchemyInstrumentor()
    # skip_dep_check: the instrumentor declares sqlalchemy < 2.1 and instruments
    # nothing on a newer one unless told to (docs/observability.md).
    instrumentor.instrument(
        engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )
    session = AdvancedSQLAlchemySession("s", engine=engine, create_tables=True)
    try:
        await session.add_items([user("warm up")])  # tables created, projections checked

        async def statements(operation: Any) -> list[str]:
            exporter.clear()
            await operation()
            return [
                str(s.attributes["db.statement"])
                for s in exporter.get_finished_spans()
                if s.attributes and "db.statement" in s.attributes
            ]

        assert await statements(lambda: session.add_items([user("hello")])) == []
        assert await statements(lambda: session.get_items(limit=20)) == []
        assert await statements(session.pop_item) == []
        # Creating a branch decides on reads made with Core (the branches table), and
        # the usage projection updates its tables with Core: those are seen; the
        # append of the events is not.
        branching = await statements(lambda: session.create_branch_from_turn(1))
        assert branching
        assert not any("convstore_events" in s for s in branching), branching
        log_reads = await statements(lambda: session.store.read_stream("s"))
        assert len(log_reads) == 1
        assert "convstore_events" in log_reads[0]
        assert await statements(session.list_branches) != []
    finally:
        await session.close()
        instrumentor.uninstrument()
        await engine.dispose()


def test_no_span_is_started_until_an_sdk_is_configured() -> None:
    code = textwrap.dedent(
        """
        import asyncio
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from sessions import SQLiteSession

        started = []
        proxy_start = trace.ProxyTracer.start_as_current_span
        def spy(self, *args, **kwargs):
            started.append(args[0])
            return proxy_start(self, *args, **kwargs)
        trace.ProxyTracer.start_as_current_span = spy

        async def main():
            session = SQLiteSession("s")
            await session.add_items([{"role": "user", "content": "hello"}])
            print(len(started))  # the API alone: no span started
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)  # after the import, as applications do
            await session.get_items()
            print(started, [s.name for s in exporter.get_finished_spans()])
            await session.close()

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "0",
        "['convstore.get_items'] ['convstore.get_items']",
    ]
