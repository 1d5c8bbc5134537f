"""The one exception hierarchy of convstore.

Every error a user can see derives from :class:`ConvstoreError`. Driver errors are
translated in exactly one place (:func:`eventstore.backends.base.translate_errors`),
classified by SQLSTATE / vendor error code, never by message text.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cryptography.fernet import InvalidToken


class ConvstoreError(Exception):
    """Base class of every error raised by convstore."""


class ConfigurationError(ConvstoreError, ValueError):
    """The store or session was opened with arguments that cannot work."""


class MissingDependencyError(ConvstoreError, ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra.

    A :class:`ModuleNotFoundError` (whose ``name`` is the module that is missing), so
    code that already catches that error for an optional import keeps working.
    """

    def __init__(self, package: str, extra: str, *, module: str | None = None) -> None:
        super().__init__(
            f"the {package!r} package is required for this feature: "
            f"pip install 'convstore[{extra}]'",
            name=module or package,
        )
        self.package = package
        self.extra = extra


class StoreClosedError(ConvstoreError, RuntimeError):
    """The store (or the session holding it) was used after ``close()``."""


class SerializationError(ConvstoreError, ValueError, TypeError):
    """A value cannot be stored exactly (not JSON, or would not round-trip).

    Raised before anything is written. A :class:`TypeError` as well as a
    :class:`ValueError`: the SDK's sessions raise ``TypeError`` (from ``json.dumps``) for
    an item that is not JSON.
    """


class DecodeError(ConvstoreError):
    """A stored payload cannot be decoded into a known event type or revision."""


class ConcurrencyError(ConvstoreError):
    """``expected_version`` did not match the stream's current version."""

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r}: expected version {expected!r}, but it is at {actual}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class CompactionConflictError(ConcurrencyError):
    """A compaction (or its revert) was refused because the history it read changed
    before it could be written (the items it replaces are no longer shown as they were
    read, or a later compaction came first); nothing was written. Read and compact again."""

    def __init__(self, stream_id: str, reason: str, actual: int = 0) -> None:
        ConvstoreError.__init__(self, f"session {stream_id!r}: compaction refused: {reason}")
        self.stream_id = stream_id
        self.expected = None
        self.actual = actual


class PersistenceError(ConvstoreError):
    """The database refused or failed an operation (PEP 249 style family)."""


class IntegrityError(PersistenceError):
    """A constraint of the log was violated (e.g. an event id reused with other content)."""


class ProjectionMismatchError(IntegrityError):
    """A projection's row does not match the event it comes from: changed outside
    convstore, or damaged. Nothing was returned, removed or written. The projections
    are disposable: ``convstore DB replay`` rebuilds them from the log.

    ``stream_id`` is the session, ``version`` the stream version of the event the row
    comes from (None when the read could not tell which one).
    """

    def __init__(self, message: str, *, stream_id: str, version: int | None) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.version = version


class OperationalError(PersistenceError):
    """The database could not run the operation (locked, gone away, timed out)."""


class TransientError(OperationalError):
    """An operation failed in a way that is safe and useful to retry (deadlock, busy)."""


class StoreInUseError(ConvstoreError, RuntimeError):
    """``close()`` was called on a store that open sessions share; close the sessions
    instead (the store closes with the last of them)."""


class LockTimeoutError(OperationalError, TimeoutError):
    """A write waited longer than the store's ``lock_timeout`` for a lock; nothing was
    written. Another writer holds the lock (or is stalled holding it): retry later."""


class ConnectionLostError(OperationalError, ConnectionError):
    """The connection to the database broke during the operation.

    ``outcome_unknown`` is true when it broke while committing: the transaction may or
    may not have been committed. Reads, and appends (idempotent by event id), are
    retried by the store before this reaches the caller.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class PoolerError(PersistenceError, ConfigurationError):
    """The driver's prepared statements were lost between two statements: the database
    is reached through a connection pooler in transaction mode (PgBouncer) that the
    engine was not set up for. Nothing of the failed transaction was written.

    A convstore URL takes ``?pooler=transaction`` for that; an engine of your own needs
    ``connect_args={"statement_cache_size": 0, "prepared_statement_cache_size": 0}``
    (docs/operations.md, "PgBouncer").
    """

    HINT = (
        "the database is reached through a connection pooler in transaction mode "
        "(PgBouncer?): add '?pooler=transaction' to the URL, or create your engine with "
        "connect_args={'statement_cache_size': 0, 'prepared_statement_cache_size': 0}"
    )

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} ({self.HINT})")


class SchemaError(PersistenceError):
    """The tables are missing, or were written by an incompatible release."""


class InvalidArgumentError(ConvstoreError, ValueError):
    """An argument is out of range or of the wrong kind; nothing was written."""


class BranchError(InvalidArgumentError):
    """A branch operation was refused (unknown, deleted or protected branch, a blank or
    reused name); nothing was written. A ``ValueError``, as the SDK raises."""


class TurnNotFoundError(InvalidArgumentError):
    """No user turn (or item) with that number in the branch; nothing was written."""


class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of the wrong type, or a keyword or settings key that is not taken.

    A :class:`TypeError` as well, because that is what the Agents SDK (and Python)
    raise in the same case; the message names what to use instead where there is
    an alternative.
    """


class CancelledAfterCommit(asyncio.CancelledError):
    """The caller was cancelled while its write was being committed, and it committed.

    A write that has reached the database is not abandoned half-way: the store waits
    for its outcome, then propagates the cancellation. If the write was withdrawn
    before it started, or rolled back, a plain :class:`asyncio.CancelledError` is
    raised; if it committed, this subclass, whose ``result`` is what the write
    returned. Code that only knows ``CancelledError`` sees a normal cancellation.
    """

    def __init__(self, result: Any) -> None:
        super().__init__("cancelled after the write committed")
        self.result = result


class InvalidKeyError(ConfigurationError):
    """An encryption key is empty, too short or of the wrong kind; nothing was written."""


class DecryptionError(ConvstoreError):
    """Encrypted content cannot be read. Nothing was returned, removed or written."""


class WrongKeyError(DecryptionError, InvalidToken):
    """The master key given is not the one the session's keys are wrapped with.

    Also a ``cryptography.fernet.InvalidToken``, what the SDK's EncryptedSession raises
    for a wrong key, so code written for it catches this too."""


class TamperedError(DecryptionError, InvalidToken):
    """An encrypted item failed authentication: changed, or copied from elsewhere.

    Also a ``cryptography.fernet.InvalidToken``, as the SDK raises for a damaged token."""


class KeyNotFoundError(DecryptionError):
    """The data key an encrypted item names does not exist (a lost or separate key table)."""


class KeyShreddedError(DecryptionError):
    """The session's data key was destroyed (crypto-shredding): its items are gone for good."""


class NotEncryptedError(DecryptionError):
    """An encrypted session met plaintext: history written before encryption was turned on,
    or an item added through the unencrypted session underneath."""
