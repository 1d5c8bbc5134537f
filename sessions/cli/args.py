"""Reading the command line: argument types (durations, versions or times, key files),
the usage error every bad input becomes, and the consent of commands that delete."""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing for --version
if TYPE_CHECKING:
    from typing import NoReturn


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see 'convstore -h')")


_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``1w2d``, ``30m``, ``45s`` as a timedelta."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (e.g. 90d, 12h, 1w2d, 30m, 45s)"
        )
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit]: int(number)})
    return total


def format_duration(value: timedelta) -> str:
    """A timedelta the way :func:`parse_duration` reads it (``1d12h``; ``0s``)."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or an offset; UTC if none, as the tables show times).

    Raises ValueError, with a message that shows the form expected."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time such as 2026-01-31T12:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_as_of(text: str) -> int | datetime:
    """A version number, or an ISO 8601 time (:func:`parse_time`)."""
    if text.isdigit():
        return int(text)
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a version nor a time (e.g. 4, or 2026-01-31T12:00:00Z)"
        ) from None


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def read_master_key(path: str) -> str | bytes:
    """The master key kept in a file: its text as the application passes it (a
    passphrase or URL-safe base64; a final newline is not part of it), or 32 raw bytes
    when the file is not UTF-8 text."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read the key file: {error.strerror}: {path}") from None
    try:
        key: str | bytes = data.decode().removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        key = data
    if not key:
        raise UsageError(f"the key file {path} is empty")
    return key


def audit_key(args: argparse.Namespace) -> bytes | None:
    if args.key_file:
        try:
            key = Path(args.key_file).read_bytes().strip()
        except OSError as error:
            raise UsageError(
                f"cannot read the key file: {error.strerror}: {args.key_file}"
            ) from None
        if not key:
            raise UsageError(f"the key file {args.key_file} is empty")
        return key
    env = os.environ.get("CONVSTORE_AUDIT_KEY")
    return env.encode() if env else None


# -- consent of destructive commands ------------------------------------------------


def check_consent(args: argparse.Namespace) -> None:
    """A command that deletes runs with --yes, or --dry-run, or on a terminal (where it
    asks); anywhere else it refuses before it reads anything (exit 2)."""
    if args.yes or args.dry_run or sys.stdin.isatty():
        return
    raise UsageError(
        f"'{args.command}' deletes data and standard input is not a terminal to confirm "
        "it: pass --yes to go ahead (--dry-run lists what would go)"
    )


async def confirm(args: argparse.Namespace, what: str) -> bool:
    """--yes, or the answer typed at the terminal (y or yes) after ``what`` was shown."""
    if args.yes:
        return True
    sys.stderr.write(f"{what}\nGo ahead? [y/N] ")
    sys.stderr.flush()
    import asyncio

    answer = await asyncio.to_thread(sys.stdin.readline)
    return answer.strip().lower() in ("y", "yes")


def declined() -> int:
    print("convstore: nothing was changed", file=sys.stderr)
    return 1
