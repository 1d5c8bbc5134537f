"""convstore's sessions: drop-in implementations of the Agents SDK Session protocol."""

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
