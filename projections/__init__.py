"""convstore's read side: pure folds, the tables the append keeps current, rebuild, verify."""

from .history import BranchInfo, HistoryState, apply, describe, fold, item_seq
from .history_table import HistoryProjector, ViewRow
from .maintenance import Difference, VerifyReport, rebuild, verify
from .usage import Figures, Tokens
from .usage_table import UsageProjector

__all__ = [
    "BranchInfo",
    "Difference",
    "Figures",
    "HistoryProjector",
    "HistoryState",
    "Tokens",
    "UsageProjector",
    "VerifyReport",
    "ViewRow",
    "apply",
    "describe",
    "fold",
    "item_seq",
    "rebuild",
    "verify",
]
