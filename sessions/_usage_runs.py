"""What a session has recorded of each Runner run's usage.

The SDK's Runner passes its ``RunContextWrapper`` as ``wrapper=`` to the session's
methods; ``wrapper.usage`` is cumulative over the run. A session remembers, per run
(per wrapper object, weakly), the usage it has recorded so far, so it records each
increment once. The memory holds the wrapper's ``Usage`` object strongly: when a run
ends with an error after a model call (a tool or a guardrail raised before the Runner
saved that call's items), the increment outlives the wrapper and is written by the
session's next operation or by ``close()``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventstore import is_integer
from projections.usage import Tokens, add_details

LOG = logging.getLogger("convstore.usage")

Anchor = tuple[str, int]  # (owner branch, seq) of a turn's user message


def tokens_of(usage: Any) -> Tokens:
    """The figures of an SDK ``Usage`` (or anything with its attributes)."""
    details: dict[str, Any] = {}
    for name in ("input_tokens_details", "output_tokens_details"):
        found = _as_dict(getattr(usage, name, None))
        if found is not None:
            details[name] = add_details({}, found)
    return Tokens(
        _count(getattr(usage, "requests", 0)),
        _count(getattr(usage, "input_tokens", 0)),
        _count(getattr(usage, "output_tokens", 0)),
        _count(getattr(usage, "total_tokens", 0)),
        details,
    )


def _count(value: Any) -> int:
    """``value`` if it is a token count (an int, not a bool), else 0."""
    return value if is_integer(value) else 0


def _as_dict(value: Any) -> Mapping[str, Any] | None:
    """Token details as a mapping: a dict, a pydantic model's dump, or an object's fields."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        dumped = dump()
        return dumped if isinstance(dumped, Mapping) else None
    found = getattr(value, "__dict__", None)
    return found if isinstance(found, Mapping) else None


@dataclass(eq=False)
class RunUsage:
    """One run: its usage object, what was recorded of it, and the turn it answers."""

    ref: weakref.ref[Any] | None
    usage: Any
    recorded: Tokens
    anchor: Anchor | None = None
    # Seen only through store_run_usage: with no turn to answer, it records nothing
    # (the SDK's rule), where a run the session saw records for the session only.
    needs_turn: bool = False

    def current(self) -> Tokens:
        wrapper = self.ref() if self.ref is not None else None
        if wrapper is not None:
            self.usage = getattr(wrapper, "usage", self.usage)
        return tokens_of(self.usage)


Claim = tuple[RunUsage, Tokens]


class RunUsages:
    """The runs one session object has seen, and their unrecorded increments."""

    def __init__(self) -> None:
        self._live: dict[int, RunUsage] = {}
        self._ended: list[RunUsage] = []

    def see(self, wrapper: Any, *, from_zero: bool = False) -> RunUsage | None:
        """The run of ``wrapper``, remembered from now on. A run first seen in the
        middle (a resumed RunState) starts from its usage then (what came before was
        recorded by the session that saw it); ``from_zero`` counts everything, for a
        turn only (``needs_turn``)."""
        if wrapper is None or getattr(wrapper, "usage", None) is None:
            return None
        found = self._live.get(id(wrapper))
        if found is not None and found.ref is not None and found.ref() is wrapper:
            return found
        key = id(wrapper)
        try:
            ref = weakref.ref(wrapper, lambda _: self._end(key))
        except TypeError:  # not weakly referenceable: recorded by store_run_usage only
            return None
        usage = wrapper.usage
        run = RunUsage(ref, usage, Tokens() if from_zero else tokens_of(usage), None, from_zero)
        self._live[key] = run
        return run

    def _end(self, key: int) -> None:
        """At a wrapper's collection: keep its run if it has an unrecorded increment."""
        run = self._live.pop(key, None)
        if run is not None and not run.current().minus(run.recorded).is_zero:
            run.ref = None
            self._ended.append(run)

    def claim(self, *, skip: RunUsage | None = None) -> list[Claim]:
        """Every unrecorded increment (but ``skip``'s), marked as recorded."""
        claims: list[Claim] = []
        for run in [*self._ended, *self._live.values()]:
            if run is skip:
                continue
            increment = run.current().minus(run.recorded)
            if increment.is_zero:
                continue
            if increment.is_negative:  # the usage object was reset: start again from it
                LOG.debug("a run's usage went down; recording from its new value")
                run.recorded = run.current()
                continue
            run.recorded = run.recorded.plus(increment)
            claims.append((run, increment))
        self._ended = [run for run in self._ended if not any(run is c[0] for c in claims)]
        return claims

    def unclaim(self, claims: list[Claim]) -> None:
        """The write of ``claims`` failed: they are unrecorded again."""
        for run, increment in claims:
            run.recorded = run.recorded.minus(increment)
            if run.ref is None and run not in self._ended:
                self._ended.append(run)

    def pending(self, *, skip: RunUsage | None = None) -> bool:
        return any(
            run is not skip and not run.current().minus(run.recorded).is_zero
            for run in [*self._ended, *self._live.values()]
        )
