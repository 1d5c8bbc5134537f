"""What the viewer's tests share: the demo database (examples/viewer_demo.py), built once
per module on a SQLite file, and a client of a viewer on it."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from sessions import release_sqlite_files
from sessions.viewer import Viewer, viewer

ROOT = Path(__file__).resolve().parents[2]
DEMO_PATH = ROOT / "examples" / "viewer_demo.py"


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convstore_viewer_demo", DEMO_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


demo = load_demo()


@pytest.fixture(scope="session")
def demo_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo database, written once (tests copy it before changing it)."""
    import asyncio

    folder = tmp_path_factory.mktemp("demo")
    path = folder / "demo.db"
    asyncio.run(demo.build(str(path)))
    release_sqlite_files(path)  # its WAL checkpointed: a copy of the file holds it all
    return path


@pytest.fixture
def demo_db(demo_master: Path, tmp_path: Path) -> Path:
    """A copy of the demo database of this test's own."""
    path = tmp_path / "demo.db"
    shutil.copy(demo_master, path)
    return path


async def client_of(app: Viewer, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", **kwargs
    )


@pytest.fixture
async def local(demo_db: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the viewer as ``convstore DB serve`` runs it on 127.0.0.1."""
    app = viewer(str(demo_db), anonymous=True)
    async with await client_of(app) as client:
        yield client
    await app.close()
