"""EncryptedSession wraps a session through that session's public API only.

What a wrapper needs (the current branch, the stored turns, a pop it decides itself,
the retry of a cancelled call) is offered as documented methods of StoreSession and
BranchingSession; a private name reached across the two would break with any change
of the wrapped classes' internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sessions.encrypted

# The names EncryptedSession calls the session it wraps by.
WRAPPED = {"base", "underlying_session"}


def _wrapped_name(node: ast.expr) -> str | None:
    """``base`` or ``self.underlying_session``, if ``node`` is one of them."""
    if isinstance(node, ast.Name) and node.id in WRAPPED:
        return node.id
    if isinstance(node, ast.Attribute) and node.attr in WRAPPED:
        return node.attr
    return None


def private_reaches(tree: ast.AST) -> list[str]:
    """``name.attr`` at each place where ``tree`` reaches a private name of the wrapped
    session, with its line."""
    return sorted(
        f"line {node.lineno}: {_wrapped_name(node.value)}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and _wrapped_name(node.value) is not None
    )


def test_encrypted_session_reaches_no_private_name_of_the_session_it_wraps() -> None:
    source = Path(sessions.encrypted.__file__).read_text(encoding="utf-8")
    assert private_reaches(ast.parse(source)) == []


def test_the_check_finds_a_private_name() -> None:
    """The walk does see ``base._x`` and ``self.underlying_session._x``."""
    tree = ast.parse("base._turns(b)\nself.underlying_session._cancelled_adds\nbase.ok()\n")
    assert private_reaches(tree) == [
        "line 1: base._turns",
        "line 2: underlying_session._cancelled_adds",
    ]
