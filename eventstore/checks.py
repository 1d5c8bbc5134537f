"""Argument checks shared by the three packages: each returns the value it accepts or
raises a typed error (:mod:`eventstore.errors`) that names the argument and the fix.

Booleans are ints in Python; no count, version, limit or number of seconds here takes
``True`` for 1, so every integer check goes through :func:`is_integer` /
:func:`is_number`, never a hand-written ``isinstance`` pair.
"""

from __future__ import annotations

from typing import TypeGuard

from .errors import ArgumentTypeError, InvalidArgumentError

# The largest limit, version or position any read accepts: a signed 64-bit integer,
# what every backend's LIMIT and BIGINT columns hold (larger would overflow SQLite's
# driver and MariaDB's parser).
MAX_INTEGER = 2**63 - 1
MAX_STREAM_ID_LENGTH = 255


def is_integer(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an int (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is an int or a float (a bool is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_integer(name: str, value: object, *, low: int = 0, high: int = MAX_INTEGER) -> int:
    """``value`` if it is an integer from ``low`` to ``high``, else raise."""
    if not is_integer(value):
        raise ArgumentTypeError(f"{name} must be an integer >= {low}, not {value!r}")
    if not low <= value <= high:
        most = f"{high} (2**63 - 1)" if high == MAX_INTEGER else f"{high:,}"
        raise InvalidArgumentError(f"{name} must be an integer from {low} to {most}, not {value!r}")
    return value


def check_count(name: str, value: object) -> int:
    """``value`` if it is an integer from 0 to :data:`MAX_INTEGER`, else raise."""
    return check_integer(name, value)


def check_bounds(**values: int | None) -> None:
    """:func:`check_count` of each value that is not None (a read's bounds)."""
    for name, value in values.items():
        if value is not None:
            check_count(name, value)


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is a bool (``create_tables``), else ArgumentTypeError."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be True or False, not {value!r}")
    return value


def check_seconds(name: str, value: object, *, most: float, zero: bool) -> float:
    """``value`` if it is a number of seconds up to ``most`` (and above 0, unless
    ``zero`` allows 0), else ArgumentTypeError / InvalidArgumentError."""
    if not is_number(value):
        raise ArgumentTypeError(f"{name} must be a number of seconds, not {value!r}")
    if not (value >= 0 if zero else value > 0) or value > most:
        raise InvalidArgumentError(f"{name} must be from 0 to {most:g} seconds, not {value}")
    return value


def check_expected_version(expected: object) -> None:
    """Refuse an ``expected_version`` that is not a version >= 0, 'any' or 'no stream'."""
    if expected in ("any", "no stream"):
        return
    if not is_integer(expected) or expected < 0:
        raise InvalidArgumentError(
            f"expected_version must be a version >= 0, 'any' or 'no stream', not {expected!r}"
        )


def check_stream_id(
    stream_id: object,
    *,
    what: str = "a stream id",
    error: type[InvalidArgumentError] = InvalidArgumentError,
) -> str:
    """Return ``stream_id`` if it can name a stream, else raise ``error`` (an
    InvalidArgumentError) saying why. Branch names and ids are checked by the same rules
    (``what`` names the argument in the message)."""
    if not isinstance(stream_id, str) or not stream_id:
        raise error(f"{what} must be a non-empty string, not {stream_id!r}")
    if len(stream_id) > MAX_STREAM_ID_LENGTH:
        raise error(
            f"{what} has at most {MAX_STREAM_ID_LENGTH} characters, not {len(stream_id)}: "
            "use a shorter one"
        )
    # The same ids on every backend: PostgreSQL cannot store NUL in text, and a lone
    # surrogate is not UTF-8 at all (SQLite and MariaDB fail to encode it).
    if "\x00" in stream_id:
        raise error(f"{what} cannot contain NUL ('\\x00'): remove it from {stream_id!r}")
    if not stream_id.isascii():
        try:
            stream_id.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise error(
                f"{what} must be valid Unicode text, not {stream_id!r} ({exc.reason}): a lone "
                "surrogate comes from bytes decoded with errors='surrogateescape'; decode "
                "them as UTF-8 instead"
            ) from exc
    return stream_id
