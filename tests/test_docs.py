"""Every ```python block of the documentation pages listed here runs, offline.

A page's blocks run in order in one fresh interpreter (a page reads like a notebook:
a later block may use what an earlier one defined), in an empty temporary folder, with
the checkout first on ``sys.path`` and no ``OPENAI_API_KEY``. Blocks may use top-level
``await`` (as the pages' readers would in an async context); they then share one event
loop. A block that calls ``asyncio.run`` itself runs as plain code. Every other block
must also paste into ``python -m asyncio`` as it stands, the way
docs/getting-started.md tells readers to run them. Blocks in other languages (shell
commands, output) are not run here; the tests of the feature cover them (e.g.
tests/test_fastapi_app.py runs the app under uvicorn).
"""

from __future__ import annotations

import ast
import asyncio
import codeop
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SERVER_ENV, reset_server_database

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
    "docs/subscriptions.md",
    "docs/viewer.md",
    "docs/compaction.md",
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


def paste_errors(source: str) -> list[tuple[int, str]]:
    """The syntax errors of ``source`` pasted line by line into ``python -m asyncio``.

    That REPL compiles the lines typed so far after each one, as ``codeop`` does, with
    top-level ``await`` allowed: a blank line inside an indented block ends the
    statement there, and a statement right after an indented block, without a blank
    line between, is refused."""
    compiler = codeop.CommandCompiler()
    compiler.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    buffer: list[str] = []
    errors: list[tuple[int, str]] = []
    for number, line in enumerate([*source.splitlines(), ""], 1):
        buffer.append(line)
        try:
            complete = compiler("\n".join(buffer), "<console>", "single") is not None
        except SyntaxError as error:
            errors.append((number, f"{error.msg}: {line.strip()}"))
            complete = True
        if complete:
            buffer = []
    return errors


def test_the_paste_check() -> None:
    assert paste_errors("async with f() as x:\n    await x\n\nprint(x)\n") == []
    assert paste_errors("for x in y:\n    a()\nb()\n") == [(3, "invalid syntax: b()")]
    assert paste_errors("if x:\n    a()\n\n    b()\n") == [(4, "unexpected indent: b()")]


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_pastes_into_the_asyncio_repl(page: str) -> None:
    """docs/getting-started.md tells readers to paste the blocks into
    ``python -m asyncio``; a block that calls ``asyncio.run`` is a whole program."""
    text = (ROOT / page).read_text()
    errors = [
        f"{page}:{first + number - 1}: {message}"
        for first, source in python_blocks(text)
        if "asyncio.run(" not in source
        for number, message in paste_errors(source)
    ]
    assert errors == []


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs(page: str, tmp_path: Path) -> None:
    blocks = python_blocks((ROOT / page).read_text())
    assert blocks, f"{page} has no python block"
    # A page's server blocks expect a database as a reader's would be, not what the
    # tests before it left there (e.g. a projection only a test module defines).
    for env_name in SERVER_ENV.values():
        url = os.environ.get(env_name)
        if url:
            asyncio.run(reset_server_database(url))
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
