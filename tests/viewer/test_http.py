"""The viewer's endpoints over HTTP (httpx, in process): every page and its JSON twin,
the 404 and 400 answers, the guards (token, auth hook, loopback names), encrypted
sessions with and without the key, and paging of long conversations and logs."""

from __future__ import annotations

import html
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from eventstore import ConfigurationError
from sessions import SQLiteSession
from sessions.viewer import viewer
from sessions.viewer.pages import PAGE_EVENTS, PAGE_ITEMS

from .conftest import client_of, demo


def json_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def html_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


# -- sessions ------------------------------------------------------------------------


async def test_sessions_page_lists_every_session_with_its_class(
    local: httpx.AsyncClient,
) -> None:
    found = json_of(await local.get("/api/sessions"))
    kinds = {s["session_id"]: s["kind"] for s in found["sessions"]}
    assert kinds == {"trip_planner": "Advanced", "notes": "plain", "medical_1": "encrypted"}
    trip = next(s for s in found["sessions"] if s["session_id"] == "trip_planner")
    assert trip["events"] == 28
    assert trip["items"] == 15  # on main
    assert trip["size"] > 0
    page = html_of(await local.get("/"))
    for sid in kinds:
        assert f'href="/c/{sid}"' in page


async def test_sessions_search_and_sort(local: httpx.AsyncClient) -> None:
    found = json_of(await local.get("/api/sessions", params={"q": "trip"}))
    assert [s["session_id"] for s in found["sessions"]] == ["trip_planner"]
    by_id = json_of(await local.get("/api/sessions", params={"sort": "id"}))
    assert [s["session_id"] for s in by_id["sessions"]] == ["medical_1", "notes", "trip_planner"]
    by_events = json_of(await local.get("/api/sessions", params={"sort": "events"}))
    assert [s["events"] for s in by_events["sessions"]] == [28, 7, 2]
    by_size = json_of(await local.get("/api/sessions", params={"sort": "size"}))
    sizes = [s["size"] for s in by_size["sessions"]]
    assert sizes == sorted(sizes, reverse=True)
    none = json_of(await local.get("/api/sessions", params={"q": "%"}))  # a literal %
    assert none["sessions"] == []
    assert "No session matches" in html_of(await local.get("/", params={"q": "zzz"}))


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"sort": "colour"}, "sort must be one of"),
        ({"page": "0"}, "page must be a whole number >= 1"),
        ({"page": "two"}, "page must be a whole number >= 1"),
    ],
)
async def test_sessions_bad_parameters_are_400(
    local: httpx.AsyncClient, params: dict[str, str], reason: str
) -> None:
    page = await local.get("/", params=params)
    assert page.status_code == 400
    assert reason in html.unescape(page.text)
    answer = await local.get("/api/sessions", params=params)
    assert answer.status_code == 400
    assert reason in answer.json()["error"]


# -- a conversation ------------------------------------------------------------------


async def test_a_conversation_renders_messages_tools_reasoning_and_images(
    local: httpx.AsyncClient,
) -> None:
    data = json_of(await local.get("/api/conversation/trip_planner", params={"branch": "main"}))
    kinds = [item["kind"] for item in data["items"]]
    assert {"message", "tool_call", "tool_output", "reasoning"} <= set(kinds)
    call = next(item for item in data["items"] if item["kind"] == "tool_call")
    assert call["who"] == "search_trains"
    assert call["parts"][0]["text"] == '{\n  "origin": "Paris",\n  "destination": "Lyon"\n}'
    page = html_of(await local.get("/c/trip_planner", params={"branch": "main"}))
    assert '<img src="data:image/png;base64,' in page
    assert "The image is a colour gradient" in page  # the reasoning summary
    assert "Booked Hotel du Parc for two nights" in page
    assert '<code class="tool">book_hotel</code>' in page
    assert 'href="#i' in page  # an output links to its call
    assert "<summary>raw JSON</summary>" in page


