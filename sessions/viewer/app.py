"""The viewer as an ASGI application (Starlette, Jinja2 templates), read-only.

Every page has a JSON twin under ``/api`` that returns the same record the page
renders (docs/viewer.md lists them). Session ids go last in a path (``/c/{id}``), so
any id, slashes included, has its pages. The store is opened on the first request
(a mounted application gets no lifespan of its own) and closed by :meth:`Viewer.close`.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from eventstore import ConfigurationError, ConvstoreError, EventStore, Subscription

from ..admin import open_store
from ..cli.args import parse_time
from . import charts, pages
from .items import ItemView

log = logging.getLogger("convstore.viewer")
HERE = Path(__file__).resolve().parent
COOKIE = "convstore_viewer"
# Seconds between comments on an idle live stream (proxies and browsers keep it open).
KEEP_ALIVE = 15.0
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})

AuthHook = Callable[[Request], bool | Awaitable[bool]]
Target = str | os.PathLike[str] | AsyncEngine | EventStore

_json = msgspec.json.Encoder()
# The part of a page that its live updates replace.
_PARTS = {"conversation.html": "_items.html"}
_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class Viewer:
    """The viewer's ASGI application on one database (see :func:`viewer`)."""

    def __init__(
        self,
        target: Target,
        *,
        auth: AuthHook | None,
        token: str | None,
        key: str | bytes | None,
        anonymous: bool,
    ) -> None:
        if auth is None and token is None and not anonymous:
            raise ConfigurationError(
                "a viewer shows conversations to whoever reaches it: give it auth= (a "
                "function that accepts or refuses each request) or token= (an access "
                "token, e.g. secrets.token_urlsafe()); only 'convstore DB serve' on "
                "127.0.0.1 without a key runs without either"
            )
        if anonymous and key is not None and auth is None and token is None:
            raise ConfigurationError(
                "a viewer given a key decrypts conversations: it needs auth= or token="
            )
        if token is not None and len(token) < 16:
            raise ConfigurationError("token= must be at least 16 characters")
        self._target = target
        self._auth = auth
        self._token = token
        self._keyring = None if key is None else pages.Keyring(key)
        self._anonymous = anonymous and auth is None and token is None
        self._store: EventStore | None = target if isinstance(target, EventStore) else None
        self._owns_store = self._store is None
        self._opening = asyncio.Lock()
        self._env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["when"] = _when
        self._env.filters["number"] = lambda n: f"{n:,}"
        self._env.filters["size"] = _size
        self._env.globals["quote"] = lambda text: quote(str(text), safe="")
        self.app = Starlette(routes=self._routes())
        # The live streams open now (ended by stop_live when a server shuts down).
        self._streams: set[Subscription] = set()
        self._stopping = False
        self._stops: set[asyncio.Future[None]] = set()

    # -- the store ---------------------------------------------------------------------

    async def store(self) -> EventStore:
        """The store, opened on first use (and its tables checked)."""
        if self._store is None:
            async with self._opening:
                if self._store is None:
                    assert not isinstance(self._target, EventStore)
                    store = open_store(self._target)
                    try:
                        await store.ensure_tables()
                    except BaseException:
                        await store.close()
                        raise
                    self._store = store
        return self._store

    def stop_live(self) -> None:
        """End every live stream (their responses complete) and refuse new ones: for
        a server that is shutting down, whose open responses would otherwise wait."""
        self._stopping = True
        for subscription in list(self._streams):
            stop = asyncio.ensure_future(subscription.aclose())
            self._stops.add(stop)
            stop.add_done_callback(self._stops.discard)

    async def close(self) -> None:
        """Close the store, if the viewer opened it. Idempotent."""
        store, self._store = self._store, None
        if store is not None and self._owns_store:
            await store.close()

    # -- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if not request.url.path.startswith(_root(request) + "/static/"):
            refused = await self._guard(request)
            if refused is not None:
                await refused(scope, receive, send)
                return

        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers += [
                    (b"content-security-policy", _CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                ]
            await send(message)

        await self.app(scope, receive, secured)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _guard(self, request: Request) -> Response | None:
        """None if ``request`` may see the viewer, else the response refusing it."""
        if self._anonymous:
            # Bound to 127.0.0.1: a page of another site that made its own name point
            # here (DNS rebinding) must not read conversations through the browser.
            if request.url.hostname not in _LOOPBACK_HOSTS:
                return _refusal(request, 403, "this viewer answers only to 127.0.0.1")
            return None
        if self._auth is not None:
            verdict = self._auth(request)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict is True:
                return None
            return _refusal(request, 403, "the application's authentication refused this request")
        assert self._token is not None
        given = request.query_params.get("token")
        if given is not None:
            if not hmac.compare_digest(given.encode(), self._token.encode()):
                return _refusal(request, 401, "this access token is not the viewer's")
            # Into a cookie, and out of the address bar and the browser's history.
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            url = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response = RedirectResponse(url, status_code=303)
            response.set_cookie(
                COOKIE,
                self._token,
                path=_root(request) or "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return response
        bearer = request.headers.get("authorization", "")
        cookie = request.cookies.get(COOKIE, "")
        for offered in (bearer.removeprefix("Bearer ") if bearer else "", cookie):
            if offered and hmac.compare_digest(offered.encode(), self._token.encode()):
                return None
        return _refusal(
            request,
            401,
            "this viewer needs its access token: open the address 'convstore DB serve' "
            "printed (with ?token=), or send 'Authorization: Bearer TOKEN'",
        )

    # -- routes ------------------------------------------------------------------------

    def _routes(self) -> list[Any]:
        page = self._page
        return [
            Route("/", page(self._sessions, "sessions.html"), name="sessions"),
            Route("/c/{sid:path}", page(self._conversation, "conversation.html"), name="c"),
            Route("/travel/{sid:path}", page(self._travel, "travel.html"), name="travel"),
            Route("/tree/{sid:path}", page(self._tree, "tree.html"), name="tree"),
            Route("/usage/{sid:path}", page(self._usage, "usage.html"), name="usage"),
            Route("/log/{sid:path}", page(self._log, "log.html"), name="log"),
            Route("/live/{sid:path}", self._live, name="live"),
            Route("/api/sessions", page(self._sessions, None)),
            Route("/api/conversation/{sid:path}", page(self._conversation, None)),
            Route("/api/travel/{sid:path}", page(self._travel, None)),
            Route("/api/tree/{sid:path}", page(self._tree, None)),
            Route("/api/usage/{sid:path}", page(self._usage, None)),
            Route("/api/log/{sid:path}", page(self._log, None)),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    def _page(
        self,
        read: Callable[[Request, EventStore], Awaitable[tuple[Any, dict[str, Any]]]],
        template: str | None,
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint: ``read`` gives the page's record (and what only the HTML page
        needs); the record is the JSON answer, or rendered into ``template``."""

        async def endpoint(request: Request) -> Response:
            try:
                store = await self.store()
                record, extra = await read(request, store)
            except pages.NotFound as error:
                return _error(self, request, 404, str(error), json_only=template is None)
            except pages.BadRequest as error:
                return _error(self, request, 400, str(error), json_only=template is None)
            except ConvstoreError as error:  # e.g. the database went away: said, not a trace
                log.warning("%s: %s", request.url.path, error)
                return _error(self, request, 503, str(error), json_only=template is None)
            if template is None:
                return Response(_json.encode(record), media_type="application/json")
            name = template
            if request.query_params.get("partial") == "1":  # the live page's refresh
                name = _PARTS.get(template, template)
            body = self._env.get_template(name).render(
                page=record, root=_root(request), request=request, **extra
            )
            return HTMLResponse(body)

        return endpoint

    # -- pages -------------------------------------------------------------------------

    async def _sessions(self, request: Request, store: EventStore) -> tuple[Any, dict[str, Any]]:
        params = request.query_params
        record = await pages.sessions_page(
            store,
            query=params.get("q", ""),
            sort=params.get("sort", "activity"),
            page=_whole(params.get("page"), "page", default=1),
        )
        return record, {"sorts": pages.SORTS, "title": "sessions"}

    async def _conversation(
        self, request: Request, store: EventStore
    ) -> tuple[Any, dict[str, Any]]:
        sid, params = request.path_params["sid"], request.query_params
        before = params.get("before")
        record = await pages.conversation_page(
            store,
            sid,
            branch=params.get("branch"),
            before=None if before is None else _whole(before, "before", default=0),
            keyring=self._keyring,
        )
        return record, {"title": sid, "tab": "c", "pairs": _pairs(record.items)}

    async def _travel(self, request: Request, store: EventStore) -> tuple[Any, dict[str, Any]]:
        sid, params = request.path_params["sid"], request.query_params
        version = params.get("version") or None
        at = params.get("at") or None
        if version is not None and at is not None:
            raise pages.BadRequest("give a version or a time (at=), not both")
        record = await pages.travel_page(
            store,
            sid,
            version=None if version is None else _whole(version, "version", default=1),
            at=None if at is None else _time(at),
            branch=params.get("branch", "main"),
            keyring=self._keyring,
            offset=_whole(params.get("offset"), "offset", default=0, least=0),
        )
        return record, {"title": f"{sid} at v{record.version}", "tab": "travel"}

    async def _tree(self, request: Request, store: EventStore) -> tuple[Any, dict[str, Any]]:
        sid = request.path_params["sid"]
        record = await pages.tree_page(store, sid)
        root = _root(request)
        href = {
            n.branch_id: f"{root}/c/{quote(sid, safe='')}?branch={quote(n.branch_id, safe='')}"
            for n in record.nodes
        }
        drawing = charts.tree_chart(record.nodes, href)
        return record, {"title": f"{sid}: branches", "tab": "tree", "drawing": drawing}

    async def _usage(self, request: Request, store: EventStore) -> tuple[Any, dict[str, Any]]:
        sid = request.path_params["sid"]
        record = await pages.usage_page(store, sid, branch=request.query_params.get("branch"))
        extra: dict[str, Any] = {"title": f"{sid}: usage", "tab": "usage"}
        if record.stats is not None:
            turns = record.stats["turns"][-200:]  # the chart shows the last 200 turns
            extra["turn_chart"] = charts.bar_chart(
                [
                    charts.Bar(f"{t['turn']}", (t["input_tokens"], t["output_tokens"]))
                    for t in turns
                ],
                title=f"tokens per turn of {record.stats['branch_id']}",
            )
            extra["branch_chart"] = charts.bar_chart(
                [
                    charts.Bar(b, (u["input_tokens"], u["output_tokens"]))
                    for b, u in record.stats["branches"].items()
                ],
                title="tokens per branch",
            )
        return record, extra

    async def _log(self, request: Request, store: EventStore) -> tuple[Any, dict[str, Any]]:
        sid, params = request.path_params["sid"], request.query_params
        after = _whole(params.get("after"), "after", default=0, least=0)
        projections = params.get("projections") == "1"
        record = await pages.log_page(store, sid, after=after, projections=projections)
        return record, {"title": f"{sid}: log", "tab": "log"}

    async def _changes(self, store: EventStore, sid: str, after: int) -> AsyncIterator[str]:
        yield ": live\n\n"
        if self._stopping:
            return
        async with store.subscribe_stream(sid, after=after) as events:
            self._streams.add(events)
            try:
                following = events.__aiter__()
                while True:
                    try:
                        event = await asyncio.wait_for(following.__anext__(), KEEP_ALIVE)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    except StopAsyncIteration:
                        return
                    data = json.dumps(
                        {
                            "version": event.version,
                            "type": event.event_type,
                            "position": event.position,
                        }
                    )
                    yield f"id: {event.version}\nevent: change\ndata: {data}\n\n"
            finally:
                self._streams.discard(events)

    async def _live(self, request: Request) -> Response:
        """Server-sent events: one ``change`` event per event of the session's log
        after version ``after`` (the conversation page reloads its items on each)."""
        sid = request.path_params["sid"]
        try:
            store = await self.store()
            info = await store.stream_info(sid)
            if info is None:
                raise pages.NotFound(f"no session {sid!r} in this database")
            after = _whole(request.query_params.get("after"), "after", default=0, least=0)
            # A browser reconnecting says where it was (the id of the last event it got).
            resumed = request.headers.get("last-event-id")
            if resumed is not None:
                after = _whole(resumed, "Last-Event-ID", default=after, least=0)
        except pages.NotFound as error:
            return _error(self, request, 404, str(error), json_only=True)
        except pages.BadRequest as error:
            return _error(self, request, 400, str(error), json_only=True)
        return StreamingResponse(
            self._changes(store, sid, after),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )


def viewer(
    target: Target,
    *,
    auth: AuthHook | None = None,
    token: str | None = None,
    key: str | bytes | None = None,
    anonymous: bool = False,
) -> Viewer:
    """The web viewer on ``target`` (a SQLite path, a URL, an ``AsyncEngine`` or an
    open :class:`~eventstore.EventStore`), as an ASGI application to run or mount
    (``app.mount("/convstore", viewer(url, auth=admin_only))``).

    It shows conversations, so it refuses to exist without a guard: ``auth`` (called
    with each Starlette ``Request``, returns or awaits True to let it through) or
    ``token`` (an access token: ``?token=`` once, then a cookie, or an
    ``Authorization: Bearer`` header). ``anonymous=True`` (what ``convstore DB
    serve`` uses on 127.0.0.1) answers only requests addressed to the loopback name,
    and is refused with a ``key``: the master key of encrypted sessions, whose items
    are then decrypted in this process only.
    """
    return Viewer(target, auth=auth, token=token, key=key, anonymous=anonymous)


# -- helpers -------------------------------------------------------------------------


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _wants_json(request: Request) -> bool:
    return "/api/" in request.url.path or "/live/" in request.url.path


def _refusal(request: Request, status: int, reason: str) -> Response:
    if _wants_json(request) or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"error": reason}, status_code=status)
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><title>convstore viewer</title>"
        f"<h1>{status}</h1><p>{Markup.escape(reason)}</p>",
        status_code=status,
    )


def _error(
    viewer: Viewer, request: Request, status: int, reason: str, *, json_only: bool
) -> Response:
    if json_only:
        return JSONResponse({"error": reason}, status_code=status)
    body = viewer._env.get_template("error.html").render(
        status=status, reason=reason, root=_root(request), title=f"{status}"
    )
    return HTMLResponse(body, status_code=status)


def _whole(text: str | None, name: str, *, default: int, least: int = 1) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or int(text) < least:
        raise pages.BadRequest(f"{name} must be a whole number >= {least}, not {text!r}")
    return int(text)


def _time(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is UTC (the pages show UTC)."""
    try:
        return parse_time(text)
    except ValueError:
        raise pages.BadRequest(
            f"at must be a time such as 2026-01-31T12:00:00Z, not {text!r}"
        ) from None


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:,} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count = count / 1024  # type: ignore[assignment]
    return f"{count} B"


def _pairs(items: tuple[ItemView, ...]) -> dict[str, int]:
    """call_id -> the seq of its tool call shown on the page (to link outputs to it)."""
    return {v.call_id: v.seq for v in items if v.kind == "tool_call" and v.call_id and v.seq}
