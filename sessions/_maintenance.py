"""The key-table functions ``sessions/cli.py`` imports under this module's name.

They live in :mod:`sessions.crypto.keyring`; this module goes when the command line
moves into its own subpackage and imports them from there.
"""

from .crypto.keyring import ensure_key_tables, open_store, shred_session

__all__ = ["ensure_key_tables", "open_store", "shred_session"]
