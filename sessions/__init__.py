"""convstore's sessions: drop-in implementations of the Agents SDK Session protocol."""

import os
import sys


def _shadowing(error: ImportError) -> ImportError | None:
    """A clearer error than ``error`` if a module of the user's is imported under the
    name of one of convstore's packages (an ``eventstore.py`` next to the script): the
    file, what happened, and what to do. None if that is not the cause."""
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


# The errors are exported here too: users import from where the sessions come from.
try:
    from eventstore import (
        ArgumentTypeError,
        BranchError,
        CancelledAfterCommit,
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
    from .encrypted import EncryptedSession, purge_expired, rotate_master_key, shred_session
    from .sqlalchemy import SQLAlchemySession
    from .sqlite import SQLiteSession
    from .tables import create_tables
    from .usage import TurnUsage, UsageSession, UsageStats, UsageTotals, render_usage, usage_report
except ImportError as _error:
    _clearer = _shadowing(_error)
    if _clearer is None:
        raise
    raise _clearer from _error

__all__ = [
    "AdvancedSQLAlchemySession",
    "AdvancedSQLiteSession",
    "ArgumentTypeError",
    "BranchError",
    "BranchNode",
    "BranchingSession",
    "CancelledAfterCommit",
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
    "ProjectionMismatchError",
    "SQLAlchemySession",
    "SQLiteSession",
    "SchemaError",
    "SerializationError",
    "StoreClosedError",
    "StoreInUseError",
    "StoreSession",
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
    "render_usage",
    "rotate_master_key",
    "shred_session",
    "usage_report",
]
