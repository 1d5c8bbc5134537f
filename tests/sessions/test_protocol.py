"""The Agents SDK Session protocol, on every backend, and the events each call writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agents.memory import SessionSettings

from eventstore import InvalidArgumentError, SerializationError
from sessions import StoreSession

from .conftest import Sessions


def msg(n: int, role: str = "user") -> dict[str, Any]:
    return {"role": role, "content": f"message {n}"}


async def event_types(session: StoreSession) -> list[str]:
    return [e.event_type for e in await session.store.read_stream(session.session_id)]


def exactly(value: Any) -> str:
    """A rendering that tells 1, 1.0 and True apart and keeps key order."""
    return json.dumps(value, ensure_ascii=False)


# -- reads and writes ------------------------------------------------------------------


async def test_empty_session_has_no_items(session: StoreSession) -> None:
    assert await session.get_items() == []
    assert await session.get_items(limit=5) == []
    assert await session.pop_item() is None


async def test_added_items_come_back_in_order(session: StoreSession) -> None:
    await session.add_items([msg(1), msg(2, "assistant")])
    await session.add_items([msg(3)])
    await session.add_items([msg(4), msg(5)])
    assert await session.get_items() == [msg(1), msg(2, "assistant"), msg(3), msg(4), msg(5)]


async def test_limit_returns_the_newest_items_oldest_first(session: StoreSession) -> None:
    await session.add_items([msg(n) for n in range(1, 8)])
    assert await session.get_items(limit=3) == [msg(5), msg(6), msg(7)]
    assert await session.get_items(limit=1) == [msg(7)]
    assert await session.get_items(limit=0) == []
    assert await session.get_items(limit=7) == [msg(n) for n in range(1, 8)]
    assert await session.get_items(limit=100) == [msg(n) for n in range(1, 8)]


async def test_negative_limit_is_refused(session: StoreSession) -> None:
    await session.add_items([msg(1)])
    with pytest.raises(InvalidArgumentError):
        await session.get_items(limit=-1)


async def test_settings_limit_applies_unless_a_limit_is_given(sessions: Sessions) -> None:
    session = sessions.open("s", session_settings=SessionSettings(limit=3))
    assert isinstance(session.session_settings, SessionSettings)
    await session.add_items([msg(n) for n in range(1, 7)])
    assert await session.get_items() == [msg(4), msg(5), msg(6)]
    assert await session.get_items(limit=None) == [msg(4), msg(5), msg(6)]
    assert await session.get_items(limit=5) == [msg(n) for n in range(2, 7)]
    assert await session.get_items(limit=1) == [msg(6)]
    assert await session.get_items(limit=0) == []


async def test_settings_given_as_a_dict(sessions: Sessions) -> None:
    session = sessions.open("s", session_settings={"limit": 2})
    assert session.session_settings == SessionSettings(limit=2)
    await session.add_items([msg(1), msg(2), msg(3)])
    assert await session.get_items() == [msg(2), msg(3)]


async def test_adding_no_items_writes_no_event(session: StoreSession) -> None:
    await session.add_items([])
    assert await event_types(session) == [], "an empty add must not even start the session"
    await session.add_items([msg(1)])
    before = await session.store.read_stream(session.session_id)
    await session.add_items([])
    after = await session.store.read_stream(session.session_id)
    assert len(after) == len(before)
    assert await session.get_items() == [msg(1)]


async def test_every_mutation_is_one_event(session: StoreSession) -> None:
    await session.add_items([msg(1), msg(2)])
    assert await event_types(session) == ["SessionStarted", "ItemsAdded"]
    await session.add_items([msg(3)])
    assert await session.pop_item() == msg(3)
    await session.clear_session()
    assert await event_types(session) == [
        "SessionStarted",
        "ItemsAdded",
        "ItemsAdded",
        "ItemPopped",
        "SessionCleared",
    ]
    assert await session.pop_item() is None  # nothing to pop: nothing written
    assert len(await event_types(session)) == 5


async def test_pop_and_clear_delete_nothing_from_the_log(session: StoreSession) -> None:
    await session.add_items([msg(1), msg(2)])
    await session.add_items([msg(3)])
    await session.pop_item()
    await session.clear_session()
    assert await session.get_items() == []
    events = await session.store.read_stream(session.session_id)
    logged = [
        json.loads(bytes(raw))
        for e in events
        if e.event_type == "ItemsAdded"
        for raw in e.event.items  # type: ignore[union-attr]
    ]
    assert logged == [msg(1), msg(2), msg(3)]
    assert [e.version for e in events] == list(range(1, len(events) + 1))


async def test_pop_returns_the_newest_item(session: StoreSession) -> None:
    await session.add_items([msg(1), msg(2)])
    await session.add_items([msg(3)])
    assert await session.pop_item() == msg(3)
    assert await session.pop_item() == msg(2)
    assert await session.get_items() == [msg(1)]
    assert await session.pop_item() == msg(1)
    assert await session.pop_item() is None
    assert await session.get_items() == []


async def test_clear_then_pop_and_add(session: StoreSession) -> None:
    await session.add_items([msg(1), msg(2)])
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.add_items([msg(3)])
    assert await session.get_items() == [msg(3)]
    assert await session.get_items(limit=5) == [msg(3)]
    assert await session.pop_item() == msg(3)


async def test_clear_of_a_new_session(session: StoreSession) -> None:
    await session.clear_session()
    assert await session.get_items() == []
    assert await event_types(session) == ["SessionStarted", "SessionCleared"]


async def test_every_method_takes_the_wrapper_keyword(session: StoreSession) -> None:
    await session.add_items([msg(1), msg(2)], wrapper=None)
    assert await session.get_items(wrapper=None) == [msg(1), msg(2)]
    assert await session.get_items(1, wrapper=None) == [msg(2)]
    assert await session.pop_item(wrapper=None) == msg(2)
    await session.clear_session(wrapper=None)
    assert await session.get_items() == []


# -- exact round trip --------------------------------------------------------------------

AWKWARD_ITEMS: list[Any] = [
    {"role": "user", "content": "héllo wörld, 日本語, עברית, Ελληνικά"},
    {"role": "user", "content": "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 🤖"},
    {"role": "user", "content": "'); DROP TABLE convstore_events; --"},
    {"role": "user", "content": "quotes \" ' ` \\ and a NUL \x00 and \n\t\r"},
    {
        "type": "function_call_output",
        "output": {"nested": [{"a": [1, [2, [3, {"b": None}]]]}, {}, []]},
        "empty": "",
    },
    {"ints": [0, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64, 2**100, -(2**100)]},
    {"floats": [0.1, -0.0, 1.5, 1e308, 5e-324, -2.5e-10, 1.0]},
    {"bools": [True, False], "none": None, "one": 1, "one_float": 1.0},
    {"z": 1, "a": 2, "m": {"y": 1, "b": 2}},  # key order kept
    ["a bare list", 1, None],
    "a bare string",
    42,
    None,
    {"role": "user", "content": "x" * (1 << 20)},  # 1 MB
]


async def test_items_round_trip_exactly(session: StoreSession) -> None:
    await session.add_items(AWKWARD_ITEMS)
    got = await session.get_items()
    assert got == AWKWARD_ITEMS
    assert [exactly(i) for i in got] == [exactly(i) for i in AWKWARD_ITEMS]
    assert exactly(await session.pop_item()) == exactly(AWKWARD_ITEMS[-1])


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(object(), id="object"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param({"content": float("nan")}, id="nan"),
        pytest.param({"content": float("inf")}, id="inf"),
        pytest.param({"content": (1, 2)}, id="tuple"),
        pytest.param({1: "int key"}, id="int-key"),
    ],
)
async def test_non_json_items_are_refused_and_change_nothing(
    session: StoreSession, bad: Any
) -> None:
    await session.add_items([msg(1)])
    before = await event_types(session)
    for batch in ([bad], [msg(2), bad], [msg(2), msg(3), bad]):
        with pytest.raises(SerializationError):
            await session.add_items(batch)
    assert await session.get_items() == [msg(1)]
    assert await event_types(session) == before


async def test_refused_item_on_a_new_session_writes_nothing(session: StoreSession) -> None:
    with pytest.raises(SerializationError):
        await session.add_items([msg(1), {1, 2}])
    assert await event_types(session) == []
    assert await session.get_items() == []


# -- isolation ---------------------------------------------------------------------------


async def test_sessions_never_see_each_others_items(sessions: Sessions) -> None:
    alice, bob = sessions.open("alice"), sessions.open("bob")
    await alice.add_items([msg(1), msg(2)])
    await bob.add_items([msg(10)])
    await alice.add_items([msg(3)])
    assert await alice.get_items() == [msg(1), msg(2), msg(3)]
    assert await bob.get_items() == [msg(10)]
    assert await bob.get_items(limit=2) == [msg(10)]

    assert await bob.pop_item() == msg(10)
    assert await bob.pop_item() is None
    assert await alice.get_items() == [msg(1), msg(2), msg(3)]

    await bob.add_items([msg(11)])
    await alice.clear_session()
    assert await alice.get_items() == []
    assert await bob.get_items() == [msg(11)]
    alice_log = [
        json.loads(bytes(raw))
        for e in await alice.store.read_stream("alice")
        if e.event_type == "ItemsAdded"
        for raw in e.event.items  # type: ignore[union-attr]
    ]
    assert alice_log == [msg(1), msg(2), msg(3)]


async def test_similar_session_ids_are_distinct(sessions: Sessions) -> None:
    ids = ["user", "User", "user ", "user_1", "user%", "ユーザー", "u" * 255]
    opened = [sessions.open(sid) for sid in ids]
    for n, s in enumerate(opened):
        await s.add_items([msg(n)])
    for n, s in enumerate(opened):
        assert await s.get_items() == [msg(n)], s.session_id


async def test_two_objects_on_one_session_id_share_it(sessions: Sessions) -> None:
    first, second = sessions.open("s"), sessions.open("s")
    await first.add_items([msg(1)])
    await second.add_items([msg(2)])
    assert await first.get_items() == [msg(1), msg(2)]
    assert await second.pop_item() == msg(2)
    assert await first.get_items() == [msg(1)]
    assert await event_types(first) == ["SessionStarted", "ItemsAdded", "ItemsAdded", "ItemPopped"]
