"""The one base of every error the domain raises for a request it cannot do.

Each kind says what went wrong in the caller's terms; the API maps the kind to an HTTP status
in one exception handler (api/errors.py), the CLI prints the message. `extra` carries details a
client can act on (e.g. which phones are bad).
"""

from __future__ import annotations

from typing import Any


class TextpulseError(Exception):
    """A request the domain refuses; `str(error)` says why, `extra` may say more."""

    def __init__(self, message: str, *, extra: Any = None) -> None:
        super().__init__(message)
        self.extra = extra


class NotFound(TextpulseError, LookupError):
    """What the request names does not exist."""


class Conflict(TextpulseError):
    """The thing exists but is not in a state that allows the request."""


class Invalid(TextpulseError, ValueError):
    """The request is well formed but its content cannot be used (a template that does not render)."""


class BadParameter(TextpulseError, ValueError):
    """A parameter of the request has a value the route does not know."""


class Unavailable(TextpulseError):
    """A part the request needs (the workflow service) cannot be reached now; try again."""
