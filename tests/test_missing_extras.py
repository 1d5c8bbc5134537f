"""A feature whose extra is not installed says which extra to install.

Each case runs in a fresh interpreter of the development environment in which the
optional package is made unimportable: the Agents SDK by taking ``agents`` away from
the path finder (so that no finder before convstore's alias hook finds it, as in an
environment without the SDK), the drivers with a ``None`` entry in ``sys.modules``.
tests/test_packaging.py checks the same in a virtual environment that really lacks them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HIDE_THE_SDK = """
import importlib.util
import sys
from importlib.machinery import PathFinder


class WithoutTheSdk:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "agents" or name.startswith("agents."):
            return None
        return PathFinder.find_spec(name, path, target)

    invalidate_caches = PathFinder.invalidate_caches


sys.meta_path[sys.meta_path.index(PathFinder)] = WithoutTheSdk
assert importlib.util.find_spec("agents") is None
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "statement",
    [
        "from agents.sessions import SQLiteSession",
        "import agents.sessions",
        "importlib.import_module('agents.sessions')",
    ],
)
def test_the_agents_alias_without_the_sdk_names_the_extra(statement: str) -> None:
    done = run_python(
        HIDE_THE_SDK
        + f"""
try:
    {statement}
except ModuleNotFoundError as error:  # what code catching the plain error sees
    from eventstore import MissingDependencyError

    print(isinstance(error, MissingDependencyError), error.name, error.extra)
    print(error)
"""
    )
    assert done.returncode == 0, done.stderr
    first, message = done.stdout.splitlines()
    assert first == "True agents agents"
    assert message == (
        "the 'openai-agents' package is required for this feature: pip install 'convstore[agents]'"
    )


def test_without_the_sdk_everything_else_is_left_as_it_was() -> None:
    done = run_python(
        HIDE_THE_SDK
        + """
import asyncio

from eventstore import MissingDependencyError
from sessions import SQLiteSession

try:
    import agents  # the SDK itself, not the alias: Python's own error
except ModuleNotFoundError as error:
    print(type(error).__name__, error.name)


async def main():
    async with SQLiteSession("user_123", session_settings={"limit": 1}) as session:
        await session.add_items([{"role": "user", "content": c} for c in "ab"])
        print(await session.get_items())

asyncio.run(main())
"""
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ModuleNotFoundError agents",
        "[{'role': 'user', 'content': 'b'}]",
    ]


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://app@127.0.0.1/app", "asyncpg", "postgres"),
        ("postgresql+asyncpg://app@127.0.0.1/app", "asyncpg", "postgres"),
        ("mysql://app@127.0.0.1/app", "asyncmy", "mysql"),
        ("mariadb+asyncmy://app@127.0.0.1/app", "asyncmy", "mysql"),
    ],
)
def test_a_server_url_without_its_driver_names_the_extra(url: str, module: str, extra: str) -> None:
    done = run_python(
        f"""
import sys
sys.modules[{module!r}] = None  # as if the driver were not installed

from eventstore import EventStore, MissingDependencyError
from sessions import SQLAlchemySession

for open_it in (
    lambda: SQLAlchemySession("user_123", db_url={url!r}),
    lambda: EventStore({url!r}),
):
    try:
        open_it()
    except ModuleNotFoundError as error:
        print(type(error).__name__, error.name, error.extra)
        print(error)
"""
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0::2] == [f"MissingDependencyError {module} {extra}"] * 2
    assert all(f"pip install 'convstore[{extra}]'" in line for line in lines[1::2])


def test_the_command_names_the_extra_in_its_one_line_error() -> None:
    done = run_python(
        """
import sys
sys.modules["asyncpg"] = None
from sessions.cli import main
main()
""",
        "postgresql://app@127.0.0.1/app",
        "sessions",
    )
    assert done.returncode == 2
    assert done.stderr == (
        "convstore: the 'asyncpg' package is required for this feature: "
        "pip install 'convstore[postgres]'\n"
    )
