"""A chat service on convstore: one session per user, one engine per application.

    pip install -e '.[fastapi]'            # add ',postgres' for PostgreSQL
    uvicorn examples.fastapi_app:app       # SQLite file convstore_chat.db
    DATABASE_URL=postgresql://user:pass@host/db uvicorn examples.fastapi_app:app

The engine is created in the application's lifespan, the tables are created there
(``sessions.create_tables``), and the engine is disposed on shutdown. Each request
opens the user's ``AdvancedSQLAlchemySession`` on that engine and closes it after.

Offline by default: a deterministic model answers (the Agents SDK's ``ScriptedModel``
with a step computed from what it was sent), so the service runs without a network.
With ``OPENAI_API_KEY`` set the agent uses the SDK's default OpenAI model instead.

Endpoints (``{user}`` is the session id: 1 to 255 letters, digits and ``_.@+-``;
anything else is a 422 naming the rule). A user who has never chatted has no
conversation: every endpoint but ``chat`` answers 404 for them.

    POST /users/{user}/chat             {"message": "..."} -> {"reply": "..."}
    GET  /users/{user}/history          ?limit=20&offset=0&branch=B, newest page first
                                        (404 for a branch the user does not have)
    POST /users/{user}/undo             remove the newest item (ItemPopped event)
    GET  /users/{user}/branches         the SDK's list_branches()
    POST /users/{user}/branches         {"from_turn": n, "name": optional} -> new branch
    PUT  /users/{user}/branch           {"branch_id": "..."} switch the current branch
    GET  /users/{user}/usage            requests and tokens (get_usage_stats())
    GET  /users/{user}/export           the session's events as JSON Lines (convstore's
                                        export format: `convstore DB import` loads it)
    GET  /convstore/                    the conversation viewer (docs/viewer.md), for
                                        administrators: `Authorization: Bearer` with the
                                        token in CONVSTORE_ADMIN_TOKEN (unset: nobody)
"""

from __future__ import annotations

import hmac
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from agents import Agent, Runner
from agents.models.interface import Model
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message
from agents.usage import Usage
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventstore import BranchError, InvalidArgumentError, TurnNotFoundError
from sessions import AdvancedSQLAlchemySession, create_tables
from sessions.admin import NotFoundError, open_store
from sessions.transfer import export_events
from sessions.viewer import Viewer, viewer

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///convstore_chat.db"
INSTRUCTIONS = "You are a helpful assistant. Answer briefly."
# An export is spooled in memory up to this size, then in a temporary file.
SPOOL_IN_MEMORY = 1 << 20
CHUNK = 64 * 1024

# Plain URLs get the async driver of the matching extra (as convstore's own URLs do).
_ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
_ASYNC_DRIVERS |= {"mysql": "mysql+asyncmy", "mariadb": "mariadb+asyncmy"}
_ASYNC_DRIVERS |= {"sqlite": "sqlite+aiosqlite"}


def async_url(url: str) -> str:
    """``url`` with an async driver: ``postgresql://`` becomes ``postgresql+asyncpg://``."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(False) if driver else url


# -- the model ------------------------------------------------------------------------


def _text(item: Any) -> str:
    content = item.get("content", "") if isinstance(item, dict) else ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def offline_reply(call: ModelCall) -> ModelStep:
    """The offline model's answer: deterministic, and it shows what the model saw."""
    items = (
        call.input if isinstance(call.input, list) else [{"role": "user", "content": call.input}]
    )
    said = [_text(item) for item in items if isinstance(item, dict) and item.get("role") == "user"]
    reply = f"Turn {len(said)}: you said {said[-1]!r}" if said else "Hello!"
    words_in = sum(len(_text(item).split()) for item in items)
    words_out = len(reply.split())
    return ModelStep(
        output=[assistant_message(reply, item_id=f"msg_{uuid.uuid4().hex}")],
        usage=Usage(
            requests=1,
            input_tokens=words_in,
            output_tokens=words_out,
            total_tokens=words_in + words_out,
        ),
    )


