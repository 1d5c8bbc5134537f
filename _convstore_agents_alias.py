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
    from types import FrameType, ModuleType

ALIAS = "agents.sessions"
# The name convstore's package gets when ``sessions`` is somebody else's module.
PRIVATE_NAME = "_convstore_sessions"


def _package_dir() -> str:
    import os  # loaded during start-up already

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "sessions")


def convstore_sessions() -> "ModuleType":
    """convstore's ``sessions`` package: the one imported as ``sessions`` if that is a
    convstore package, else the one installed next to this file."""
    import importlib.util
    import os

    def is_convstore(origin: object) -> bool:
        # A convstore ``sessions`` package sits beside this hook's module (an install,
        # or a checkout that comes first on sys.path); a user's ``sessions`` does not.
        if not isinstance(origin, str) or os.path.basename(origin) != "__init__.py":
            return False
        root = os.path.dirname(os.path.dirname(origin))
        return os.path.isfile(os.path.join(root, "_convstore_agents_alias.py"))

    for name in ("sessions", PRIVATE_NAME):
        loaded = sys.modules.get(name)
        if loaded is not None and is_convstore(getattr(loaded, "__file__", None)):
            return loaded
    found = importlib.util.find_spec("sessions") if "sessions" not in sys.modules else None
    if found is not None and is_convstore(found.origin):
        return importlib.import_module("sessions")  # the usual import, shared with it
    # 'sessions' is (or would be) another module: load ours under a private name.
    package_dir = _package_dir()
    spec = importlib.util.spec_from_file_location(
        PRIVATE_NAME,
        os.path.join(package_dir, "__init__.py"),
        submodule_search_locations=[package_dir],
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


def _importing_the_alias() -> bool:
    """Whether the import system is looking for ``agents`` as the parent of the alias
    (``from agents.sessions import ...``), rather than for the SDK itself."""
    frame: FrameType | None = sys._getframe(1)  # not evaluated at run time
    while frame is not None:
        # importlib._bootstrap imports a dotted name's parent from this function, whose
        # ``name`` is the dotted name. (If a later Python renames it, the alias without
        # the SDK raises the plain ModuleNotFoundError again: nothing else changes.)
        if (
            frame.f_code.co_name == "_find_and_load_unlocked"
            and frame.f_locals.get("name") == ALIAS
        ):
            return True
        frame = frame.f_back
    return False


def _missing_sdk() -> ImportError:
    """The error naming the extra to install (convstore's MissingDependencyError)."""
    try:
        from eventstore.errors import MissingDependencyError
    except ImportError:  # not beside convstore's packages: say it all the same
        return ModuleNotFoundError(
            "the 'openai-agents' package is required for "
            f"'{ALIAS}': pip install 'convstore[agents]'",
            name="agents",
        )
    return MissingDependencyError("openai-agents", "agents", module="agents")


class AliasFinder:
    """A ``sys.meta_path`` finder for the one name ``agents.sessions``.

    Without the Agents SDK, importing the alias fails while its parent ``agents`` is
    looked for, which no other finder has found by the time this one (last in
    ``sys.meta_path``) is asked: the error then names the extra to install instead of
    saying "No module named 'agents'". Looking for ``agents`` for any other reason
    (``import agents``, ``importlib.util.find_spec("agents")``) is left alone.
    """

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> "ModuleSpec | None":
        if fullname == "agents":
            if _importing_the_alias() and not self._found_after_me(fullname, path, target):
                raise _missing_sdk()
            return None
        if fullname != ALIAS:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(fullname, _AliasLoader())  # type: ignore[arg-type]  # duck-typed

    def _found_after_me(self, fullname: str, path: object, target: object) -> bool:
        """Whether a finder registered after this one can import ``fullname``."""
        finders = list(sys.meta_path)
        later = finders[finders.index(self) + 1 :] if self in finders else []
        for finder in later:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is not None and find_spec(fullname, path, target) is not None:
                return True
        return False


def install() -> None:
    """Register the finder (idempotent): the entry point of the ``.pth``/``.start`` files."""
    if not any(isinstance(finder, AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(AliasFinder())


# Importing the module installs it (what the ``.pth`` line relies on); the ``.start``
# entry point then calls install() again, which does nothing.
install()
