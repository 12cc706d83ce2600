"""The root of every error this system raises on purpose.

Each package derives its own errors from :class:`RtrecError`, so a caller (a CLI, the HTTP
layer, a test) can tell "our code refused this, with a message" from a bug with one
``except RtrecError``. ``ValueError`` stays a second base where the error is about a bad
value, so ``except ValueError`` keeps working for callers that use it.
"""

from __future__ import annotations


class RtrecError(Exception):
    """Something this system refused or could not do; the message says what and why."""
