"""Session settings: the SDK's own class when the Agents SDK is installed.

The SDK's Runner calls ``session.session_settings.resolve(run_config.session_settings)``,
so a session must hold the SDK's :class:`SessionSettings`, not a look-alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventstore import InvalidArgumentError
from eventstore.store import check_count

try:
    from agents.memory.session_settings import SessionSettings as _SDKSessionSettings
    from agents.memory.session_settings import coerce_session_settings as _coerce
except ImportError:  # the 'agents' extra is not installed
    _SDKSessionSettings = None  # type: ignore[assignment,misc]
    _coerce = None  # type: ignore[assignment]


@dataclass
class FallbackSessionSettings:
    """Stand-in with the SDK's shape, used only when openai-agents is not installed."""

    limit: int | None = None


def make_settings(value: Any) -> Any:
    """``value`` (None, a dict or a SessionSettings) as the settings object to keep."""
    try:
        if _coerce is not None:
            settings = _coerce(value) if value is not None else _SDKSessionSettings()
        elif value is None:
            settings = FallbackSessionSettings()
        elif isinstance(value, dict):
            settings = FallbackSessionSettings(**value)
        else:
            settings = value
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"session_settings: {exc}") from exc
    resolve_limit(None, settings)  # a bad limit is refused now, not at the first read
    return settings


def resolve_limit(explicit: int | None, settings: Any) -> int | None:
    """An explicit ``limit`` wins over ``settings.limit``; both must be from 0 to 2**63 - 1
    (one bound for every backend)."""
    limit = explicit if explicit is not None else getattr(settings, "limit", None)
    return None if limit is None else check_count("limit", limit)
