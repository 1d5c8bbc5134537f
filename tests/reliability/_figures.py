"""Figures the reliability tests measure, for docs/reliability.md.

Set ``CONVSTORE_FIGURES=path`` to have each test append its figures (JSON Lines) to
that file; without it nothing is written. Tests never assert on a wall-clock time.
"""

from __future__ import annotations

import json
import os
from typing import Any


def record(test: str, **figures: Any) -> None:
    path = os.environ.get("CONVSTORE_FIGURES")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"test": test, **figures}) + "\n")
