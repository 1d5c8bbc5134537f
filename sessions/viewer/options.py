"""The options of ``convstore DB serve``, apart from the server: building the command
line's help imports only this module (``convstore --help`` loads no database code)."""

from __future__ import annotations

import argparse

DEFAULT_PORT = 8765


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add serve's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0: any)"
    )
    parser.add_argument(
        "--key-file", help="the master key of encrypted sessions (decrypted in this process)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="listen on an address other machines can reach (with an access token)",
    )
