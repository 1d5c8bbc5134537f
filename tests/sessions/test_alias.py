"""The ``agents.sessions`` alias: bound to convstore's own package, never captured by a
user's ``sessions`` module, free at start-up, and installed on every Python we support
(the ``.pth`` import line up to 3.14, the PEP 829 ``.start`` entry point from 3.15).

Each check runs in a fresh interpreter, since the alias acts at start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ..conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]  # the checkout: its modules come first

REPORT = """
import json, sys
from agents.sessions import SQLiteSession
import agents.sessions as alias
import sessions
print(json.dumps({
    "alias_file": alias.__file__,
    "alias_name": alias.__name__,
    "same_class": SQLiteSession is alias.SQLiteSession,
    "sessions_file": getattr(sessions, "__file__", None),
    "hijacked": getattr(sessions, "HIJACKED", False),
    "is_sessions": alias is sessions,
}))
"""


def run(code: str, cwd: Path, *args: str, python: str = sys.executable) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [python, *args, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ours(path: object) -> bool:
    return Path(str(path)).resolve() == ROOT / "sessions" / "__init__.py"


def test_alias_is_the_sessions_package(tmp_path: Path) -> None:
    seen = run(REPORT, tmp_path)
    assert ours(seen["alias_file"])
    assert seen["is_sessions"], "one package object, whichever name imported it"
    assert seen["same_class"]


def test_a_users_sessions_module_does_not_capture_the_alias(tmp_path: Path) -> None:
    (tmp_path / "sessions.py").write_text("HIJACKED = True\n")
    seen = run(REPORT, tmp_path)
    assert ours(seen["alias_file"]), "agents.sessions is still convstore's"
    assert seen["alias_name"] == "_convstore_sessions"
    assert seen["hijacked"], "and the user's own 'import sessions' still gets theirs"
    assert not seen["is_sessions"]


def test_a_users_sessions_imported_first_does_not_capture_it(tmp_path: Path) -> None:
    (tmp_path / "sessions.py").write_text("HIJACKED = True\n")
    seen = run("import sessions\n" + REPORT, tmp_path)
    assert ours(seen["alias_file"])
    assert seen["hijacked"]


def test_start_up_imports_nothing_but_the_finder(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "print(json.dumps({'typing': 'typing' in sys.modules,\n"
        " 'finder': [type(f).__name__ for f in sys.meta_path].count('AliasFinder'),\n"
        " 'agents': 'agents' in sys.modules, 'sessions': 'sessions' in sys.modules}))\n"
    )
    seen = run(code, tmp_path)
    assert seen == {"typing": False, "finder": 1, "agents": False, "sessions": False}


def test_the_pep_829_start_file_installs_the_alias(tmp_path: Path) -> None:
    """What Python 3.15+ does with ``convstore_agents_alias.start``, done by hand.

    ``-S`` turns off ``site`` (so no ``.pth`` line runs); the entry point named in the
    ``.start`` file is then resolved and called exactly as PEP 829 specifies.
    """
    entry = (ROOT / "convstore_agents_alias.start").read_text().strip()
    assert (ROOT / "convstore_agents_alias.pth").read_text().strip() == (
        "import _convstore_agents_alias"
    )
    import site

    code = (
        "import sys, pkgutil\n"
        f"sys.path[1:1] = {[str(ROOT), *site.getsitepackages()]!r}\n"
        "import site\n"
        f"pkgutil.resolve_name({entry!r})()\n" + REPORT
    )
    seen = run(code, tmp_path, "-S")
    assert ours(seen["alias_file"])
    assert seen["is_sessions"]


def other_pythons() -> list[str]:
    """Interpreters named in CONVSTORE_TEST_PYTHONS, each with convstore's wheel
    installed (``python .ci/pythons.py`` makes them and prints the value)."""
    return [p for p in os.environ.get("CONVSTORE_TEST_PYTHONS", "").split(os.pathsep) if p]


def supported_versions() -> set[str]:
    """The 3.X versions pyproject.toml's classifiers say convstore supports."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: 3."
    return {c.rsplit(" ", 1)[1] for c in project["classifiers"] if c.startswith(prefix)}


def test_every_supported_python_is_tested() -> None:
    """The alias is promised on every supported Python: each needs an interpreter in
    CONVSTORE_TEST_PYTHONS (a failure under CI=true, as a missing server is)."""
    assert supported_versions() >= {"3.11", "3.12", "3.13"}
    listed = set()
    for python in other_pythons():
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        listed.add(done.stdout.strip())
    missing = sorted(supported_versions() - listed, key=lambda v: int(v.split(".")[1]))
    if missing:
        message = (
            f"no interpreter of Python {', '.join(missing)} in CONVSTORE_TEST_PYTHONS: set it "
            "to what `python .ci/pythons.py` prints (.ci/run does)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("python", other_pythons())
def test_the_installed_wheel_on_other_pythons(python: str, tmp_path: Path) -> None:
    """convstore's wheel installed in another Python's environment (beside a stand-in
    ``agents`` package, the SDK's import name): the shipped ``.pth``/``.start`` files
    install the alias there, and a user's ``sessions.py`` does not capture it."""
    (tmp_path / "sessions.py").write_text("HIJACKED = True\n")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "__init__.py").write_text("")
    code = (
        "import json, sys, agents.sessions as a, sessions\n"
        "print(json.dumps({'file': a.__file__, 'hijacked': getattr(sessions, 'HIJACKED', 0),"
        " 'version': '%d.%d' % sys.version_info[:2]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    installed = Path(seen["file"])
    assert installed.parts[-2:] == ("sessions", "__init__.py")
    assert "site-packages" in installed.parts, "the installed wheel, not this checkout"
    assert seen["hijacked"], "the user's own 'import sessions' still gets theirs"
    assert seen["version"] in supported_versions()
