"""Session arguments: the SDK's settings class, and the SDK keywords convstore refuses.

The SDK's Runner calls ``session.session_settings.resolve(run_config.session_settings)``,
so a session must hold the SDK's :class:`SessionSettings`, not a look-alike. The SDK is
imported on first use, not at import time: importing it is slow (docs/cli.md gives the
time), and the ``convstore`` command, which imports this package, never needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from eventstore import ArgumentTypeError, InvalidArgumentError, check_count


@cache
def _sdk() -> tuple[Any, Any] | None:
    """The SDK's SessionSettings class and coercion function, or None without the SDK."""
    try:
        from agents.memory.session_settings import SessionSettings, coerce_session_settings
    except ImportError:  # the 'agents' extra is not installed
        return None
    return SessionSettings, coerce_session_settings


@dataclass
class FallbackSessionSettings:
    """Stand-in with the SDK's shape, used only when openai-agents is not installed."""

    limit: int | None = None


def make_settings(value: Any) -> Any:
    """``value`` (None, a dict or a SessionSettings) as the settings object to keep.

    As in the SDK: an unknown key or a value that is neither a dict nor a settings
    object is a TypeError (:class:`ArgumentTypeError`), a bad value a ValueError
    (:class:`InvalidArgumentError`).
    """
    sdk = _sdk()
    try:
        if sdk is not None:
            settings_class, coerce = sdk
            settings = coerce(value) if value is not None else settings_class()
        elif value is None:
            settings = FallbackSessionSettings()
        elif isinstance(value, dict):
            settings = FallbackSessionSettings(**value)
        else:
            settings = value
    except TypeError as exc:
        raise ArgumentTypeError(f"session_settings: {exc}") from exc
    except ValueError as exc:
        raise InvalidArgumentError(f"session_settings: {exc}") from exc
    resolve_limit(None, settings)  # a bad limit is refused now, not at the first read
    return settings


def resolve_limit(explicit: int | None, settings: Any) -> int | None:
    """An explicit ``limit`` wins over ``settings.limit``; both must be from 0 to 2**63 - 1
    (one bound for every backend)."""
    limit = explicit if explicit is not None else getattr(settings, "limit", None)
    return None if limit is None else check_count("limit", limit)


_APART = (
    "convstore keeps its own tables (convstore_*); to keep two applications apart, "
    "give each its own SQLite file, PostgreSQL schema (engine_kwargs={'connect_args': "
    "{'server_settings': {'search_path': 'app_a'}}}) or MySQL/MariaDB database "
    "(README: 'Two applications in one database')"
)
# Keywords of the SDK's session classes that convstore honours only with one value (the
# one that asks for what convstore does anyway), and why it cannot honour another.
_ONLY_WITH = {
    # The SDK's default names: convstore's own tables, as without the keyword.
    "sessions_table": ("agent_sessions", _APART),
    "messages_table": ("agent_messages", _APART),
    # Non-ASCII stored as is: what convstore always does.
    "ensure_ascii": (
        False,
        "convstore stores every item as the exact UTF-8 JSON it encodes to (items come "
        "back the same either way); leave ensure_ascii out, or pass False",
    ),
}


def refuse_unknown_keywords(cls: type, keywords: Mapping[str, object]) -> None:
    """Accept the SDK keywords in ``keywords`` that convstore honours as given; raise a
    TypeError for any other, naming the reason and the alternative."""
    for name, value in keywords.items():
        if name not in _ONLY_WITH:
            raise ArgumentTypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
        honoured, reason = _ONLY_WITH[name]
        if type(value) is not type(honoured) or value != honoured:
            raise ArgumentTypeError(f"{cls.__name__}() does not take {name}={value!r}: {reason}")


def check_logger(value: object) -> logging.Logger | logging.LoggerAdapter[Any] | None:
    """``logger=`` (the SDK's keyword): a :class:`logging.Logger` (or adapter), or None."""
    if value is None or isinstance(value, logging.Logger | logging.LoggerAdapter):
        return value
    raise ArgumentTypeError(
        f"logger must be a logging.Logger (e.g. logging.getLogger('myapp')), not {value!r}"
    )
