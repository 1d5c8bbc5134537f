"""OpenTelemetry spans around session operations, when ``opentelemetry-api`` is installed.

:func:`instrument` is a class decorator: it wraps the session operations a class
defines (:data:`OPERATIONS`) in one span each, named ``convstore.<operation>``, with
the session id, the branch, the database (``db.system.name``) and, once the operation
returns, the number of items it read, wrote or removed and of events it appended.

Without ``opentelemetry-api`` the decorator returns the class untouched: the methods
are the plain ones, so tracing costs nothing. With the API but no SDK configured (no
tracer provider set), each operation checks that and runs unwrapped; with an SDK, the
span costs what the SDK takes to record it (docs/observability.md measures both).

An operation that calls another (``create_branch_from_content`` finds the turn, then
branches from it; a subclass's ``add_items`` calls its parent's) makes one span, the
outermost: the inner calls run unwrapped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from importlib import metadata
from typing import Any, TypeVar

try:
    from opentelemetry import trace
except ImportError:  # the otel extra is not installed: no spans, no wrappers
    trace = None  # type: ignore[assignment]

C = TypeVar("C", bound=type)
Attributes = dict[str, str | int]
# (session, positional args, keyword args, result) -> attributes known after the call
Describe = Callable[[Any, tuple[Any, ...], Mapping[str, Any], Any], Attributes]

SESSION_ID = "convstore.session.id"
BRANCH_ID = "convstore.branch.id"
ITEMS = "convstore.items"
EVENTS = "convstore.events"
DB_SYSTEM = "db.system.name"


def _branch(session: Any) -> Attributes:
    """The session's current branch, for classes that keep one (or wrap one that does)."""
    inner = getattr(session, "underlying_session", session)
    branch = getattr(inner, "_branch_id", None)
    return {BRANCH_ID: branch} if isinstance(branch, str) else {}


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    """The argument ``name`` of a call, given by keyword or at position ``index``."""
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def _read(
    session: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], result: Any
) -> Attributes:
    """What ``get_items`` reports: the branch read and the items returned."""
    branch = _arg(args, kwargs, 1, "branch_id")
    found = {BRANCH_ID: branch} if isinstance(branch, str) else _branch(session)
    return found | {ITEMS: len(result)}


def _add(session: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], result: Any) -> Attributes:
    """What ``add_items`` reports: the branch, the items given and the events appended."""
    items = len(_arg(args, kwargs, 0, "items"))
    # add_items cuts its items into ItemsAdded events (projections.history.item_batches)
    # and leaves how many it appended on the session.
    events = getattr(session, "added_events", 0)
    return _branch(session) | {ITEMS: items, EVENTS: events}


def _pop(session: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], result: Any) -> Attributes:
    """What ``pop_item`` reports: the branch, and one item and event if it removed one."""
    removed = 0 if result is None else 1
    return _branch(session) | {ITEMS: removed, EVENTS: removed}


def _on_branch(events: int | None) -> Describe:
    """What a branch operation reports: the branch, ``events`` appended, branches listed."""

    def describe(
        session: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], result: Any
    ) -> Attributes:
        found = _branch(session)
        if events is not None:
            found[EVENTS] = events
        if isinstance(result, list):
            found["convstore.branches"] = len(result)
        return found

    return describe


# The operations traced, wherever a class defines them, and what each reports. Event
# counts are those the operation appends (the SessionStarted that opens a new session
# aside); clear_session reports none, as it appends one or two.
OPERATIONS: dict[str, Describe] = {
    "get_items": _read,
    "add_items": _add,
    "pop_item": _pop,
    "clear_session": _on_branch(None),
    "create_branch_from_turn": _on_branch(2),
    "create_branch_from_item": _on_branch(2),
    "create_branch_from_content": _on_branch(2),
    "switch_to_branch": _on_branch(1),
    "delete_branch": _on_branch(None),
    "list_branches": _on_branch(None),
    "get_branch_tree": _on_branch(None),
}

# True inside a traced operation of this task: nested operations make no span.
_inside: ContextVar[bool] = ContextVar("convstore_traced", default=False)


def _version() -> str:
    """convstore's installed version, for the tracer ("0" in an uninstalled checkout)."""
    try:
        return metadata.version("convstore")
    except metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "0"


def instrument(cls: C) -> C:
    """Wrap ``cls``'s own session operations in spans (unchanged without OpenTelemetry)."""
    if trace is None:
        return cls
    tracer = trace.get_tracer("convstore", _version())
    for name, describe in OPERATIONS.items():
        method = cls.__dict__.get(name)
        if method is not None:
            setattr(cls, name, _traced(tracer, name, method, describe))
    return cls


# The providers of an application that configured no SDK: no span could be recorded,
# so the operation runs unwrapped (the API's no-op span has a cost: docs/observability.md).
_NO_SDK = () if trace is None else (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def _traced(tracer: Any, name: str, method: Any, describe: Describe) -> Any:
    """``method`` in a span named after ``name``, unless one is open or no SDK is set."""
    span_name = f"convstore.{name}"

    @functools.wraps(method)
    async def operation(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _inside.get() or isinstance(trace.get_tracer_provider(), _NO_SDK):
            return await method(self, *args, **kwargs)
        token = _inside.set(True)
        try:
            with tracer.start_as_current_span(
                span_name,
                attributes={SESSION_ID: self.session_id, DB_SYSTEM: self.store.dialect_name},
            ) as span:
                result = await method(self, *args, **kwargs)
                if span.is_recording():
                    span.set_attributes(describe(self, args, kwargs, result))
                return result
        finally:
            _inside.reset(token)

    return operation
