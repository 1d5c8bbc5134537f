"""The Makefile uses a ready virtual environment as it is (tools/venv_ready.py decides)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "venv_ready.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convstore_venv_ready", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


venv_ready = load_script()


def project() -> dict[str, Any]:
    loaded: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return loaded


def test_this_environment_is_ready() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_a_stale_install_or_a_missing_requirement_is_not_ready() -> None:
    newer = project() | {"version": "99.0"}
    assert venv_ready.metadata_problems(newer) == [
        f"convstore {project()['version']} is installed, pyproject.toml has 99.0"
    ]
    moved = project() | {"scripts": {"convstore": "sessions.cli:other"}}
    assert venv_ready.metadata_problems(moved) == [
        "the installed entry points differ from pyproject.toml's"
    ]
    more = project() | {"dependencies": [*project()["dependencies"], "pytest>=999"]}
    [problem] = venv_ready.requirement_problems(more, ["dev"])
    assert problem.startswith("pytest ")
    assert problem.endswith("is installed, pytest>=999 is required")
    optional = project()["optional-dependencies"] | {"otel": ["no-such-distribution-xyz"]}
    # reached through dev -> convstore[..., otel]
    assert venv_ready.requirement_problems(
        project() | {"optional-dependencies": optional}, ["dev"]
    ) == ["no-such-distribution-xyz is not installed"]
    assert venv_ready.requirement_problems(project(), ["dev"]) == []
    # make demo asks for the agents extra only: the development tools are not needed.
    dev_only = project()["optional-dependencies"] | {"dev": ["no-such-distribution-xyz"]}
    with_dev_only = project() | {"optional-dependencies": dev_only}
    assert venv_ready.requirement_problems(with_dev_only, ["agents"]) == []
    assert venv_ready.requirement_problems(with_dev_only, ["dev"]) == [
        "no-such-distribution-xyz is not installed"
    ]


def test_an_environment_without_convstore_is_not_ready(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True
    )
    done = subprocess.run(
        [str(tmp_path / "bare" / "bin" / "python"), str(SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "sessions is not importable, not from this checkout" in done.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_installs_nothing_into_a_ready_environment() -> None:
    """PYTHON=false: creating a virtual environment, or pip, would fail the target."""
    done = subprocess.run(
        ["make", "-s", "install", f"VENV={sys.prefix}", "PYTHON=false"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_quick_subset_reaches_every_layer() -> None:
    """``make test-quick`` (pytest @tests/quick.txt): each entry exists, and each layer's
    test folder, the command, the FastAPI example and the docs are in it."""
    entries = (ROOT / "tests" / "quick.txt").read_text().split()
    for entry in entries:
        assert (ROOT / entry.split("::")[0]).is_file(), entry
    for part in [
        "tests/eventstore/",
        "tests/projections/",
        "tests/sessions/",
        "tests/reliability/",
        "tests/test_cli.py",
        "tests/test_fastapi_app.py",
        "tests/test_readme.py",
        "tests/test_docs.py",
        "tests/test_server_detection.py",
    ]:
        assert any(e.startswith(part) for e in entries), part
