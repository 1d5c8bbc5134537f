"""The wheel, installed with no extras into a fresh virtual environment.

Builds the wheel with ``python -m build`` (isolated: it fetches the build backend from
the package index) and installs it with pip, which fetches the three required
dependencies. Everything then runs in that environment's interpreter, from a folder
outside the checkout, so nothing of the source tree or of the dev environment is seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``python`` of a new virtual environment holding the wheel and nothing else."""
    work = tmp_path_factory.mktemp("packaging")
    built = run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work), str(ROOT)], ROOT)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = work.glob("convstore-*.whl")
    venv.create(work / "env", with_pip=True)
    python = work / "env" / "bin" / "python"
    installed = run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], work)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


def in_fresh(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    return run([str(python), "-c", textwrap.dedent(code)], python.parents[2], timeout=120)


def test_only_the_required_dependencies_are_installed(fresh: Path) -> None:
    done = in_fresh(
        fresh,
        """
        import importlib.util
        for name in ("asyncpg", "asyncmy", "agents", "opentelemetry", "fastapi"):
            print(name, importlib.util.find_spec(name) is not None)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "asyncpg", "False", "asyncmy", "False", "agents", "False",
        "opentelemetry", "False", "fastapi", "False",
    ]  # fmt: skip


def test_sessions_import_and_work_on_sqlite(fresh: Path) -> None:
    done = in_fresh(
        fresh,
        """
        import asyncio
        import sessions
        from sessions import SQLiteSession, StoreSession

        async def main():
            async with SQLiteSession("user_123") as session:
                await session.add_items([{"role": "user", "content": "Hello"}])
                print(await session.get_items())
                print((await session.pop_item())["content"])

        asyncio.run(main())
        # No OpenTelemetry: the session methods are the plain ones.
        print(hasattr(StoreSession.get_items, "__wrapped__"))
        print(sessions.__file__.startswith(__import__("sys").prefix))
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[{'role': 'user', 'content': 'Hello'}]",
        "Hello",
        "False",
        "True",
    ]


@pytest.mark.parametrize(
    ("url", "package", "extra"),
    [
        ("postgresql://user@127.0.0.1/db", "asyncpg", "postgres"),
        ("postgresql+asyncpg://user@127.0.0.1/db", "asyncpg", "postgres"),
        ("mysql://root@127.0.0.1/db", "asyncmy", "mysql"),
    ],
)
def test_a_server_url_without_its_extra_names_the_extra(
    fresh: Path, url: str, package: str, extra: str
) -> None:
    done = in_fresh(
        fresh,
        f"""
        from eventstore import MissingDependencyError
        from sessions import SQLAlchemySession
        try:
            SQLAlchemySession("s", db_url={url!r})
        except MissingDependencyError as error:
            print(isinstance(error, ImportError), error.package, error.extra)
            print(error)
        """,
    )
    assert done.returncode == 0, done.stderr
    first, message = done.stdout.splitlines()
    assert first == f"True {package} {extra}"
    assert f"pip install 'convstore[{extra}]'" in message


def test_the_agents_alias_without_the_agents_extra_names_the_extra(fresh: Path) -> None:
    done = in_fresh(
        fresh,
        """
        try:
            from agents.sessions import SQLiteSession
        except ModuleNotFoundError as error:
            print(type(error).__name__, error.name, error.extra)
            print(error)
        """,
    )
    assert done.returncode == 0, done.stderr
    first, message = done.stdout.splitlines()
    assert first == "MissingDependencyError agents agents"
    assert "pip install 'convstore[agents]'" in message


def test_version_metadata_and_the_command(fresh: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    done = in_fresh(
        fresh,
        """
        from importlib import metadata
        meta = metadata.metadata("convstore")
        print(metadata.version("convstore"))
        print(sorted(meta.get_all("Provides-Extra")))
        print(len(meta.get_all("Classifier")))
        print(meta["Requires-Python"])
        """,
    )
    assert done.returncode == 0, done.stderr
    version, extras, classifiers, python = done.stdout.splitlines()
    assert version == project["version"]
    assert extras == str(sorted(project["optional-dependencies"]))
    assert int(classifiers) == len(project["classifiers"])
    assert python == project["requires-python"]
    command = fresh.parent / "convstore"
    helped = run([str(command), "--help"], fresh.parents[2])
    assert helped.returncode == 0, helped.stderr
    assert "usage: convstore" in helped.stdout
    versioned = run([str(command), "--version"], fresh.parents[2])
    assert versioned.returncode == 0, versioned.stderr
    assert versioned.stdout.strip() == f"convstore {project['version']}"


def test_the_viewer_s_files_are_in_the_wheel(fresh: Path) -> None:
    """Templates, stylesheet and script ship inside the package (nothing is fetched)."""
    done = in_fresh(
        fresh,
        """
        from importlib import resources
        root = resources.files("sessions.viewer")
        for name in ("templates/base.html", "templates/conversation.html",
                     "static/viewer.css", "static/viewer.js"):
            print(name, root.joinpath(name).is_file())
        """,
    )
    assert done.returncode == 0, done.stderr
    assert all(line.endswith(" True") for line in done.stdout.splitlines()), done.stdout
    assert len(done.stdout.splitlines()) == 4


def test_serve_without_the_web_extra_names_the_extra(fresh: Path, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    command = fresh.parent / "convstore"
    assert run([str(command), str(db), "init"], tmp_path).returncode == 0
    done = run([str(command), str(db), "serve"], tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip install 'convstore[web]'" in done.stderr
    assert done.stderr.count("\n") == 1