async def test_a_conversation_opens_on_the_current_branch(local: httpx.AsyncClient) -> None:
    data = json_of(await local.get("/api/conversation/trip_planner"))
    assert data["branch_id"] == "cheaper"
    assert [b["branch_id"] for b in data["branches"]] == ["main", "cheaper"]
    texts = " ".join(p["text"] for item in data["items"] for p in item["parts"])
    assert "About 30 EUR" in texts
    assert "Hotel du Parc for two nights" not in texts  # main's turn 2, not shared
    page = html_of(await local.get("/c/trip_planner"))
    assert 'data-live="/live/trip_planner?after=28"' in page


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/c/nobody", 404, "no session 'nobody'"),
        ("/c/trip_planner?branch=nope", 404, "has no branch 'nope'"),
        ("/c/trip_planner?before=x", 400, "before must be a whole number"),
        ("/travel/nobody", 404, "no session 'nobody'"),
        ("/travel/trip_planner?version=0", 400, "version must be a whole number >= 1"),
        ("/travel/trip_planner?version=-3", 400, "version must be a whole number >= 1"),
        ("/travel/trip_planner?version=29", 404, "has versions 1..28, not 29"),
        ("/travel/trip_planner?at=yesterday", 400, "at must be a time such as"),
        ("/travel/trip_planner?at=2000-01-01T00:00:00Z", 404, "did not exist yet"),
        ("/travel/trip_planner?version=3&at=2030-01-01", 400, "not both"),
        ("/travel/trip_planner?version=2&branch=cheaper", 404, "had no branch 'cheaper' at v2"),
        ("/travel/trip_planner?offset=x", 400, "offset must be a whole number >= 0"),
        ("/tree/nobody", 404, "no session 'nobody'"),
        ("/usage/nobody", 404, "no session 'nobody'"),
        ("/usage/trip_planner?branch=nope", 404, "Branch 'nope' does not exist"),
        ("/log/nobody", 404, "no session 'nobody'"),
        ("/log/trip_planner?after=first", 400, "after must be a whole number >= 0"),
    ],
)
async def test_unknown_things_are_404_and_malformed_ones_400(
    local: httpx.AsyncClient, path: str, status: int, reason: str
) -> None:
    page = await local.get(path)
    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/html")
    assert reason in html.unescape(page.text)
    api = path.replace("/c/", "/conversation/", 1) if path.startswith("/c/") else path
    answer = await local.get("/api" + api)
    assert answer.status_code == status
    assert reason in answer.json()["error"]


async def test_a_long_conversation_is_paged(tmp_path: Path) -> None:
    """130 items: pages of 50 newest first, each read alone, together every item once."""
    path = tmp_path / "long.db"
    async with SQLiteSession("long", path) as session:
        for n in range(13):
            await session.add_items(
                [{"role": "user", "content": f"m{n * 10 + i}"} for i in range(10)]
            )
        everything = await session.get_items()
    app = viewer(str(path), anonymous=True)
    async with await client_of(app) as client:
        seen: list[str] = []
        before = None
        for _ in range(10):  # 3 pages; a pager that never ends fails here
            params = {} if before is None else {"before": str(before)}
            data = json_of(await client.get("/api/conversation/long", params=params))
            assert len(data["items"]) <= PAGE_ITEMS
            seen = [item["parts"][0]["text"] for item in data["items"]] + seen
            before = data["older"]
            if before is None:
                break
        else:
            pytest.fail("the pages never reach the start of the conversation")
        page = html_of(await client.get("/c/long"))
        assert "↑ older items" in page
    await app.close()
    assert seen == [item["content"] for item in everything]
    assert len(seen) == 130


# -- time travel ---------------------------------------------------------------------


async def test_time_travel_shows_the_history_then_and_what_changed(
    local: httpx.AsyncClient,
) -> None:
    log = json_of(await local.get("/api/log/notes"))
    popped = next(e for e in log["events"] if e["type"] == "ItemPopped")["version"]
    before = json_of(await local.get("/api/travel/notes", params={"version": popped - 1}))
    assert [i["parts"][0]["text"] for i in before["items"]] == [
        "Remember: buy milk",
        "Noted: buy milk.",
        "And eggs",
    ]
    assert len(before["added"]) == 1  # the event at that version added "And eggs"
    at_pop = json_of(await local.get("/api/travel/notes", params={"version": popped}))
    assert len(at_pop["items"]) == 2
    assert [i["parts"][0]["text"] for i in at_pop["removed"]] == ["And eggs"]
    assert at_pop["added"] == []
    assert popped in [e["version"] for e in at_pop["events"]]
    page = html_of(await local.get("/travel/notes", params={"version": popped}))
    assert f'value="{popped}"' in page  # the slider
    assert "Removed by v" in page
    by_time = json_of(await local.get("/api/travel/notes", params={"at": at_pop["recorded_at"]}))
    assert by_time["version"] >= popped  # events recorded in the same microsecond count too
    latest = json_of(await local.get("/api/travel/notes"))
    assert latest["version"] == latest["latest"] == 7
    assert latest["items"] == []  # cleared


