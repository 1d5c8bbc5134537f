"""Makes ``from agents.sessions import SQLiteSession`` import convstore's sessions.

Loaded at interpreter start by ``convstore_agents_alias.pth`` (installed with the
package). It only registers an import finder for the one module name
``agents.sessions``, which the Agents SDK does not define; nothing is imported until
that name is asked for, and then it is bound to convstore's ``sessions`` package.
Kept free of imports beyond the always-loaded bootstrap, so startup pays nothing.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec
from typing import Any

ALIAS = "agents.sessions"
TARGET = "sessions"


class _AliasLoader:
    """Hands back the already-importable target package instead of a new module."""

    def create_module(self, spec: ModuleSpec) -> Any:
        import importlib

        module = importlib.import_module(TARGET)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: Any) -> None:
        # The import system has just set module.__spec__ to the alias spec: put the
        # package's own spec back so 'sessions' stays exactly what it was.
        module.__spec__ = self._spec


class _AliasFinder:
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if fullname != ALIAS:
            return None
        return ModuleSpec(fullname, _AliasLoader())  # type: ignore[arg-type]  # duck-typed loader


def install() -> None:
    """Register the finder once (idempotent)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())


install()
