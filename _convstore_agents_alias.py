"""Makes ``from agents.sessions import SQLiteSession`` import convstore's sessions.

Run at interpreter start-up: by ``convstore_agents_alias.pth`` (an ``import`` line)
on Python up to 3.14, by the entry point in ``convstore_agents_alias.start`` on Python
3.15 and later (PEP 829: a ``.start`` file disables the import lines of the ``.pth``
file of the same name, and ``.pth`` import lines are ignored from 3.18). Either way
the finder is installed once.

Start-up pays for one small class and one entry in ``sys.meta_path``: this module
imports only ``sys`` (already loaded). Nothing else happens until ``agents.sessions``
is imported; the name is then bound to convstore's own ``sessions`` package, found
next to this file, never to whatever ``sessions`` is first on ``sys.path``: a user's
own ``sessions.py`` in the working directory neither captures the alias nor is
replaced by convstore's package. Type checkers do not run this hook; the form they
understand is ``from sessions import SQLiteSession``.
"""

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at start-up
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType

ALIAS = "agents.sessions"
# The name convstore's package gets when ``sessions`` is somebody else's module.
PRIVATE_NAME = "_convstore_sessions"


def _package_dir() -> str:
    import os  # loaded during start-up already

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "sessions")


def convstore_sessions() -> "ModuleType":
    """convstore's ``sessions`` package, imported from next to this file."""
    import importlib.util
    import os

    package_dir = _package_dir()
    init = os.path.join(package_dir, "__init__.py")

    def is_ours(origin: object) -> bool:
        return isinstance(origin, str) and os.path.realpath(origin) == os.path.realpath(init)

    for name in ("sessions", PRIVATE_NAME):
        loaded = sys.modules.get(name)
        if loaded is not None and is_ours(getattr(loaded, "__file__", None)):
            return loaded
    found = importlib.util.find_spec("sessions") if "sessions" not in sys.modules else None
    if found is not None and is_ours(found.origin):
        return importlib.import_module("sessions")  # the usual import, shared with it
    # 'sessions' is (or would be) another module: load ours under a private name.
    spec = importlib.util.spec_from_file_location(
        PRIVATE_NAME, init, submodule_search_locations=[package_dir]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PRIVATE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PRIVATE_NAME]
        raise
    return module


class _AliasLoader:
    """Hands back convstore's package object instead of creating a module."""

    def __init__(self) -> None:
        self._spec: ModuleSpec | None = None

    def create_module(self, spec: "ModuleSpec") -> "ModuleType":
        module = convstore_sessions()
        self._spec = module.__spec__
        return module

    def exec_module(self, module: "ModuleType") -> None:
        # The import system has just set module.__spec__ to the alias's spec: put the
        # package's own back, so that the package stays exactly what it was.
        module.__spec__ = self._spec


class AliasFinder:
    """A ``sys.meta_path`` finder for the one name ``agents.sessions``."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> "ModuleSpec | None":
        if fullname != ALIAS:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(fullname, _AliasLoader())  # type: ignore[arg-type]  # duck-typed


def install() -> None:
    """Register the finder (idempotent): the entry point of the ``.pth``/``.start`` files."""
    if not any(isinstance(finder, AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(AliasFinder())


# Importing the module installs it (what the ``.pth`` line relies on); the ``.start``
# entry point then calls install() again, which does nothing.
install()
