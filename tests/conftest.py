"""One conformance suite, every backend supplies only a factory.

``backend`` is parametrised over SQLite (memory and file), PostgreSQL and MariaDB.
The server backends run on the database their environment variable names:

* ``CONVSTORE_TEST_POSTGRES_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/test``)
* ``CONVSTORE_TEST_MYSQL_URL`` (e.g. ``mysql://root@127.0.0.1:3306/test``)

A variable that is not set is filled in, once per run, with the default URL above if a
server answers there (``detect_servers``); an empty one leaves that backend out. A
backend with no URL is skipped outside CI; under ``CI=true`` nothing is probed, and a
variable not set, or a server that cannot be reached, fails the tests. The end of the
run says which backends ran and how to enable the others.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import inspect, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from eventstore import EventStore, Projector
from eventstore.backends import open_runner

from .log_writes import RECORDER as LOG_WRITES

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


# -- server backends found by themselves, and the run's account of them --------------
#
# `make test` on a machine where PostgreSQL or MariaDB answers on its default port runs
# their suites with no configuration. pytest_configure probes each server whose
# variable is not set, once per run, and sets the variable to the default URL of one
# that answers, so every test and every subprocess uses the same database.
# pytest_terminal_summary then says which backends ran and how to enable the others.

DEFAULT_SERVER_URLS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
}
SERVER_LABELS = {"postgres": "PostgreSQL", "mysql": "MariaDB/MySQL"}
PROBE_TIMEOUT = 2.0  # seconds to connect, log in and run SELECT 1


@dataclass(frozen=True)
class ServerChoice:
    """How this run reaches one server backend."""

    name: str
    how: Literal["set", "found", "off", "absent", "ci"]
    url: str | None  # the database its tests use; None: they skip (fail under CI)
    reason: str = ""  # for "absent": why the default URL did not answer


SERVER_CHOICES: dict[str, ServerChoice] = {}


async def probe_server(url: str, seconds: float = PROBE_TIMEOUT) -> str | None:
    """None if the database at ``url`` answers within ``seconds``, else why not."""
    try:
        runner = open_runner(url)  # the URL with its async driver
    except Exception as error:  # a missing driver names its extra
        return f"{type(error).__name__}: {error}"
    engine = create_async_engine(runner.engine.url, poolclass=NullPool)  # type: ignore[attr-defined]
    await runner.close()
    try:
        async with asyncio.timeout(seconds), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except TimeoutError:
        return f"no answer within {seconds:g} s"
    except Exception as error:  # refused, unknown database, authentication...
        cause: BaseException = error
        while cause.__cause__ is not None:  # the driver's own error, under SQLAlchemy's
            cause = cause.__cause__
        first_line = (str(cause).strip().splitlines() or [""])[0]
        return f"{type(cause).__name__}: {first_line}"[:200]
    finally:
        await engine.dispose()
    return None


def detect_servers(
    environ: MutableMapping[str, str],
    *,
    defaults: dict[str, str] = DEFAULT_SERVER_URLS,
    in_ci: bool = IN_CI,
    timeout: float = PROBE_TIMEOUT,
) -> dict[str, ServerChoice]:
    """Each server backend's URL: its variable in ``environ`` if set (empty: off), else
    (outside CI) its default URL if a server answers there, which is then written to
    ``environ``. The servers are probed at once, so the run waits ``timeout`` at most."""
    choices: dict[str, ServerChoice] = {}
    to_probe: list[str] = []
    for name, env in SERVER_ENV.items():
        if env in environ:
            url = environ[env]
            choices[name] = ServerChoice(name, "set" if url else "off", url or None)
        elif in_ci:
            choices[name] = ServerChoice(name, "ci", None)
        else:
            to_probe.append(name)

    async def probe_all() -> list[str | None]:
        return await asyncio.gather(*(probe_server(defaults[n], timeout) for n in to_probe))

    for name, reason in zip(to_probe, asyncio.run(probe_all()) if to_probe else [], strict=True):
        url = defaults[name]
        if reason is None:
            environ[SERVER_ENV[name]] = url
            choices[name] = ServerChoice(name, "found", url)
        else:
            choices[name] = ServerChoice(name, "absent", None, reason)
    return choices


def pytest_configure(config: pytest.Config) -> None:
    SERVER_CHOICES.update(detect_servers(os.environ))
    LOG_WRITES.install()


@pytest.fixture(autouse=True)
def _release_sqlite_files() -> Iterator[None]:
    """The store of a SQLite file outlives its last session for a while
    (sessions/sqlite.py): each test leaves none behind for the next."""
    yield
    from sessions import release_sqlite_files

    release_sqlite_files()


# -- guarantee 8: only eventstore writes the log's tables (tests/log_writes.py) --------


def pytest_runtest_setup(item: pytest.Item) -> None:
    LOG_WRITES.current_test = item.nodeid


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a module outside eventstore wrote a log table."""
    if LOG_WRITES.violations and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def shown(url: str) -> str:
    """``url`` without its password, for the terminal."""
    return make_url(url).render_as_string(hide_password=True)


