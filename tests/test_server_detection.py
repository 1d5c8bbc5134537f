"""tests/conftest.py finds the PostgreSQL and MariaDB servers by itself and says so.

The probe is pointed at a closed port, at a database that does not exist and at the
database this run's server tests use (which a run finds or is given); the run's own
summary is checked in a pytest of its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url

from .conftest import (
    DEFAULT_SERVER_URLS,
    SERVER_ENV,
    ServerChoice,
    detect_servers,
    probe_server,
    server_url,
    summary_lines,
)

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def closed_urls() -> dict[str, str]:
    port = closed_port()
    return {
        "postgres": f"postgresql://postgres@127.0.0.1:{port}/convstore",
        "mysql": f"mysql://root@127.0.0.1:{port}/convstore",
    }


def test_a_closed_port_is_reported_and_leaves_the_backends_off() -> None:
    environ: dict[str, str] = {}
    choices = detect_servers(environ, defaults=closed_urls(), in_ci=False, timeout=5)
    assert environ == {}  # nothing to use: the variables stay unset, the tests skip
    for name in SERVER_ENV:
        assert choices[name].how == "absent"
        assert choices[name].url is None
        assert "Connect call failed" in choices[name].reason, choices[name].reason


def test_a_set_variable_is_used_as_it_is_and_an_empty_one_turns_the_backend_off() -> None:
    environ = {"CONVSTORE_TEST_POSTGRES_URL": "postgresql://app@db.example/app"}
    environ["CONVSTORE_TEST_MYSQL_URL"] = ""
    choices = detect_servers(environ, defaults=closed_urls(), in_ci=False)
    assert choices["postgres"] == ServerChoice("postgres", "set", "postgresql://app@db.example/app")
    assert choices["mysql"] == ServerChoice("mysql", "off", None)
    assert environ["CONVSTORE_TEST_MYSQL_URL"] == ""


def test_nothing_is_probed_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    probed: list[str] = []

    async def recording_probe(url: str, seconds: float = 0) -> str | None:
        probed.append(url)
        return None

    monkeypatch.setattr("tests.conftest.probe_server", recording_probe)
    environ: dict[str, str] = {}
    choices = detect_servers(environ, defaults=closed_urls(), in_ci=True)
    assert probed == []
    assert environ == {}
    assert {c.how for c in choices.values()} == {"ci"}


def other_database(url: str) -> str:
    return make_url(url).set(database="convstore_no_such_database").render_as_string(False)


@pytest.mark.postgres
@pytest.mark.mysql
def test_a_server_that_answers_is_used_and_a_missing_database_is_not() -> None:
    """The probe pointed at the databases this run's server tests use (the variables
    given, or the defaults the run found)."""
    reachable = {name: server_url(name) for name in SERVER_ENV}
    environ: dict[str, str] = {}
    choices = detect_servers(environ, defaults=reachable, in_ci=False)
    for name, env in SERVER_ENV.items():
        assert choices[name] == ServerChoice(name, "found", reachable[name])
        assert environ[env] == reachable[name]

    missing = {name: other_database(url) for name, url in reachable.items()}
    environ = {}
    choices = detect_servers(environ, defaults=missing, in_ci=False)
    assert environ == {}
    assert "does not exist" in choices["postgres"].reason
    assert "Unknown database" in choices["mysql"].reason


async def test_a_missing_driver_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as in an install without the extra
    reason = await probe_server("postgresql://postgres@127.0.0.1:5432/convstore")
    assert reason is not None
    assert "postgres" in reason  # the extra to install


def test_the_summary_says_what_ran_and_how_to_enable_the_rest() -> None:
    choices = {
        "postgres": ServerChoice("postgres", "found", DEFAULT_SERVER_URLS["postgres"]),
        "mysql": ServerChoice("mysql", "absent", None, "ConnectionRefusedError: refused"),
    }
    counts = {"sqlite": {"passed": 900, "skipped": 3}, "postgres": {"passed": 398, "failed": 2}}
    counts["mysql"] = {"skipped": 380}
    sqlite, postgres, mysql = summary_lines(choices, counts)
    assert sqlite == "SQLite (memory and file) and the backend-free tests: 900 passed, 3 skipped"
    assert postgres == (
        "PostgreSQL: 398 passed, 2 failed, 0 skipped, on postgresql://postgres@127.0.0.1:5432/test "
        "(found on its default port)"
    )
    assert mysql.startswith("MariaDB/MySQL: 0 passed, 380 skipped: nothing answered at ")
    assert "mysql://root@127.0.0.1:3306/test (ConnectionRefusedError: refused)" in mysql
    assert mysql.endswith("or set CONVSTORE_TEST_MYSQL_URL to a database URL")

    given = {"postgres": ServerChoice("postgres", "set", "postgresql://app:secret@db/app")}
    lines = summary_lines(given | {"mysql": ServerChoice("mysql", "off", None)}, {})
    assert "secret" not in lines[1]  # a password is never printed
    assert lines[1] == (
        "PostgreSQL: none selected, on postgresql://app:***@db/app "
        "(from CONVSTORE_TEST_POSTGRES_URL)"
    )
    assert "CONVSTORE_TEST_MYSQL_URL is set but empty. To run them: unset it" in lines[2]
    ci = {name: ServerChoice(name, "ci", None) for name in SERVER_ENV}
    failed = summary_lines(ci, {"mysql": {"failed": 31}})[2]
    assert failed == (
        "MariaDB/MySQL: 0 passed, 31 failed, 0 skipped: CI=true and CONVSTORE_TEST_MYSQL_URL "
        "is not set (under CI nothing is probed). To run them: set CONVSTORE_TEST_MYSQL_URL "
        "to a database URL"
    )


@pytest.mark.postgres
def test_a_run_ends_with_the_backends_summary(tmp_path: Path) -> None:
    """A pytest of its own: PostgreSQL given by its variable, MariaDB turned off."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["CONVSTORE_TEST_POSTGRES_URL"] = server_url("postgres")
    env["CONVSTORE_TEST_MYSQL_URL"] = ""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider"),
            *("tests/eventstore/test_store.py", "-k", "async_with_closes"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.split(" convstore backends ", 1)[1].splitlines()[1:4]
    shown = make_url(server_url("postgres")).render_as_string(hide_password=True)
    assert summary == [
        "SQLite (memory and file) and the backend-free tests: 2 passed, 0 skipped",
        f"PostgreSQL: 1 passed, 0 skipped, on {shown} (from CONVSTORE_TEST_POSTGRES_URL)",
        "MariaDB/MySQL: 0 passed, 1 skipped: CONVSTORE_TEST_MYSQL_URL is set but empty. "
        "To run them: unset it to use a server at mysql://root@127.0.0.1:3306/test, or set "
        "it to a database URL",
    ]
