"""convstore's sessions: drop-in implementations of the Agents SDK Session protocol."""

from .advanced import AdvancedSQLAlchemySession, AdvancedSQLiteSession
from .base import StoreSession
from .branching import BranchingSession, BranchNode
from .sqlalchemy import SQLAlchemySession
from .sqlite import SQLiteSession
from .usage import TurnUsage, UsageSession, UsageStats, UsageTotals, render_usage, usage_report

__all__ = [
    "AdvancedSQLAlchemySession",
    "AdvancedSQLiteSession",
    "BranchNode",
    "BranchingSession",
    "SQLAlchemySession",
    "SQLiteSession",
    "StoreSession",
    "TurnUsage",
    "UsageSession",
    "UsageStats",
    "UsageTotals",
    "render_usage",
    "usage_report",
]
