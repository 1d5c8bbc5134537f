"""Every ```python block of the documentation pages listed here runs, offline.

A page's blocks run in order in one fresh interpreter (a page reads like a notebook:
a later block may use what an earlier one defined), in an empty temporary folder, with
the checkout first on ``sys.path`` and no ``OPENAI_API_KEY``. Blocks may use top-level
``await`` (as the pages' readers would in an async context); they then share one event
loop. A block that calls ``asyncio.run`` itself runs as plain code. Blocks in other
languages (shell commands, output) are not run here; the tests of the feature cover
them (e.g. tests/test_fastapi_app.py runs the app under uvicorn).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PAGES = [
    "docs/branches.md",
    "docs/fastapi.md",
    "docs/observability.md",
    "docs/getting-started.md",
    "docs/concepts.md",
    "docs/sessions.md",
    "docs/cli.md",
    "docs/operations.md",
    "docs/migrating.md",
    "docs/scaling.md",
    "docs/usage.md",
    "docs/encryption.md",
    "docs/audit.md",
]

# ```python at the start of a line, up to the closing fence.
_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)

RUNNER = """
import ast, asyncio, inspect, json, sys
page, blocks = sys.argv[1], json.loads(sys.stdin.read())
namespace = {"__name__": "__main__"}
with asyncio.Runner() as loop:
    for line, source in blocks:
        code = compile(
            "\\n" * (line - 1) + source, page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        if code.co_flags & inspect.CO_COROUTINE:
            loop.run(eval(code, namespace))
        else:
            exec(code, namespace)
print(f"ran {len(blocks)} blocks")
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the block's first code line, code) of each python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def test_the_block_finder() -> None:
    text = "intro\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = x\n")]


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs(page: str, tmp_path: Path) -> None:
    blocks = python_blocks((ROOT / page).read_text())
    assert blocks, f"{page} has no python block"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", RUNNER, str(ROOT / page)],
        input=json.dumps(blocks),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{page}:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.endswith(f"ran {len(blocks)} blocks\n")
