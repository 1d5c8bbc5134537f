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
from pathlib import Path

import pytest

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
    """Interpreters named in CONVSTORE_TEST_PYTHONS (with convstore's wheel installed)."""
    return [p for p in os.environ.get("CONVSTORE_TEST_PYTHONS", "").split(os.pathsep) if p]


@pytest.mark.skipif(not other_pythons(), reason="set CONVSTORE_TEST_PYTHONS to run")
@pytest.mark.parametrize("python", other_pythons())
def test_the_installed_wheel_on_other_pythons(python: str, tmp_path: Path) -> None:
    """convstore's wheel installed in another Python's environment (with a stand-in
    ``agents`` package, the SDK's import name): the shipped ``.pth``/``.start`` files
    install the alias there, and a user's ``sessions.py`` does not capture it."""
    (tmp_path / "sessions.py").write_text("HIJACKED = True\n")
    code = "import json, agents.sessions as a\nprint(json.dumps({'file': a.__file__}))\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    installed = Path(json.loads(done.stdout)["file"])
    assert installed.parts[-2:] == ("sessions", "__init__.py")
    assert "site-packages" in installed.parts
