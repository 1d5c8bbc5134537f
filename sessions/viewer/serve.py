"""``convstore DB serve``: run the viewer (sessions/viewer/app.py) under uvicorn.

It listens on 127.0.0.1 unless told otherwise, and refuses any other address without
``--allow-remote`` (then warns). Whoever can reach the port could read every
conversation, so the viewer answers without a token only on the loopback address and
without a key; with ``--key-file`` (it decrypts encrypted sessions) or on another
address it generates an access token and prints the address that carries it.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import secrets
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from eventstore import EventStore, InvalidArgumentError, MissingDependencyError

from ..crypto.keys import parse_master_key

MASTER_KEY_BYTES = 32
# Seconds uvicorn waits for open responses (live pages) when asked to stop.
GRACEFUL_SHUTDOWN = 2


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_key(path: str) -> str | bytes:
    """The master key in ``path``: 32 raw bytes, or text (the URL-safe base64 of 32
    bytes, or a passphrase) without its trailing newline; checked here, so a bad key
    stops the command before it serves anything."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InvalidArgumentError(f"cannot read the key file: {error.strerror}: {path}") from None
    key: str | bytes = data
    if len(data) != MASTER_KEY_BYTES:
        try:
            key = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"the key file {path} holds neither 32 raw bytes nor text"
            ) from None
    if not key:
        raise InvalidArgumentError(f"the key file {path} is empty")
    parse_master_key(key, what=f"the key in {path}")
    return key


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (an address in use is reported here, as one line)."""
    if not 0 <= port <= 65535:
        raise InvalidArgumentError(f"--port must be from 0 to 65535, not {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        raise InvalidArgumentError(
            f"cannot listen on {host}:{port}: {error.strerror or error}"
        ) from None
    sock.setblocking(False)
    return sock


async def serve(store: EventStore, args: argparse.Namespace) -> int:
    """Run the viewer until interrupted; return the exit status."""
    try:
        import uvicorn
    except ModuleNotFoundError as error:
        raise MissingDependencyError("uvicorn", "web") from error

    from . import viewer  # (MissingDependencyError without Starlette or Jinja2)

    class _Server(uvicorn.Server):
        """uvicorn's server, stopped by Ctrl-C (or SIGTERM) for good: the live streams
        end at once (their responses would hold the shutdown for its whole grace
        period), and the signal is not raised again afterwards, so the command closes
        its connections and returns."""

        def __init__(self, config: uvicorn.Config, shown: Any) -> None:
            super().__init__(config)
            self._shown = shown
            self._loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._shown.stop_live)

    remote = not is_loopback(args.host)
    if remote and not args.allow_remote:
        raise InvalidArgumentError(
            f"refusing to listen on {args.host}: anyone who can reach it could read the "
            "conversations; pass --allow-remote to do it anyway (an access token is then "
            "required), or use the default 127.0.0.1"
        )
    key = read_key(args.key_file) if args.key_file else None
    await store.ensure_tables()  # a database that cannot be opened fails here: exit 2
    token = secrets.token_urlsafe(24) if (remote or key is not None) else None
    app = viewer(store, token=token, key=key, anonymous=token is None)
    sock = listen(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    if remote:
        print(
            f"convstore: warning: listening on {args.host}, reachable from other machines; "
            "the access token in the address below is all that guards the conversations",
            file=sys.stderr,
        )
    print(f"convstore viewer (read-only) on {url}", flush=True)
    print("press Ctrl-C to stop", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    await _Server(config, app).serve(sockets=[sock])
    await app.close()
    return 0
