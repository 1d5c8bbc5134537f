"""convstore's sessions: drop-in implementations of the Agents SDK Session protocol.

The public names are imported on first use (PEP 562): ``import sessions`` alone loads
none of SQLAlchemy, the drivers or the event store, so the ``convstore`` command
(``sessions.cli``) answers ``--version`` and ``--help`` without them.
"""

from importlib import import_module

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

    from eventstore import (
        DecryptionError,
        InvalidKeyError,
        KeyNotFoundError,
        KeyShreddedError,
        NotEncryptedError,
        TamperedError,
        WrongKeyError,
    )

    from .advanced import AdvancedSQLAlchemySession, AdvancedSQLiteSession
    from .base import StoreSession
    from .branching import BranchingSession, BranchNode
    from .encrypted import EncryptedSession, purge_expired, rotate_master_key, shred_session
    from .sqlalchemy import SQLAlchemySession
    from .sqlite import SQLiteSession
    from .tables import create_tables
    from .usage import TurnUsage, UsageSession, UsageStats, UsageTotals, render_usage, usage_report

# Where each public name is defined.
_WHERE = {
    "AdvancedSQLAlchemySession": ".advanced",
    "AdvancedSQLiteSession": ".advanced",
    "BranchNode": ".branching",
    "BranchingSession": ".branching",
    "DecryptionError": "eventstore",
    "EncryptedSession": ".encrypted",
    "InvalidKeyError": "eventstore",
    "KeyNotFoundError": "eventstore",
    "KeyShreddedError": "eventstore",
    "NotEncryptedError": "eventstore",
    "SQLAlchemySession": ".sqlalchemy",
    "SQLiteSession": ".sqlite",
    "StoreSession": ".base",
    "TamperedError": "eventstore",
    "TurnUsage": ".usage",
    "UsageSession": ".usage",
    "UsageStats": ".usage",
    "UsageTotals": ".usage",
    "WrongKeyError": "eventstore",
    "create_tables": ".tables",
    "purge_expired": ".encrypted",
    "render_usage": ".usage",
    "rotate_master_key": ".encrypted",
    "shred_session": ".encrypted",
    "usage_report": ".usage",
}


def __getattr__(name: str) -> "Any":
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # the next look-up is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "AdvancedSQLAlchemySession",
    "AdvancedSQLiteSession",
    "BranchNode",
    "BranchingSession",
    "DecryptionError",
    "EncryptedSession",
    "InvalidKeyError",
    "KeyNotFoundError",
    "KeyShreddedError",
    "NotEncryptedError",
    "SQLAlchemySession",
    "SQLiteSession",
    "StoreSession",
    "TamperedError",
    "TurnUsage",
    "UsageSession",
    "UsageStats",
    "UsageTotals",
    "WrongKeyError",
    "create_tables",
    "purge_expired",
    "render_usage",
    "rotate_master_key",
    "shred_session",
    "usage_report",
]
