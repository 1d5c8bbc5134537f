"""examples/fastapi_app.py driven through httpx, with its lifespan run, on every
database several processes can share (a SQLite file, PostgreSQL, MariaDB)."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from agents.testing import ScriptedModel, assistant_message
from fastapi import FastAPI

from eventstore import EventStore, SchemaError
from sessions import AdvancedSQLAlchemySession
from sessions.transfer import export_events, import_events

from .conftest import Backend

APP_PATH = Path(__file__).resolve().parents[1] / "examples" / "fastapi_app.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convstore_fastapi_example", APP_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


example = load_example()


def database_url(backend: Backend) -> str:
    if backend.name == "sqlite-file":
        return f"sqlite:///{backend.target}"
    return backend.target


@pytest.fixture
async def app(shared_backend: Backend, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FastAPI]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the offline model answers
    made: FastAPI = example.create_app(database_url(shared_backend))
    async with made.router.lifespan_context(made):
        yield made


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://chat") as made:
        yield made


async def say(client: httpx.AsyncClient, user: str, message: str) -> str:
    response = await client.post(f"/users/{user}/chat", json={"message": message})
    assert response.status_code == 200, response.text
    reply: str = response.json()["reply"]
    return reply


def texts(items: list[dict[str, Any]]) -> list[str]:
    return [example._text(item) for item in items]


async def test_the_lifespan_creates_the_tables_and_disposes_the_engine(
    shared_backend: Backend,
) -> None:
    made: FastAPI = example.create_app(database_url(shared_backend))
    async with made.router.lifespan_context(made):
        engine = made.state.engine
        # A session with create_tables=False (the default) works on the new database.
        session = AdvancedSQLAlchemySession("probe", engine=engine)
        await session.add_items([{"role": "user", "content": "hi"}])
        assert texts(await session.get_items()) == ["hi"]
        await session.close()
    # Disposed: the pool holds no connection after shutdown.
    assert engine.pool.checkedout() == 0
    assert engine.pool.checkedin() == 0


async def test_chat_keeps_each_users_history(client: httpx.AsyncClient) -> None:
    assert await say(client, "ada", "hello") == "Turn 1: you said 'hello'"
    assert await say(client, "ada", "again") == "Turn 2: you said 'again'"
    assert await say(client, "bob", "hi") == "Turn 1: you said 'hi'"
    page = (await client.get("/users/ada/history")).json()
    assert texts(page["items"]) == [
        "hello",
        "Turn 1: you said 'hello'",
        "again",
        "Turn 2: you said 'again'",
    ]
    assert page["next_offset"] is None


async def test_history_pages_back_from_the_newest(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await say(client, "ada", f"m{n}")  # 10 items: m0, reply, m1, reply, ...
    first = (await client.get("/users/ada/history", params={"limit": 4})).json()
    assert texts(first["items"])[0] == "m3"
    assert len(first["items"]) == 4
    assert first["next_offset"] == 4
    second = (await client.get("/users/ada/history", params={"limit": 4, "offset": 4})).json()
    assert texts(second["items"])[0] == "m1"
    assert second["next_offset"] == 8
    last = (await client.get("/users/ada/history", params={"limit": 4, "offset": 8})).json()
    assert texts(last["items"]) == ["m0", "Turn 1: you said 'm0'"]
    assert last["next_offset"] is None
    everything = (await client.get("/users/ada/history", params={"limit": 100})).json()
    assert everything["items"] == last["items"] + second["items"] + first["items"]
    refused = await client.get("/users/ada/history", params={"limit": 0})
    assert refused.status_code == 422


async def test_undo_pops_the_newest_item(client: httpx.AsyncClient) -> None:
    assert (await client.post("/users/ada/undo")).status_code == 404
    await say(client, "ada", "hello")
    removed = (await client.post("/users/ada/undo")).json()["removed"]
    assert texts([removed]) == ["Turn 1: you said 'hello'"]
    page = (await client.get("/users/ada/history")).json()
    assert texts(page["items"]) == ["hello"]


async def test_branch_from_a_turn_and_switch_back(client: httpx.AsyncClient) -> None:
    await say(client, "ada", "first")
    await say(client, "ada", "second")
    created = await client.post("/users/ada/branches", json={"from_turn": 2, "name": "retry"})
    assert created.status_code == 201
    assert created.json() == {"branch_id": "retry"}
    # The new branch holds turn 1 only; the model sees that history.
    assert await say(client, "ada", "second, again") == "Turn 2: you said 'second, again'"
    listed = (await client.get("/users/ada/branches")).json()
    assert [(b["branch_id"], b["message_count"], b["is_current"]) for b in listed] == [
        ("main", 4, False),
        ("retry", 4, True),
    ]
    switched = await client.put("/users/ada/branch", json={"branch_id": "main"})
    assert switched.json() == {"branch_id": "main"}
    assert texts((await client.get("/users/ada/history")).json()["items"])[2] == "second"
    retry = (await client.get("/users/ada/history", params={"branch": "retry"})).json()
    assert texts(retry["items"])[2] == "second, again"

    assert (await client.put("/users/ada/branch", json={"branch_id": "nope"})).status_code == 404
    missing = await client.post("/users/ada/branches", json={"from_turn": 9})
    assert missing.status_code == 404
    taken = await client.post("/users/ada/branches", json={"from_turn": 1, "name": "retry"})
    assert taken.status_code == 409
    unknown = await client.get("/users/ada/history", params={"branch": "nope"})
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "user 'ada' has no branch 'nope'"}
    assert (await client.get("/users/ada/history", params={"branch": ""})).status_code == 422


async def test_an_empty_branch_is_an_empty_page_not_a_404(client: httpx.AsyncClient) -> None:
    await say(client, "ada", "hello")
    await client.post("/users/ada/branches", json={"from_turn": 1, "name": "fresh"})
    for params in ({"branch": "fresh"}, {}):  # named, and as the current branch
        page = await client.get("/users/ada/history", params=params)
        assert page.status_code == 200, page.text
        assert page.json()["items"] == []
    await client.put("/users/ada/branch", json={"branch_id": "main"})
    for _ in range(2):
        await client.post("/users/ada/undo")
    emptied = await client.get("/users/ada/history", params={"branch": "main"})
    assert emptied.status_code == 200
    assert emptied.json()["items"] == []


async def test_export_is_the_session_log_as_json_lines(
    client: httpx.AsyncClient, app: FastAPI, tmp_path: Path
) -> None:
    assert (await client.get("/users/ada/export")).status_code == 404
    await say(client, "ada", "hello")
    await client.post("/users/ada/undo")
    await say(client, "bob", "hi")  # another user's events are not exported
    response = await client.get("/users/ada/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    store = EventStore(app.state.engine, create_tables=False)
    try:
        log = await store.read_stream("ada")
    finally:
        await store.close()
    assert [(e["stream_id"], e["version"], e["event_type"], e["hash"]) for e in lines] == [
        ("ada", e.version, e.event_type, e.hash) for e in log
    ]
    assert lines[-1]["event_type"] == "ItemPopped"

    # The file is convstore's export format: another database imports it, and exports
    # the same bytes.
    copy = EventStore(str(tmp_path / "copy.db"))
    try:
        result = await import_events(copy, io.BytesIO(response.content))
        assert result.imported == len(lines)
        again = io.BytesIO()
        await export_events(copy, again, session="ada")
    finally:
        await copy.close()
    assert again.getvalue() == response.content


async def test_export_spills_a_long_conversation_to_a_file(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(example, "SPOOL_IN_MEMORY", 256)
    monkeypatch.setattr(example, "CHUNK", 100)
    for n in range(3):
        await say(client, "ada", f"m{n}")
    lines = (await client.get("/users/ada/export")).text.splitlines()
    versions = [json.loads(line)["version"] for line in lines]
    assert versions == list(range(1, len(versions) + 1))
    assert len(versions) >= 4  # SessionStarted + at least one append per turn


async def test_usage_counts_each_run(client: httpx.AsyncClient) -> None:
    await say(client, "ada", "hello there")  # offline model: 2 words in, 6 out
    await say(client, "ada", "again")
    stats = (await client.get("/users/ada/usage")).json()
    assert stats["session"]["requests"] == 2
    assert stats["session"]["turns"] == 2
    assert stats["branch_id"] == "main"
    assert [t["turn"] for t in stats["turns"]] == [1, 2]
    first = stats["turns"][0]
    assert (first["input_tokens"], first["output_tokens"], first["total_tokens"]) == (2, 6, 8)
    # A branch before turn 2 inherits turn 1's usage only; the session keeps both.
    await client.post("/users/ada/branches", json={"from_turn": 2, "name": "b"})
    branched = (await client.get("/users/ada/usage")).json()
    assert branched["branch"]["requests"] == 1
    assert branched["session"]["requests"] == 2


ENDPOINTS = [
    ("POST", "chat", {"message": "hi"}),
    ("GET", "history", None),
    ("POST", "undo", None),
    ("GET", "branches", None),
    ("POST", "branches", {"from_turn": 1}),
    ("PUT", "branch", {"branch_id": "main"}),
    ("GET", "usage", None),
    ("GET", "export", None),
]


async def test_a_user_without_a_conversation_is_a_404_everywhere_but_chat(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await say(client, "ada", "hello")  # another user's conversation changes nothing
    for method, path, body in ENDPOINTS:
        if path == "chat":
            continue
        response = await client.request(method, f"/users/nobody/{path}", json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"detail": "no conversation for 'nobody'"}, (method, path)
    # Nothing was written for them: switching to main or undoing started no session.
    store = EventStore(app.state.engine, create_tables=False)
    try:
        assert await store.stream_info("nobody") is None
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("user", "rule"),
    [
        ("u" * 256, "String should have at most 255 characters"),  # convstore's limit
        ("%20", "String should match pattern"),  # a blank id
        ("a%20b", "String should match pattern"),
        ("a%00b", "String should match pattern"),  # a control character
        ("a%0Ab", "String should match pattern"),
        ("a:b", "String should match pattern"),
    ],
)
async def test_bad_user_ids_are_refused_with_the_rule_by_every_endpoint(
    client: httpx.AsyncClient, app: FastAPI, user: str, rule: str
) -> None:
    for method, path, body in ENDPOINTS:
        response = await client.request(method, f"/users/{user}/{path}", json=body)
        assert response.status_code == 422, (method, path, response.text)
        [error] = response.json()["detail"]  # FastAPI's validation error shape
        assert error["loc"] == ["path", "user"]
        assert error["msg"].startswith(rule), error
    store = EventStore(app.state.engine, create_tables=False)
    try:
        assert await store.read_all() == []  # nothing was written
    finally:
        await store.close()


async def test_good_user_ids_are_accepted(client: httpx.AsyncClient) -> None:
    for user in ["ada", "u" * 255, "ada.lovelace@example.com", "zoë_2+test", "a-b"]:
        assert await say(client, user, "hi") == "Turn 1: you said 'hi'"
        page = (await client.get(f"/users/{user}/history")).json()
        assert texts(page["items"]) == ["hi", "Turn 1: you said 'hi'"]


async def test_bad_input_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    assert (await client.post("/users/ada/chat", json={"message": ""})).status_code == 422
    assert (await client.get("/users/ada/export")).status_code == 404
    await say(client, "ada", "hello")
    store = EventStore(app.state.engine, create_tables=False)
    try:
        before = await store.read_stream("ada")
        assert (await client.post("/users/ada/chat", json={"message": ""})).status_code == 422
        refused = await client.post("/users/ada/branches", json={"from_turn": 0})
        assert refused.status_code == 422
        assert (await client.get("/users/ada/history", params={"limit": 0})).status_code == 422
        assert await store.read_stream("ada") == before
    finally:
        await store.close()


async def test_concurrent_requests_for_one_user_lose_and_duplicate_nothing(
    client: httpx.AsyncClient,
) -> None:
    messages = [f"message {n}" for n in range(12)]
    replies = await asyncio.gather(*(say(client, "ada", m) for m in messages))
    assert all(reply.endswith(f"{m!r}") for reply, m in zip(replies, messages, strict=True))
    items = (await client.get("/users/ada/history", params={"limit": 1000})).json()["items"]
    said = texts(items)
    assert len(said) == 2 * len(messages)
    assert sorted(t for t in said if t.startswith("message")) == sorted(messages)
    assert sorted(t for t in said if t.startswith("Turn")) == sorted(replies)
    # Concurrent undos never remove the same item twice.
    removed = [
        r.json()["removed"]
        for r in await asyncio.gather(*(client.post("/users/ada/undo") for _ in range(6)))
    ]
    assert len({json.dumps(item, sort_keys=True) for item in removed}) == 6
    after = (await client.get("/users/ada/history", params={"limit": 1000})).json()["items"]
    assert after == items[:-6]


DOCS_PAGE = APP_PATH.parents[1] / "docs" / "fastapi.md"


def guides_snippet(*, with_added_lines: bool) -> str:
    """The Sessions guide's FastAPI snippet from docs/fastapi.md's diff block, as the
    guide has it or with the lines the page adds (``+``)."""
    block = DOCS_PAGE.read_text().split("```diff\n", 1)[1].split("```", 1)[0]
    kept = [
        line[1:]
        for line in block.splitlines()
        if line.startswith(" ") or (with_added_lines and line.startswith("+"))
    ]
    return "\n".join(kept)


async def run_guides_snippet(source: str, async_url: str) -> httpx.Response:
    namespace: dict[str, Any] = {"__name__": "guides_snippet"}
    exec(
        compile(source.replace("postgresql+asyncpg://...", async_url), "snippet", "exec"), namespace
    )
    namespace["agent"].model = ScriptedModel([[assistant_message("Noted.")]])
    transport = httpx.ASGITransport(app=namespace["app"])
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://chat") as client:
            return await client.post("/chat", params={"user_id": "u1", "message": "hi"})
    finally:
        await namespace["engine"].dispose()


async def test_the_guides_snippet_runs_with_the_two_lines_the_page_adds(
    shared_backend: Backend,
) -> None:
    url = example.async_url(database_url(shared_backend))
    as_written = guides_snippet(with_added_lines=False)
    with pytest.raises(NameError, match="create_async_engine"):
        await run_guides_snippet(as_written, url)
    # With the import only, the first request meets the missing tables and is told the fix.
    imported = "from sqlalchemy.ext.asyncio import create_async_engine\n" + as_written
    with pytest.raises(SchemaError, match=r"in its lifespan: `await sessions.create_tables"):
        await run_guides_snippet(imported, url)
    fixed = guides_snippet(with_added_lines=True)
    assert len(fixed.splitlines()) == len(as_written.splitlines()) + 2
    response = await run_guides_snippet(fixed, url)
    assert response.json() == {"response": "Noted."}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_runs_under_uvicorn_as_documented(tmp_path: Path) -> None:
    """``uvicorn examples.fastapi_app:app`` with DATABASE_URL, then a clean shutdown."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'chat.db'}"
    env["PYTHONPATH"] = str(APP_PATH.parents[1])
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", str(port)],
        cwd=APP_PATH.parents[1],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/docs", timeout=1)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        chat = httpx.post(f"{base}/users/ada/chat", json={"message": "hello"}, timeout=30)
        assert chat.json() == {"reply": "Turn 1: you said 'hello'"}
        history = httpx.get(f"{base}/users/ada/history", timeout=30).json()
        assert texts(history["items"]) == ["hello", "Turn 1: you said 'hello'"]
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert "Application shutdown complete" in output
    assert (tmp_path / "chat.db").exists()