def summary_lines(choices: dict[str, ServerChoice], counts: dict[str, dict[str, int]]) -> list[str]:
    """One line per backend: how many of its tests passed, failed and were skipped, on
    what database, and how to enable it. ``counts`` maps a backend to its outcomes."""

    def tally(backend: str) -> str:
        done = counts.get(backend, {})
        passed, failed, skipped = (done.get(k, 0) for k in ("passed", "failed", "skipped"))
        if not passed + failed + skipped:
            return "none selected"
        return (
            f"{passed} passed, " + (f"{failed} failed, " if failed else "") + f"{skipped} skipped"
        )

    lines = [f"SQLite (memory and file) and the backend-free tests: {tally('sqlite')}"]
    for name, env in SERVER_ENV.items():
        choice = choices.get(name) or ServerChoice(name, "absent", None, "not probed")
        label, default = SERVER_LABELS[name], DEFAULT_SERVER_URLS[name]
        if choice.url is not None:
            source = "found on its default port" if choice.how == "found" else f"from {env}"
            lines.append(f"{label}: {tally(name)}, on {shown(choice.url)} ({source})")
            continue
        if choice.how == "off":
            why = f"{env} is set but empty"
            enable = f"unset it to use a server at {default}, or set it to a database URL"
        elif choice.how == "ci":
            why = f"CI=true and {env} is not set (under CI nothing is probed)"
            enable = f"set {env} to a database URL"
        else:
            why = f"nothing answered at {default} ({choice.reason})"
            enable = (
                f"start {label} there (the database must exist), or set {env} to a database URL"
            )
        lines.append(f"{label}: {tally(name)}: {why}. To run them: {enable}")
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Which backends ran, which were skipped, and how to enable them."""
    rank = {"passed": 0, "skipped": 1, "failed": 2}  # a test's worst phase is its outcome
    outcomes: dict[str, str] = {}
    backends: dict[str, str] = {}
    for key in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        outcome = {"error": "failed", "xfailed": "passed", "xpassed": "passed"}.get(key, key)
        for report in terminalreporter.stats.get(key, []):
            nodeid = getattr(report, "nodeid", None)
            keywords = getattr(report, "keywords", None)
            if nodeid is None or keywords is None:
                continue
            backends[nodeid] = next((n for n in SERVER_ENV if n in keywords), "sqlite")
            if rank[outcome] >= rank[outcomes.get(nodeid, "passed")]:
                outcomes[nodeid] = outcome
    counts: dict[str, dict[str, int]] = {}
    for nodeid, outcome in outcomes.items():
        of_backend = counts.setdefault(backends[nodeid], {})
        of_backend[outcome] = of_backend.get(outcome, 0) + 1
    terminalreporter.write_sep("=", "convstore backends")
    for line in summary_lines(SERVER_CHOICES, counts):
        terminalreporter.write_line(line)
    if LOG_WRITES.violations:
        title = "writes to the log's tables from outside eventstore (the run fails)"
        terminalreporter.write_sep("=", title, red=True)
        for violation in dict.fromkeys(LOG_WRITES.violations):
            terminalreporter.write_line(str(violation))


def server_url(name: str) -> str:
    """The URL of a server backend, or skip (fail under CI) saying how to enable it."""
    env = SERVER_ENV[name]
    url = os.environ.get(env)
    if not url:
        choice = SERVER_CHOICES.get(name)
        absent = (
            f" (nothing answered at {DEFAULT_SERVER_URLS[name]})"
            if choice and choice.reason
            else ""
        )
        message = f"{name} tests are off{absent}: set {env} to a database URL to run them"
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
