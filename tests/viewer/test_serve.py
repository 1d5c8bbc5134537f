"""``convstore DB serve`` as a user runs it: the address it prints, the refusals (another
address without --allow-remote, a database that cannot be opened: exit 2, one line),
the token with --key-file, live updates over server-sent events, and Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessions import SQLiteSession

from .conftest import demo

ROOT = Path(__file__).resolve().parents[2]
GUARD = 60.0  # seconds a started server may take to print its address (a hang guard)


def convstore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessions.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )


@contextmanager
def serving(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``convstore ARGS serve --port 0 ...``; yield the address it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sessions.cli", *args, "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        assert line.startswith("convstore viewer (read-only) on http://"), (
            line,
            process.stderr.read() if process.poll() is not None and process.stderr else "",
        )
        yield line.split(" on ", 1)[1].strip(), process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                process.wait(GUARD)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        assert process.stderr is not None
        errors = process.stderr.read()
        assert "Traceback" not in errors, errors
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("convstore: ")
    return done.stderr


def test_serve_prints_its_address_and_stops_on_ctrl_c(demo_db: Path) -> None:
    with serving(str(demo_db), "serve") as (url, process):
        assert url.startswith("http://127.0.0.1:")
        assert "token" not in url
        page = httpx.get(url, timeout=GUARD)
        assert page.status_code == 200
        assert "trip_planner" in page.text
    assert process.returncode == 0  # stopped by Ctrl-C: a clean shutdown


def test_serve_refuses_another_address_without_allow_remote(demo_db: Path) -> None:
    error = one_line_error(convstore(str(demo_db), "serve", "--host", "0.0.0.0"))
    assert "refusing to listen on 0.0.0.0" in error
    assert "--allow-remote" in error


def test_serve_with_allow_remote_warns_and_needs_a_token(demo_db: Path) -> None:
    with serving(str(demo_db), "serve", "--host", "0.0.0.0", "--allow-remote") as (url, p):
        assert "?token=" in url
        local = url.replace("0.0.0.0", "127.0.0.1")
        refused = httpx.get(local.split("?")[0] + "api/sessions", timeout=GUARD)
        assert refused.status_code == 401
        with httpx.Client(timeout=GUARD, follow_redirects=True) as client:
            assert client.get(local).status_code == 200  # the token becomes a cookie
            assert client.get(local.split("?")[0] + "api/sessions").status_code == 200
    assert p.stderr is not None


def test_serve_with_a_key_file_decrypts_behind_a_token(demo_db: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(demo.KEY + "\n")
    with serving(str(demo_db), "serve", "--key-file", str(key_file)) as (url, _):
        base, token = url.split("?token=")
        assert httpx.get(base + "c/medical_1", timeout=GUARD).status_code == 401
        headers = {"authorization": f"Bearer {token}"}
        page = httpx.get(base + "c/medical_1", headers=headers, timeout=GUARD)
        assert "blood pressure was 150/95" in page.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "serve"], "no database at"),
        (["{db}", "serve", "--key-file", "{missing}"], "cannot read the key file"),
        (["postgresql://nobody@127.0.0.1:1/none", "serve"], ""),
        (["{db}", "serve", "--port", "70000"], "--port must be from 0 to 65535"),
        (["{db}", "serve", "--key-file", "{short_key}"], "is too short: a passphrase needs"),
    ],
)
def test_serve_errors_are_one_line_and_exit_2(
    demo_db: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    short_key = tmp_path / "short.key"
    short_key.write_text("too short\n")
    filled = [a.format(db=demo_db, missing=tmp_path / "missing", short_key=short_key) for a in args]
    assert message in one_line_error(convstore(*filled))


def test_serve_reports_a_port_in_use(demo_db: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        error = one_line_error(convstore(str(demo_db), "serve", "--port", str(port)))
    assert f"cannot listen on 127.0.0.1:{port}" in error


async def first_change(client: httpx.AsyncClient, url: str, last_event_id: str) -> Any:
    """The first change a browser reconnecting with ``Last-Event-ID`` is sent."""
    headers = {"last-event-id": last_event_id}
    async with client.stream("GET", url + "live/notes?after=0", headers=headers) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                return json.loads(line[6:])
    return None


async def test_live_updates_over_server_sent_events(demo_db: Path) -> None:
    """A conversation's live stream reports each new event of the session, once, as
    another process's writes commit (here a session in this test process: the server
    is another process)."""
    with serving(str(demo_db), "serve") as (url, _):
        async with httpx.AsyncClient(timeout=GUARD) as client:
            changes: list[dict[str, object]] = []

            async def listen() -> None:
                async with client.stream("GET", url + "live/notes?after=7") as stream:
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    event = None
                    async for line in stream.aiter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event == "change":
                            changes.append(json.loads(line[6:]))
                            if len(changes) == 2:
                                return

            following = asyncio.ensure_future(listen())
            await asyncio.sleep(0.5)
            async with SQLiteSession("notes", demo_db) as session:
                await session.add_items([{"role": "user", "content": "live one"}])
                await session.pop_item()
            await asyncio.wait_for(following, GUARD)
            assert [(c["version"], c["type"]) for c in changes] == [
                (8, "ItemsAdded"),
                (9, "ItemPopped"),
            ]
            resumed = await asyncio.wait_for(first_change(client, url, "8"), GUARD)
            assert resumed == {"version": 9, "type": "ItemPopped", "position": resumed["position"]}
            missing = await client.get(url + "live/nobody")
            assert missing.status_code == 404
            bad = await client.get(url + "live/notes?after=x")
            assert bad.status_code == 400
