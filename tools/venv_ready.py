"""Is this virtual environment ready for the Makefile's targets? Exit 0 if so.

Run with the environment's own interpreter: ``.venv/bin/python tools/venv_ready.py
[EXTRA ...]`` (``dev`` when none is named). Ready means: convstore is installed from
this checkout (its packages import from here), its installed version and entry points
are those of pyproject.toml now, and every requirement pyproject.toml gives for the
extras (the base dependencies, the extras they name, and theirs) is installed in a
version that satisfies it. The Makefile then skips ``pip install``; otherwise this
prints what is missing or stale and exits 1, and the Makefile installs. A virtual
environment made by hand (``pip install -e '.[dev]'``) passes as well as one the
Makefile made.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("eventstore", "projections", "sessions")


def checkout_problems() -> list[str]:
    problems = []
    for package in PACKAGES:
        spec = find_spec(package)
        origin = Path(spec.origin).resolve() if spec and spec.origin else None
        if origin is None or not origin.is_relative_to(ROOT):
            where = f"from {origin.parent}" if origin else "not importable"
            problems.append(f"{package} is {where}, not from this checkout ({ROOT})")
    return problems


def metadata_problems(project: dict[str, Any]) -> list[str]:
    """The installed metadata is pyproject.toml's of now (version, entry points)."""
    try:
        dist = metadata.distribution(project["name"])
    except metadata.PackageNotFoundError:
        return [f"{project['name']} is not installed"]
    problems = []
    if dist.version != project["version"]:
        have, want = dist.version, project["version"]
        problems.append(f"{project['name']} {have} is installed, pyproject.toml has {want}")
    wanted = {("console_scripts", k, v) for k, v in project.get("scripts", {}).items()}
    for group, points in project.get("entry-points", {}).items():
        wanted |= {(group, k, v) for k, v in points.items()}
    installed = {(e.group, e.name, e.value) for e in dist.entry_points}
    if wanted != installed:
        problems.append("the installed entry points differ from pyproject.toml's")
    return problems


def requirement_problems(project: dict[str, Any], extras: Iterable[str]) -> list[str]:
    """Every requirement of ``extras`` (followed through the extras each names)."""
    try:  # pytest's dependency; without the dev extra, pip's own copy
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]
            from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[assignment]
        except ImportError:
            return ["neither packaging nor pip is installed"]
    own = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    todo = [Requirement(r) for r in project.get("dependencies", [])]
    todo += [Requirement(f"{project['name']}[{','.join(extras)}]")]
    seen: set[tuple[str, str]] = set()
    problems = []
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == own:  # one of our own extras: its requirements, from pyproject.toml
            for extra in sorted(req.extras - {e for n, e in seen if n == own}):
                seen.add((own, extra))
                todo += [Requirement(r) for r in optional.get(extra, [])]
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req} is not installed")
            continue
        if not req.specifier.contains(dist.version, prereleases=True):
            problems.append(f"{req.name} {dist.version} is installed, {req} is required")
        for extra in sorted(req.extras):  # e.g. sqlalchemy[asyncio] needs greenlet
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for text in dist.requires or []:
                sub = Requirement(text)
                if sub.marker is not None and sub.marker.evaluate({"extra": extra}):
                    todo.append(sub)
    return problems


def main(extras: list[str]) -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    problems = checkout_problems() or metadata_problems(project)
    problems += requirement_problems(project, extras or ["dev"])
    for problem in problems[:3]:
        print(f"{sys.prefix}: {problem}", file=sys.stderr)
    if len(problems) > 3:
        print(f"{sys.prefix}: and {len(problems) - 3} more requirements", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
