"""convstore's read side: pure folds, the tables the append keeps current, rebuild, verify."""

from .history import HistoryProjector, HistoryState, apply, fold, item_seq
from .maintenance import Difference, VerifyReport, rebuild, verify

__all__ = [
    "Difference",
    "HistoryProjector",
    "HistoryState",
    "VerifyReport",
    "apply",
    "fold",
    "item_seq",
    "rebuild",
    "verify",
]
