"""``convstore DB serve``: a local, read-only web viewer of a convstore database.

Sessions, rendered conversations, the branch tree, time travel, usage charts and the
event log with its audit status, live as events arrive; every page also as JSON.
``viewer(...)`` is the ASGI application, to run or to mount in another one. It needs
the ``web`` extra (``pip install 'convstore[web]'``: Starlette, Jinja2, uvicorn);
importing this package does not (the command line builds its options from it).
docs/viewer.md shows each page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Viewer, viewer

__all__ = ["Viewer", "viewer"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import app
    except ModuleNotFoundError as error:  # starlette, jinja2 or markupsafe is missing
        if error.name not in ("starlette", "jinja2", "markupsafe"):
            raise
        from eventstore import MissingDependencyError

        raise MissingDependencyError(error.name, "web") from error
    return getattr(app, name)
