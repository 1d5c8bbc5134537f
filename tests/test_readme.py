"""Every ```python block of README.md runs as written.

Each block runs in a fresh namespace, in a fresh working directory (the quickstart
writes ``conversations.db`` there), in a fresh process-wide state only as far as the
block itself goes: a block must be a complete program. Warnings are errors here too,
so a block that leaks a session fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[int, str]]:
    """(line number, source) of every python block."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


def test_the_readme_has_python_blocks() -> None:
    assert len(python_blocks()) >= 3


@pytest.mark.parametrize(
    ("line", "source"), python_blocks(), ids=[f"README.md:{n}" for n, _ in python_blocks()]
)
def test_readme_block_runs(
    line: int, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "DATABASE_ASYNC_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    code = compile("\n" * (line - 1) + source, str(README), "exec")
    exec(code, {"__name__": "__readme__"})
