"""One conformance suite, every backend supplies only a factory.

``backend`` is parametrised over SQLite (memory and file), PostgreSQL and MariaDB.
The server backends run when their environment variable names a database:

* ``CONVSTORE_TEST_POSTGRES_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/test``)
* ``CONVSTORE_TEST_MYSQL_URL`` (e.g. ``mysql://root@127.0.0.1:3306/test``)

Outside CI a missing variable skips those tests with that message; under ``CI=true``
it fails them, and so does a server that cannot be reached.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from eventstore import EventStore, Projector
from eventstore.backends import open_runner

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The Runner tests are offline: no traces to export.
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

SERVER_ENV = {
    "postgres": "CONVSTORE_TEST_POSTGRES_URL",
    "mysql": "CONVSTORE_TEST_MYSQL_URL",
}


@dataclass
class Backend:
    """How a test reaches one database: ``target`` is a SQLite path or a URL."""

    name: str
    target: str
    shared: bool  # other processes can open ``target`` and see the same data
    _stores: list[EventStore] = field(default_factory=list)

    def store(self, *, projectors: tuple[Projector, ...] = (), **kwargs: Any) -> EventStore:
        """A store on this database, closed when the test ends."""
        store = EventStore(self.target, projectors=projectors, **kwargs)
        self._stores.append(store)
        return store

    async def close(self) -> None:
        for store in self._stores:
            await store.close()


def server_url(name: str) -> str:
    """The URL of a server backend, or skip (fail under CI) saying how to enable it."""
    env = SERVER_ENV[name]
    url = os.environ.get(env)
    if not url:
        message = f"{name} tests are off: set {env} to a database URL to run them"
        if IN_CI:
            pytest.fail(f"CI=true but {env} is not set ({message})")
        pytest.skip(message)
    return url


async def reset_server_database(url: str) -> None:
    """Drop every convstore table so each test starts from an empty database."""
    runner = open_runner(url)  # normalises the URL to the async driver
    engine = create_async_engine(runner.engine.url)  # type: ignore[attr-defined]
    await runner.close()
    try:
        async with engine.begin() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
            for name in names:
                if name.startswith("convstore_"):
                    await conn.execute(text(f"DROP TABLE {name}"))
    except Exception as error:  # the server is down or refuses us: never a skip here
        pytest.fail(f"cannot reach the test database {url}: {error}")
    finally:
        await engine.dispose()


BACKENDS = [
    pytest.param("sqlite-memory", id="sqlite-memory"),
    pytest.param("sqlite-file", id="sqlite-file"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]


async def make_backend(name: str, tmp_path: Path) -> Backend:
    if name == "sqlite-memory":
        return Backend(name, ":memory:", shared=False)
    if name == "sqlite-file":
        return Backend(name, str(tmp_path / "convstore.db"), shared=True)
    url = server_url(name)
    await reset_server_database(url)
    return Backend(name, url, shared=True)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each database convstore supports, empty."""
    made = await make_backend(request.param, tmp_path)
    yield made
    await made.close()


@pytest.fixture(
    params=[p for p in BACKENDS if p.id != "sqlite-memory"],
)
async def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The databases several OS processes can open at once (not ``:memory:``)."""
    made = await make_backend(request.param, tmp_path)
    yield made
    await made.close()


async def make_engine(backend: Backend) -> AsyncEngine:
    """An async engine of the caller's own on the backend's database."""
    if backend.name == "sqlite-memory":
        return create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    if backend.name == "sqlite-file":
        return create_async_engine(f"sqlite+aiosqlite:///{backend.target}")
    runner = open_runner(backend.target)  # the URL with its async driver
    url = runner.engine.url  # type: ignore[attr-defined]
    await runner.close()
    return create_async_engine(url)


StoreFactory = Callable[..., EventStore]
