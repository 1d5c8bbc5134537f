"""Summarisers for compaction: any async function, an Agent, or the Responses compact endpoint.

``session.compact(summarize=...)`` takes any of them; each is given the replaced items
(plaintext, in this process, also under ``EncryptedSession``) and gives back the items
shown in their place, with what it spent:

* an async function ``f(items) -> str | list[item] | Summary`` (a string becomes one
  summary message, :func:`summary_message`; a :class:`Summary` carries its usage);
* an ``agents.Agent``, run by the SDK's ``Runner`` on the items followed by a request
  to summarise them (:class:`AgentSummarizer`; its usage comes from the run);
* :class:`ResponsesCompactor`, the OpenAI Responses ``responses.compact`` endpoint,
  whose output items replace the run (as the SDK's compaction session does).

What a summariser spent is recorded by the usage projection as usage of the session
(a ``UsageRecorded`` with no turn, in the compaction's own append).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from eventstore import ArgumentTypeError
from projections.usage import Tokens

from ._usage_runs import tokens_of

__all__ = [
    "DEFAULT_PROMPT",
    "SUMMARY_PREFIX",
    "AgentSummarizer",
    "ResponsesCompactor",
    "Summary",
    "run_summarizer",
    "summary_message",
]

SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
DEFAULT_PROMPT = (
    "Summarise the conversation above for your own later use: the user's goals, the "
    "facts and decisions established, tool results that still matter, and what is "
    "left to do. Answer with the summary only."
)


def summary_message(text: str) -> dict[str, Any]:
    """The item a summariser's text becomes: a system message, so it opens no turn."""
    return {"role": "system", "content": SUMMARY_PREFIX + text}


@dataclass(frozen=True)
class Summary:
    """What a summariser returns: the items shown in place of the replaced ones, and
    what it spent (an SDK ``Usage``, anything with its attributes, or ``Tokens``)."""

    items: list[Any]
    usage: Any = None

    @property
    def tokens(self) -> Tokens | None:
        if self.usage is None or isinstance(self.usage, Tokens):
            return self.usage
        return tokens_of(self.usage)


@dataclass
class AgentSummarizer:
    """Summarise with an ``agents.Agent``: ``Runner.run(agent, items + [prompt])``; its
    final output (as text) becomes the summary message, its usage is recorded."""

    agent: Any
    prompt: str = DEFAULT_PROMPT
    run_kwargs: dict[str, Any] = field(default_factory=dict)

    async def __call__(self, items: list[Any]) -> Summary:
        from agents import Runner  # the SDK, imported when an agent summarises

        request = [*items, {"role": "user", "content": self.prompt}]
        result = await Runner.run(self.agent, request, **self.run_kwargs)
        output = result.final_output
        text = output if isinstance(output, str) else str(output)
        return Summary([summary_message(text)], result.context_wrapper.usage)


@dataclass
class ResponsesCompactor:
    """Summarise with the Responses API's ``responses.compact`` (an ``AsyncOpenAI``
    client, or anything with ``client.responses.compact``): its output items replace
    the run; its usage (one request) is recorded."""

    client: Any = None
    model: str = "gpt-4.1"

    async def __call__(self, items: list[Any]) -> Summary:
        client = self.client
        if client is None:
            from openai import AsyncOpenAI

            client = self.client = AsyncOpenAI()
        compacted = await client.responses.compact(model=self.model, input=items)
        output = [
            item if isinstance(item, dict) else item.model_dump(exclude_unset=True, warnings=False)
            for item in (compacted.output or [])
        ]
        usage = getattr(compacted, "usage", None)
        tokens = None
        if usage is not None:
            found = tokens_of(usage)
            tokens = Tokens(
                1, found.input_tokens, found.output_tokens, found.total_tokens, found.details
            )
        return Summary(output, tokens)


Summarizer = Callable[[list[Any]], Awaitable[Any]] | AgentSummarizer | ResponsesCompactor


def as_summarizer(summarize: Any) -> Callable[[list[Any]], Any]:
    """``summarize`` as a callable of the items (an Agent wrapped); ArgumentTypeError
    for anything else, before anything is read or written."""
    if _is_agent(summarize):
        return AgentSummarizer(summarize)
    if callable(summarize):
        return summarize  # type: ignore[no-any-return]
    raise ArgumentTypeError(
        "summarize is an async function of the items, an agents.Agent, or a "
        f"ResponsesCompactor, not {type(summarize).__name__}"
    )


def _is_agent(value: Any) -> bool:
    if not type(value).__module__.startswith("agents"):
        return False
    try:
        from agents import Agent
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return False
    return isinstance(value, Agent)


async def run_summarizer(summarize: Callable[[list[Any]], Any], items: list[Any]) -> Summary:
    """Call ``summarize`` on ``items``; its answer as a :class:`Summary`
    (ArgumentTypeError for an answer of another kind: nothing is written)."""
    answer = summarize(items)
    if inspect.isawaitable(answer):
        answer = await answer
    if isinstance(answer, Summary):
        return answer
    if isinstance(answer, str):
        return Summary([summary_message(answer)])
    if isinstance(answer, list | tuple):
        return Summary(list(answer))
    raise ArgumentTypeError(
        f"a summariser returns a string, a list of items or a Summary, not {type(answer).__name__}"
    )
