"""CompactingSession: a session compacted automatically once its history grows past a bound.

Wraps any convstore session (``EncryptedSession`` too): after each ``add_items`` it
reads the current branch and, once it shows more than ``max_items`` items or more than
``max_tokens`` tokens (estimated as a quarter of the items' JSON bytes, no tokenizer
needed), compacts it with ``summarize`` keeping the last ``keep_last_turns`` turns. A
compaction refused because another writer changed the history meanwhile is skipped
(the next ``add_items`` tries again). Since the history stays near the bound, the read
after each add costs what the bound costs, whatever the length of the log.
"""

from __future__ import annotations

import logging
from typing import Any

from eventstore import CompactionConflictError, InvalidArgumentError, check_count, encode_items

from .compaction import CompactionResult
from .summarizers import as_summarizer

__all__ = ["CompactingSession", "estimate_tokens"]

log = logging.getLogger("convstore.sessions")


def estimate_tokens(items: list[Any]) -> int:
    """A rough token count of ``items``: a quarter of their JSON bytes."""
    return sum(len(raw) for raw in encode_items(items)) // 4


class CompactingSession:
    """``session``, compacted by ``summarize`` past ``max_items`` items or ``max_tokens``
    tokens (at least one bound). Every other attribute is the wrapped session's."""

    def __init__(
        self,
        session: Any,
        *,
        summarize: Any,
        max_items: int | None = None,
        max_tokens: int | None = None,
        keep_last_turns: int = 1,
    ) -> None:
        if max_items is None and max_tokens is None:
            raise InvalidArgumentError("CompactingSession needs max_items or max_tokens")
        self.max_items = None if max_items is None else check_count("max_items", max_items)
        self.max_tokens = None if max_tokens is None else check_count("max_tokens", max_tokens)
        self.keep_last_turns = check_count("keep_last_turns", keep_last_turns)
        self.summarize = as_summarizer(summarize)
        self.session = session
        self.session_id: str = session.session_id
        self.last_compaction: CompactionResult | None = None

    @property
    def session_settings(self) -> Any:
        return self.session.session_settings

    @session_settings.setter
    def session_settings(self, value: Any) -> None:
        self.session.session_settings = value

    async def get_items(self, limit: int | None = None, *, wrapper: Any = None) -> list[Any]:
        return await self.session.get_items(limit, wrapper=wrapper)  # type: ignore[no-any-return]

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        """Add ``items``, then compact if the history is past a bound."""
        await self.session.add_items(items, wrapper=wrapper)
        await self.compact_if_needed()

    async def pop_item(self, *, wrapper: Any = None) -> Any | None:
        return await self.session.pop_item(wrapper=wrapper)

    async def clear_session(self, *, wrapper: Any = None) -> None:
        await self.session.clear_session(wrapper=wrapper)

    def over_bound(self, items: list[Any]) -> bool:
        """Whether ``items`` are past ``max_items`` or ``max_tokens``."""
        if self.max_items is not None and len(items) > self.max_items:
            return True
        return self.max_tokens is not None and estimate_tokens(items) > self.max_tokens

    async def compact_if_needed(self) -> CompactionResult | None:
        """Compact if the history is past a bound; None if it was not (or nothing was
        left to compact, or another writer changed the history meanwhile)."""
        if not self.over_bound(await self.session.get_items()):
            return None
        try:
            done: CompactionResult | None = await self.session.compact(
                summarize=self.summarize, keep_last_turns=self.keep_last_turns
            )
        except CompactionConflictError as conflict:
            log.debug("session %r: compaction skipped: %s", self.session_id, conflict)
            return None
        if done is not None:
            self.last_compaction = done
        return done

    def close(self) -> Any:
        return self.session.close()

    async def __aenter__(self) -> CompactingSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.session.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "session" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.session, name)
