"""Session arguments: the SDK's settings class, and the SDK keywords convstore refuses.

The SDK's Runner calls ``session.session_settings.resolve(run_config.session_settings)``,
so a session must hold the SDK's :class:`SessionSettings`, not a look-alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from eventstore import ArgumentTypeError, InvalidArgumentError
from eventstore.store import check_count


@cache
def _sdk() -> tuple[Any, Any] | None:
    """The SDK's SessionSettings class and coercion function, or None without the SDK.

    Imported on first use, not at import time: importing the SDK takes about two
    seconds, and the ``convstore`` command (which imports this package) never needs it.
    """
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
# Keywords of the SDK's session classes that convstore does not take, and what to do.
_SDK_ONLY = {
    "sessions_table": _APART,
    "messages_table": _APART,
    "logger": (
        "convstore logs through logging.getLogger('convstore'), configure that logger instead"
    ),
    "ensure_ascii": (
        "convstore stores every item as the exact UTF-8 JSON it encodes to, readable by "
        "any SQL client, so there is nothing to choose"
    ),
}


def refuse_unknown_keywords(cls: type, keywords: Mapping[str, object]) -> None:
    """Raise a TypeError for keywords ``cls`` does not take, naming the alternative."""
    for name in keywords:
        reason = _SDK_ONLY.get(name)
        if reason is not None:
            raise ArgumentTypeError(f"{cls.__name__}() does not take {name}=: {reason}")
        raise ArgumentTypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
