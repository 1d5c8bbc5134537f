"""convstore's sessions: drop-in implementations of the Agents SDK Session protocol."""

from .base import StoreSession
from .sqlalchemy import SQLAlchemySession
from .sqlite import SQLiteSession

__all__ = ["SQLAlchemySession", "SQLiteSession", "StoreSession"]