def offline_model() -> Model:
    """A fresh one-step model per run (no tools, so a run makes exactly one call)."""
    return ScriptedModel([ModelStep.respond(offline_reply)])


def agent_factory() -> Callable[[], Agent[Any]]:
    """The agent for one request: OpenAI's when a key is set, else the offline model."""
    agent: Agent[Any] = Agent(name="Assistant", instructions=INSTRUCTIONS)
    if os.environ.get("OPENAI_API_KEY"):
        return lambda: agent
    return lambda: agent.clone(model=offline_model())


# -- requests and replies ---------------------------------------------------------------


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=32_000)


class ChatReply(BaseModel):
    reply: str


class HistoryPage(BaseModel):
    items: list[dict[str, Any]]
    offset: int
    limit: int
    next_offset: int | None  # the offset of the next older page, None at the start


class UndoReply(BaseModel):
    removed: dict[str, Any]


class BranchRequest(BaseModel):
    from_turn: int = Field(ge=1)
    name: str | None = None


class SwitchRequest(BaseModel):
    branch_id: str = Field(min_length=1)


class BranchReply(BaseModel):
    branch_id: str


# -- the application --------------------------------------------------------------------


# A user id is refused before any session is opened: FastAPI answers 422 with the rule
# it broke ("String should match pattern ..."), as for any other bad parameter. Spaces,
# slashes and control characters never become session ids.
UserId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=255,  # convstore's longest session id
        pattern=r"^[\w.@+-]+$",
        description="1 to 255 letters, digits and _ . @ + -",
    ),
]


async def user_session(user: UserId, request: Request) -> AsyncIterator[AdvancedSQLAlchemySession]:
    """The user's session on the application's engine, closed when the request ends."""
    engine: AsyncEngine = request.app.state.engine
    session = AdvancedSQLAlchemySession(user, engine=engine)
    try:
        yield session
    finally:
        await session.close()


UserSession = Annotated[AdvancedSQLAlchemySession, Depends(user_session)]


def no_conversation(user: str) -> HTTPException:
    return HTTPException(404, f"no conversation for {user!r}")


async def conversation(session: UserSession) -> AdvancedSQLAlchemySession:
    """The user's session, or 404 if they have never chatted: reading (or switching
    branches on) a conversation that does not exist would otherwise answer with
    empty defaults, or start one. One primary-key read of the streams table."""
    if await session.store.stream_info(session.session_id) is None:
        raise no_conversation(session.session_id)
    return session


Conversation = Annotated[AdvancedSQLAlchemySession, Depends(conversation)]