# -- branches, usage, log --------------------------------------------------------------


async def test_the_branch_tree(local: httpx.AsyncClient) -> None:
    data = json_of(await local.get("/api/tree/trip_planner"))
    nodes = {n["branch_id"]: n for n in data["nodes"]}
    assert nodes["cheaper"]["parent_branch_id"] == "main"
    assert nodes["cheaper"]["fork_turn"] == 1
    assert nodes["cheaper"]["is_current"]
    page = html_of(await local.get("/tree/trip_planner"))
    assert '<svg class="tree"' in page
    assert 'class="forkpoint"' in page
    assert 'href="/c/trip_planner?branch=cheaper"' in page


async def test_usage_charts_and_totals(local: httpx.AsyncClient) -> None:
    data = json_of(await local.get("/api/usage/trip_planner", params={"branch": "main"}))
    stats = data["stats"]
    assert [t["turn"] for t in stats["turns"]] == [1, 2, 3, 5]  # turn 4 recorded none
    assert stats["branch"]["total_tokens"] == sum(t["total_tokens"] for t in stats["turns"])
    assert set(stats["branches"]) == {"main", "cheaper"}
    page = html_of(await local.get("/usage/trip_planner", params={"branch": "main"}))
    assert page.count('<svg class="chart"') == 2
    assert f"{stats['session']['total_tokens']:,}" in page
    plain = json_of(await local.get("/api/usage/notes"))
    assert plain["stats"]["session"] is None


async def test_usage_of_a_database_without_usage(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    async with SQLiteSession("s", path) as session:
        await session.add_items([{"role": "user", "content": "hi"}])
    app = viewer(str(path), anonymous=True)
    async with await client_of(app) as client:
        assert json_of(await client.get("/api/usage/s"))["stats"] is None
        assert "keeps no usage" in html_of(await client.get("/usage/s"))
    await app.close()


async def test_the_log_with_hashes_and_a_clean_audit(local: httpx.AsyncClient) -> None:
    data = json_of(await local.get("/api/log/trip_planner"))
    assert data["audit"] == []
    assert [e["version"] for e in data["events"]] == list(range(1, 29))
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["hash"]) for e in data["events"])
    assert data["projections"] is False
    assert data["projections"] is False
    page = html_of(await local.get("/log/trip_planner"))
    assert "Audit: clean." in page
    assert data["events"][-1]["hash"] in page
    checked = json_of(await local.get("/api/log/trip_planner", params={"projections": "1"}))
    assert checked["audit"] == []
    assert checked["projections"] is True
    again = html_of(await local.get("/log/trip_planner", params={"projections": "1"}))
    assert "the projections equal a fold" in again
    checked = json_of(await local.get("/api/log/trip_planner", params={"projections": "1"}))
    assert checked["audit"] == []
    assert checked["projections"] is True
    assert "the projections equal a fold" in html_of(
        await local.get("/log/trip_planner", params={"projections": "1"})
    )


async def test_the_log_shows_an_audit_finding(demo_db: Path) -> None:
    with sqlite3.connect(demo_db) as conn:  # an edit behind the store's back
        conn.execute(
            "UPDATE convstore_events SET payload = CAST(replace(CAST(payload AS TEXT), "
            "'buy milk', 'buy beer') AS BLOB) WHERE stream_id = 'notes' AND version = 2"
        )
    app = viewer(str(demo_db), anonymous=True)
    async with await client_of(app) as client:
        data = json_of(await client.get("/api/log/notes"))
        assert any("stored hash does not match" in f for f in data["audit"])
        page = html_of(await client.get("/log/notes"))
        assert "Audit: " in page
        assert "finding" in page
        assert "clean" not in page
        other = json_of(await client.get("/api/log/trip_planner"))
        assert other["audit"] == []
    await app.close()


async def test_the_log_shows_a_projection_that_differs_from_the_log(demo_db: Path) -> None:
    with sqlite3.connect(demo_db) as conn:  # a history row removed behind the store's back
        conn.execute(
            "DELETE FROM convstore_items WHERE stream_id = 'trip_planner' AND seq = "
            "(SELECT max(seq) FROM convstore_items WHERE stream_id = 'trip_planner')"
        )
    app = viewer(str(demo_db), anonymous=True)
    async with await client_of(app) as client:
        assert json_of(await client.get("/api/log/trip_planner"))["audit"] == []  # the chain
        checked = await client.get("/api/log/trip_planner", params={"projections": "1"})
        assert json_of(checked)["audit"] != []
    await app.close()


