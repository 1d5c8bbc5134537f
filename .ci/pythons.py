"""Virtual environments holding convstore's wheel, one per Python the package supports.

    python .ci/pythons.py [DIR]      (DIR defaults to build/pythons)

Prints their interpreters joined by ``os.pathsep``: the value of
``CONVSTORE_TEST_PYTHONS``, which ``tests/sessions/test_alias.py`` reads. The supported
versions are the ``Programming Language :: Python :: 3.X`` classifiers of
pyproject.toml; each is looked for as ``python3.X`` on PATH, then under pyenv's
versions (``$PYENV_ROOT``, by default ``~/.pyenv``). A version without an interpreter
is named on standard error and left out; under ``CI=true`` the alias test then fails
naming it. Environments are kept between runs; convstore's wheel is rebuilt and
reinstalled every time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = re.compile(r"Programming Language :: Python :: (3\.\d+)$")


def supported_versions() -> list[str]:
    """The 3.X versions pyproject.toml's classifiers name, oldest first."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = (CLASSIFIER.match(c) for c in project["classifiers"])
    return sorted((m.group(1) for m in found if m), key=lambda v: int(v.split(".")[1]))


def interpreter(version: str) -> str | None:
    """A ``python3.X`` for ``version``: on PATH, else the newest pyenv build of it."""
    on_path = shutil.which(f"python{version}")
    if on_path and "shims" not in Path(on_path).parts:  # a pyenv shim may point nowhere
        return on_path
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    builds = sorted(
        (p for p in pyenv.glob(f"{version}.*") if re.fullmatch(rf"{version}\.\d+", p.name)),
        key=lambda p: int(p.name.split(".")[2]),
    )
    for build in reversed(builds):
        python = build / "bin" / f"python{version}"
        if python.exists():
            return str(python)
    return None


def run(*command: str | Path) -> None:
    subprocess.run([str(c) for c in command], check=True, stdout=sys.stderr)


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build" / "pythons").resolve()
    wheels = target / "dist"
    shutil.rmtree(wheels, ignore_errors=True)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT)
    (wheel,) = wheels.glob("convstore-*.whl")
    pythons = []
    for version in supported_versions():
        found = interpreter(version)
        if found is None:
            print(f"no interpreter for Python {version} (python{version})", file=sys.stderr)
            continue
        env = target / version
        python = env / "bin" / "python"
        if not python.exists():
            run(found, "-m", "venv", env)
        run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel)
        run(python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", wheel)
        pythons.append(str(python))
    print(os.pathsep.join(pythons))


if __name__ == "__main__":
    main()