def create_app(
    database_url: str | None = None, *, agent: Callable[[], Agent[Any]] | None = None
) -> FastAPI:
    """The service on ``database_url`` (default: ``DATABASE_URL`` or a SQLite file)."""
    url = async_url(database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    make_agent = agent or agent_factory()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_async_engine(url)
        try:
            await create_tables(engine)
            app.state.engine = engine
            yield
        finally:
            await app.state.viewer.close()
            await engine.dispose()

    app = FastAPI(title="convstore chat", lifespan=lifespan)

    @app.exception_handler(InvalidArgumentError)
    async def bad_argument(request: Request, error: InvalidArgumentError) -> JSONResponse:
        # A refused argument (a session id too long, a bad turn number) changed nothing.
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.post("/users/{user}/chat")
    async def chat(body: ChatRequest, session: UserSession) -> ChatReply:
        result = await Runner.run(make_agent(), body.message, session=session)
        return ChatReply(reply=str(result.final_output))

    @app.get("/users/{user}/history")
    async def history(
        session: Conversation,
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
        offset: Annotated[int, Query(ge=0)] = 0,
        branch: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    ) -> HistoryPage:
        """Items ``offset`` .. ``offset + limit`` counted back from the newest, oldest
        first. A page reads only the newest ``offset + limit + 1`` items."""
        newest = await session.get_items(limit=offset + limit + 1, branch_id=branch)
        # get_items (as the SDK's) reads an unknown branch as an empty one: an empty
        # page is checked against the branches, so a mistyped name is a 404.
        if not newest and branch is not None:
            known = {b["branch_id"] for b in await session.list_branches()}
            if branch not in known:
                raise HTTPException(404, f"user {session.session_id!r} has no branch {branch!r}")
        end = max(0, len(newest) - offset)
        start = max(0, end - limit)
        more = len(newest) > offset + limit
        return HistoryPage(
            items=newest[start:end],
            offset=offset,
            limit=limit,
            next_offset=offset + limit if more else None,
        )

    @app.post("/users/{user}/undo")
    async def undo(session: Conversation) -> UndoReply:
        removed = await session.pop_item()
        if removed is None:
            raise HTTPException(404, "nothing to undo: the conversation is empty")
        return UndoReply(removed=removed)

    @app.get("/users/{user}/branches")
    async def branches(session: Conversation) -> list[dict[str, Any]]:
        return await session.list_branches()

    @app.post("/users/{user}/branches", status_code=201)
    async def branch(body: BranchRequest, session: Conversation) -> BranchReply:
        try:
            created = await session.create_branch_from_turn(body.from_turn, body.name)
        except TurnNotFoundError as error:
            raise HTTPException(404, str(error)) from error
        except BranchError as error:
            raise HTTPException(409, str(error)) from error
        return BranchReply(branch_id=created)

    @app.put("/users/{user}/branch")
    async def switch(body: SwitchRequest, session: Conversation) -> BranchReply:
        try:
            await session.switch_to_branch(body.branch_id)
        except BranchError as error:
            raise HTTPException(404, str(error)) from error
        return BranchReply(branch_id=body.branch_id)

    @app.get("/users/{user}/usage")
    async def usage(session: Conversation) -> dict[str, Any]:
        """Requests and tokens: the session's (every branch, removed turns included),
        each branch's current history's, and each turn's of the current branch."""
        stats = await session.get_usage_stats()
        return stats.to_dict()

    @app.get("/users/{user}/export")
    async def export(user: UserId, request: Request) -> StreamingResponse:
        """The session's events as JSON Lines, as ``convstore DB export --session`` writes
        them (so ``convstore DB import FILE`` loads them into another database).

        The export is read in one consistent snapshot into a temporary file (in memory
        up to 1 MiB), which the response then streams.
        """
        # Closed by the response once streamed (or here, on failure).
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            async with open_store(request.app.state.engine) as store:
                await export_events(store, spool, session=user)
        except NotFoundError as error:
            spool.close()
            raise no_conversation(user) from error
        except BaseException:
            spool.close()
            raise
        spool.seek(0)

        def chunks() -> Iterator[bytes]:
            with spool:
                yield from iter(lambda: spool.read(CHUNK), b"")

        return StreamingResponse(chunks(), media_type="application/x-ndjson")

    app.state.viewer = mount_viewer(app, url)
    return app


# -- the conversation viewer, behind the application's own authentication -------------


def admin_only(request: Request) -> bool:
    """The viewer's guard: a bearer token equal to CONVSTORE_ADMIN_TOKEN (none set:
    everyone is refused). Any check of the application's fits here (a session cookie,
    an identity provider's header)."""
    expected = os.environ.get("CONVSTORE_ADMIN_TOKEN", "")
    offered = request.headers.get("authorization", "")
    return bool(expected) and hmac.compare_digest(offered, f"Bearer {expected}")


def mount_viewer(app: FastAPI, url: str) -> Viewer:
    """Mount convstore's read-only viewer at /convstore (it opens its own connections
    to ``url`` on its first request, and refuses to exist without a guard)."""
    shown = viewer(url, auth=admin_only)
    app.mount("/convstore", shown)
    return shown


app = create_app()
