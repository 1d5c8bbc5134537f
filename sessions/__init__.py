"""convstore's sessions: drop-in implementations of the Agents SDK Session protocol."""

from .advanced import AdvancedSQLAlchemySession, AdvancedSQLiteSession
from .base import StoreSession
from .branching import BranchingSession, BranchNode
from .sqlalchemy import SQLAlchemySession
from .sqlite import SQLiteSession
from .tables import create_tables

__all__ = [
    "AdvancedSQLAlchemySession",
    "AdvancedSQLiteSession",
    "BranchNode",
    "BranchingSession",
    "SQLAlchemySession",
    "SQLiteSession",
    "StoreSession",
    "create_tables",
]
