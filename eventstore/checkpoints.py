"""Checkpoints: stream heads exported out of the database, optionally signed.

The hash chain proves that the log is consistent with itself; anyone who can write
the tables can rewrite an event *and* recompute every later hash and the stream's
head, and the chain still verifies. A checkpoint anchors the chain outside the
database: it records, for every stream, a version and the hash the chain reaches
there. Kept where the database's writers cannot change it (another machine, WORM
storage, a ticket), and compared by ``audit(..., checkpoints=...)``, it turns such a
forgery into a finding: the recomputed chain no longer reaches the recorded hash.

Signed with an audit key (HMAC-SHA256) that the application holds and the database
never sees, a checkpoint file cannot be forged either by someone who can write where
the file is kept but does not have the key. Without a key the file carries a plain
SHA-256 of its contents (a check against damage, not forgery).

Format: JSON Lines. A header line, one line per stream
(``{"stream_id": …, "version": …, "hash": …}``), and a last line with the MAC (or
digest) of every byte before it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from .audit import Checkpoint
from .errors import IntegrityError, InvalidArgumentError

FORMAT = "convstore-checkpoints"
FORMAT_VERSION = 1

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


def _seal(body: bytes, key: bytes | None) -> dict[str, str]:
    if key is None:
        return {"sha256": hashlib.sha256(body).hexdigest()}
    return {"hmac_sha256": hmac.new(key, body, hashlib.sha256).hexdigest()}


def dump_checkpoints(
    heads: Iterable[Checkpoint],
    *,
    head_position: int,
    key: bytes | None = None,
    taken_at: datetime | None = None,
) -> bytes:
    """The checkpoint file for ``heads`` (signed with ``key`` when given)."""
    when = (taken_at or datetime.now(UTC)).isoformat()
    lines = [
        _encoder.encode(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "taken_at": when,
                "head_position": head_position,
                "signed": key is not None,
            }
        )
    ]
    for cp in sorted(heads, key=lambda c: c.stream_id):
        lines.append(
            _encoder.encode({"stream_id": cp.stream_id, "version": cp.version, "hash": cp.hash})
        )
    body = b"".join(line + b"\n" for line in lines)
    return body + _encoder.encode(_seal(body, key)) + b"\n"


def load_checkpoints(data: bytes, *, key: bytes | None = None) -> dict[str, Checkpoint]:
    """Read and check a checkpoint file; raise if it was changed or is not one.

    A signed file needs its ``key`` (a wrong key, or any changed byte, raises
    :class:`IntegrityError`); an unsigned file is refused when a key is given, since
    whoever could write it did not need the key.
    """
    body, sep, last = data.rstrip(b"\n").rpartition(b"\n")
    if not sep:
        raise InvalidArgumentError("not a convstore checkpoint file (too short)")
    body += b"\n"
    try:
        header = _decoder.decode(body.split(b"\n", 1)[0])
        seal = _decoder.decode(last)
    except msgspec.DecodeError as error:
        raise InvalidArgumentError(f"not a convstore checkpoint file: {error}") from error
    if header.get("format") != FORMAT:
        raise InvalidArgumentError("not a convstore checkpoint file (no header)")
    if header.get("version") != FORMAT_VERSION:
        raise InvalidArgumentError(f"checkpoint format {header.get('version')!r} is not known")
    if "hmac_sha256" in seal:
        if key is None:
            raise InvalidArgumentError(
                "the checkpoints are signed: give the audit key (--key-file or "
                "CONVSTORE_AUDIT_KEY) to check them"
            )
        if not hmac.compare_digest(_seal(body, key)["hmac_sha256"], str(seal["hmac_sha256"])):
            raise IntegrityError(
                "the checkpoint file's signature does not verify with this key: the file "
                "was changed, or the key is not the one it was signed with"
            )
    elif "sha256" in seal:
        if key is not None:
            raise IntegrityError(
                "the checkpoint file is not signed, but an audit key was given: it cannot "
                "be trusted as signed"
            )
        if seal["sha256"] != _seal(body, None)["sha256"]:
            raise IntegrityError("the checkpoint file was changed (its digest differs)")
    else:
        raise InvalidArgumentError("not a convstore checkpoint file (no signature line)")
    found: dict[str, Checkpoint] = {}
    for line in body.split(b"\n")[1:]:
        if not line:
            continue
        entry = _decoder.decode(line)
        cp = Checkpoint(str(entry["stream_id"]), int(entry["version"]), str(entry["hash"]))
        found[cp.stream_id] = cp
    return found
