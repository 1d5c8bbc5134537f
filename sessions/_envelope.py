"""The envelope names ``sessions/admin.py`` imports under this module's name.

They live in :mod:`sessions.crypto.envelope`; this module goes when the command line
moves into its own subpackage and imports them from there.
"""

from .crypto.envelope import MARKER, parse_envelope

__all__ = ["MARKER", "parse_envelope"]
