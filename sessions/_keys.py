"""The key-table read ``sessions/cli.py`` imports under this module's name.

It lives in :mod:`sessions.crypto.tables`; this module goes when the command line moves
into its own subpackage and imports it from there.
"""

from .crypto.tables import read_data_key_tx

__all__ = ["read_data_key_tx"]
