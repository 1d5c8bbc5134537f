"""``python -m sessions.cli``: the ``convstore`` command."""

from . import main

main()