async def test_a_long_log_is_paged(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteSession("s", path) as session:
        for n in range(PAGE_EVENTS + 20):
            await session.add_items([{"role": "user", "content": str(n)}])
    app = viewer(str(path), anonymous=True)
    async with await client_of(app) as client:
        first = json_of(await client.get("/api/log/s"))
        assert len(first["events"]) == PAGE_EVENTS
        assert first["next_after"] == PAGE_EVENTS
        rest = json_of(await client.get("/api/log/s", params={"after": first["next_after"]}))
        assert [e["version"] for e in rest["events"]] == list(range(PAGE_EVENTS + 1, 122))
        assert rest["next_after"] is None
    await app.close()


# -- encrypted sessions --------------------------------------------------------------


async def test_an_encrypted_session_is_locked_without_the_key(local: httpx.AsyncClient) -> None:
    data = json_of(await local.get("/api/conversation/medical_1"))
    assert data["kind"] == "encrypted"
    assert [i["kind"] for i in data["items"]] == ["locked", "locked"]
    assert data["items"][0]["who"] == "user"  # the one mark an envelope keeps readable
    assert "no key" in data["locked"]
    for path in ("/c/medical_1", "/travel/medical_1", "/log/medical_1"):
        assert "blood pressure" not in html_of(await local.get(path))


async def test_with_the_key_it_is_decrypted(demo_db: Path) -> None:
    app = viewer(str(demo_db), token="t" * 32, key=demo.KEY)
    headers = {"authorization": "Bearer " + "t" * 32}
    async with await client_of(app, headers=headers) as client:
        data = json_of(await client.get("/api/conversation/medical_1"))
        assert data["locked"] is None
        assert "blood pressure was 150/95" in data["items"][0]["parts"][0]["text"]
        travel = json_of(await client.get("/api/travel/medical_1", params={"version": 2}))
        assert travel["items"][1]["parts"][0]["text"].startswith("That is high")
    await app.close()


async def test_with_a_wrong_key_it_stays_locked_and_says_why(demo_db: Path) -> None:
    app = viewer(str(demo_db), token="t" * 32, key="another-passphrase-of-enough-length")
    async with await client_of(app, headers={"authorization": "Bearer " + "t" * 32}) as client:
        data = json_of(await client.get("/api/conversation/medical_1"))
        assert [i["kind"] for i in data["items"]] == ["locked", "locked"]
        assert "master key" in data["locked"] or "key" in data["locked"]
    await app.close()


# -- guards ------------------------------------------------------------------------------


def test_a_viewer_without_a_guard_is_refused(demo_db: Path) -> None:
    with pytest.raises(ConfigurationError, match="give it auth="):
        viewer(str(demo_db))
    with pytest.raises(ConfigurationError, match="given a key"):
        viewer(str(demo_db), key=demo.KEY, anonymous=True)
    with pytest.raises(ConfigurationError, match="at least 16"):
        viewer(str(demo_db), token="short")


async def test_the_access_token(demo_db: Path) -> None:
    token = "s3cret-token-of-enough-length"
    app = viewer(str(demo_db), token=token)
    async with await client_of(app) as client:
        refused = await client.get("/api/sessions")
        assert refused.status_code == 401
        assert "access token" in refused.json()["error"]
        page = await client.get("/", headers={"accept": "text/html"})
        assert page.status_code == 401
        assert "<h1>401</h1>" in page.text
        assert (await client.get("/?token=wrong-token-wrong-token")).status_code == 401
        entered = await client.get(f"/c/notes?token={token}&branch=main")
        assert entered.status_code == 303
        assert entered.headers["location"] == "/c/notes?branch=main"
        assert "httponly" in entered.headers["set-cookie"].lower()
        assert (await client.get("/api/sessions")).status_code == 200  # the cookie
    async with await client_of(app, headers={"authorization": f"Bearer {token}"}) as client:
        assert (await client.get("/api/sessions")).status_code == 200
    async with await client_of(app) as client:
        assert (await client.get("/static/viewer.css")).status_code == 200  # not secret
    await app.close()


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_the_application_s_auth_hook(demo_db: Path, asynchronous: bool) -> None:
    def admin_only(request: Request) -> bool:
        return request.headers.get("x-role") == "admin"

    async def admin_only_async(request: Request) -> bool:
        return admin_only(request)

    app = viewer(str(demo_db), auth=admin_only_async if asynchronous else admin_only)
    async with await client_of(app) as client:
        assert (await client.get("/api/sessions")).status_code == 403
        allowed = await client.get("/api/sessions", headers={"x-role": "admin"})
        assert allowed.status_code == 200
    await app.close()


async def test_a_loopback_viewer_refuses_other_host_names(demo_db: Path) -> None:
    """DNS rebinding: a site whose name now points at 127.0.0.1 reads nothing."""
    app = viewer(str(demo_db), anonymous=True)
    async with await client_of(app) as client:
        assert (await client.get("/api/sessions")).status_code == 200
        assert (await client.get("http://localhost/api/sessions")).status_code == 200
        evil = await client.get("/api/sessions", headers={"host": "evil.example:8765"})
        assert evil.status_code == 403
    await app.close()


async def test_pages_forbid_outside_resources(local: httpx.AsyncClient) -> None:
    page = await local.get("/c/trip_planner")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "img-src 'self' data:" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in re.sub(r'href="http://[^"]*"', "", page.text.split("<main")[0])
    script = await local.get("/static/viewer.js")
    assert script.status_code == 200
    assert "EventSource" in script.text


# -- mounted in an application ---------------------------------------------------------


async def test_mounted_under_a_prefix(demo_db: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    inner = viewer(str(demo_db), token="m" * 20)
    outer = Starlette(routes=[Mount("/convstore", app=inner)])
    headers = {"authorization": "Bearer " + "m" * 20}
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", headers=headers
    ) as client:
        page = html_of(await client.get("/convstore/"))
        assert 'href="/convstore/c/trip_planner"' in page
        assert 'href="/convstore/static/viewer.css"' in page
        assert (await client.get("/convstore/static/viewer.css")).status_code == 200
        convo = html_of(await client.get("/convstore/c/trip_planner"))
        assert 'data-live="/convstore/live/trip_planner?after=28"' in convo
    await inner.close()


async def test_the_fastapi_example_mounts_it_behind_its_own_auth(
    demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/fastapi_app.py: /convstore/ is the viewer, refused without the
    administrators' token (and to everyone when none is configured)."""
    from ..test_fastapi_app import example

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CONVSTORE_ADMIN_TOKEN", raising=False)
    app = example.create_app(f"sqlite:///{demo_db}")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert (await client.get("/convstore/api/sessions")).status_code == 403
            monkeypatch.setenv("CONVSTORE_ADMIN_TOKEN", "admin-token-0123456789")
            assert (await client.get("/convstore/api/sessions")).status_code == 403
            headers = {"authorization": "Bearer admin-token-0123456789"}
            found = await client.get("/convstore/api/sessions", headers=headers)
            assert found.status_code == 200
            assert "trip_planner" in {s["session_id"] for s in found.json()["sessions"]}
            page = await client.get("/convstore/c/trip_planner", headers=headers)
            assert 'href="/convstore/tree/trip_planner"' in page.text
            own = await client.get("/users/ada/history")  # the app's own route, not the viewer's
            assert own.status_code == 404, own.text  # ada has not chatted yet
            assert "no conversation" in own.json()["detail"]


@pytest.mark.parametrize(
    ("sid", "branch"), [("trip_planner", "main"), ("trip_planner", "cheaper"), ("notes", "main")]
)
@pytest.mark.parametrize("offset", [0, 3])
async def test_time_travel_now_reads_the_projection_and_agrees_with_the_fold(
    local: httpx.AsyncClient, sid: str, branch: str, offset: int
) -> None:
    """At the latest version the page reads a page of the history projection (not a
    fold of the whole log), and shows what a fold shows (``at`` a later time folds)."""
    params = {"branch": branch, "offset": str(offset)}
    now = json_of(await local.get(f"/api/travel/{sid}", params=params))
    folded = json_of(
        await local.get(f"/api/travel/{sid}", params={**params, "at": "2100-01-01T00:00:00Z"})
    )
    for key in ("version", "items", "total_items", "shown_from", "added", "removed", "events"):
        assert now[key] == folded[key], key
    assert set(now["branches"]) == set(folded["branches"])


async def test_time_travel_now_does_not_fold_the_log(
    local: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessions.viewer import pages

    def no_fold(*args: Any) -> Any:
        raise AssertionError("folded the whole log")

    monkeypatch.setattr(pages, "fold", no_fold)
    latest = json_of(await local.get("/api/travel/trip_planner"))
    assert latest["version"] == latest["latest"] == 28
    assert latest["total_items"] == 15  # main (time travel starts on main)
