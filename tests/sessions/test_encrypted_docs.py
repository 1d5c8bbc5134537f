"""The example at the top of docs/encryption.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "encryption.md"


def test_the_first_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), str(DOC), "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out == "user_123 is unrecoverable\n"
    files = list(tmp_path.glob("conversations.db*"))
    assert files
    for file in files:
        assert b"12-345" not in file.read_bytes()
