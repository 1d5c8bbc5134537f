"""convstore's sessions: drop-in implementations of the Agents SDK Session protocol.

The public names are imported on first use (PEP 562): ``import sessions`` alone loads
none of SQLAlchemy, the drivers or the event store, so the ``convstore`` command
(``sessions.cli``) answers ``--version`` and ``--help`` without them. The error classes
are exported here too: users import them from where the sessions come from.

A module of the user's named like one of convstore's packages (an ``eventstore.py``
next to the script) shadows it; the import error then names the file and the fix.
"""

import os
import sys
from importlib import import_module

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

    from eventstore import (
        ArgumentTypeError,
        BranchError,
        CancelledAfterCommit,
        CompactionConflictError,
        ConcurrencyError,
        ConfigurationError,
        ConnectionLostError,
        ConvstoreError,
        DecodeError,
        DecryptionError,
        IntegrityError,
        InvalidArgumentError,
        InvalidKeyError,
        KeyNotFoundError,
        KeyShreddedError,
        LockTimeoutError,
        MissingDependencyError,
        NotEncryptedError,
        OperationalError,
        PersistenceError,
        PoolerError,
        ProjectionMismatchError,
        SchemaError,
        SerializationError,
        StoreClosedError,
        StoreInUseError,
        TamperedError,
        TransientError,
        TurnNotFoundError,
        WrongKeyError,
    )

    from .advanced import AdvancedSQLAlchemySession, AdvancedSQLiteSession
    from .base import StoreSession
    from .branching import BranchingSession, BranchNode
    from .compacting import CompactingSession
    from .compaction import CompactionResult
    from .crypto.keyring import rotate_master_key, shred_session
    from .encrypted import EncryptedSession, purge_expired
    from .sqlalchemy import SQLAlchemySession
    from .sqlite import SQLiteSession, release_sqlite_files
    from .summarizers import AgentSummarizer, ResponsesCompactor, Summary
    from .tables import create_tables
    from .usage import TurnUsage, UsageSession, UsageStats, UsageTotals, render_usage, usage_report

# Where each public name is defined.
_WHERE = {
    "AdvancedSQLAlchemySession": ".advanced",
    "AdvancedSQLiteSession": ".advanced",
    "AgentSummarizer": ".summarizers",
    "ArgumentTypeError": "eventstore",
    "BranchError": "eventstore",
    "BranchNode": ".branching",
    "BranchingSession": ".branching",
    "CancelledAfterCommit": "eventstore",
    "CompactingSession": ".compacting",
    "CompactionConflictError": "eventstore",
    "CompactionResult": ".compaction",
    "ConcurrencyError": "eventstore",
    "ConfigurationError": "eventstore",
    "ConnectionLostError": "eventstore",
    "ConvstoreError": "eventstore",
    "DecodeError": "eventstore",
    "DecryptionError": "eventstore",
    "EncryptedSession": ".encrypted",
    "IntegrityError": "eventstore",
    "InvalidArgumentError": "eventstore",
    "InvalidKeyError": "eventstore",
    "KeyNotFoundError": "eventstore",
    "KeyShreddedError": "eventstore",
    "LockTimeoutError": "eventstore",
    "MissingDependencyError": "eventstore",
    "NotEncryptedError": "eventstore",
    "OperationalError": "eventstore",
    "PersistenceError": "eventstore",
    "PoolerError": "eventstore",
    "ResponsesCompactor": ".summarizers",
    "ProjectionMismatchError": "eventstore",
    "SQLAlchemySession": ".sqlalchemy",
    "SQLiteSession": ".sqlite",
    "SchemaError": "eventstore",
    "SerializationError": "eventstore",
    "StoreClosedError": "eventstore",
    "StoreInUseError": "eventstore",
    "StoreSession": ".base",
    "Summary": ".summarizers",
    "TamperedError": "eventstore",
    "TransientError": "eventstore",
    "TurnNotFoundError": "eventstore",
    "TurnUsage": ".usage",
    "UsageSession": ".usage",
    "UsageStats": ".usage",
    "UsageTotals": ".usage",
    "WrongKeyError": "eventstore",
    "create_tables": ".tables",
    "purge_expired": ".encrypted",
    "release_sqlite_files": ".sqlite",
    "render_usage": ".usage",
    "rotate_master_key": ".crypto.keyring",
    "shred_session": ".crypto.keyring",
    "usage_report": ".usage",
}


def __getattr__(name: str) -> "Any":
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(import_module(module, __name__), name)
    except ImportError as error:
        clearer = _shadowing(error)
        if clearer is None:
            raise
        raise clearer from error
    globals()[name] = value  # the next look-up is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


def _shadowing(error: ImportError) -> ImportError | None:
    """A clearer error than ``error`` if a user's module shadows a convstore package."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("eventstore", "projections"):
        module = sys.modules.get(name)
        if module is None:
            import importlib.util

            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                continue
            origin = None if spec is None else spec.origin
        else:
            origin = getattr(module, "__file__", None)
        if not isinstance(origin, str):
            continue
        if os.path.abspath(origin) == os.path.join(root, name, "__init__.py"):
            continue  # convstore's own
        return ImportError(
            f"convstore's sessions cannot import its {name!r} package because "
            f"{origin} is imported under that name instead: a module of yours named "
            f"{name!r} (next to your script, or earlier on sys.path) shadows convstore's. "
            f"Rename {origin} (and delete the __pycache__ folder beside it), then run "
            f"again. ({error})",
            name=name,
            path=origin,
        )
    return None


__all__ = [
    "AdvancedSQLAlchemySession",
    "AdvancedSQLiteSession",
    "AgentSummarizer",
    "ArgumentTypeError",
    "BranchError",
    "BranchNode",
    "BranchingSession",
    "CancelledAfterCommit",
    "CompactingSession",
    "CompactionConflictError",
    "CompactionResult",
    "ConcurrencyError",
    "ConfigurationError",
    "ConnectionLostError",
    "ConvstoreError",
    "DecodeError",
    "DecryptionError",
    "EncryptedSession",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "KeyNotFoundError",
    "KeyShreddedError",
    "LockTimeoutError",
    "MissingDependencyError",
    "NotEncryptedError",
    "OperationalError",
    "PersistenceError",
    "PoolerError",
    "ProjectionMismatchError",
    "ResponsesCompactor",
    "SQLAlchemySession",
    "SQLiteSession",
    "SchemaError",
    "SerializationError",
    "StoreClosedError",
    "StoreInUseError",
    "StoreSession",
    "Summary",
    "TamperedError",
    "TransientError",
    "TurnNotFoundError",
    "TurnUsage",
    "UsageSession",
    "UsageStats",
    "UsageTotals",
    "WrongKeyError",
    "create_tables",
    "purge_expired",
    "release_sqlite_files",
    "render_usage",
    "rotate_master_key",
    "shred_session",
    "usage_report",
]
