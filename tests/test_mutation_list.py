"""Every breakage of the mutation check (``tests/mutation.py``) still finds its code.

The check itself takes minutes and is run by hand (docs/reliability.md, "Mutation
check"); this keeps its list from going stale without anyone noticing when code moves:
an entry whose text no longer occurs exactly once in its file fails here, naming the
entry to update.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from .mutation import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_each_breakage_still_finds_its_code(mutation: Mutation) -> None:
    found = (ROOT / mutation.path).read_text().count(mutation.old)
    assert found == 1, (
        f"{mutation.name!r}: its text occurs {found} times in {mutation.path}; update the "
        "entry in tests/mutation.py to the code that now keeps the guarantee"
    )
    assert mutation.new != mutation.old
    files = [a for a in mutation.tests if a.startswith("tests/")]
    assert files, f"{mutation.name!r} names no test file: {shlex.join(mutation.tests)}"
    assert all((ROOT / f).is_file() for f in files), files


def test_breakage_names_are_distinct() -> None:
    names = [m.name for m in MUTATIONS]
    assert len(set(names)) == len(names)
