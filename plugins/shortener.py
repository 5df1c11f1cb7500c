"""The built-in shortener: random base62 codes served by our own `/r/{code}`.

8 characters of base62 carry 47.6 bits, drawn from `secrets`: codes are not guessable and
never sequential. Collisions are checked against the database by the caller and redrawn.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Any

from core.hooks.hookspecs import hookimpl

ALPHABET = string.digits + string.ascii_letters
CODE_LENGTH = 8


class BuiltinShortener:
    name = "builtin"

    def __init__(self, length: int = CODE_LENGTH) -> None:
        if length < 7:
            raise ValueError("short codes need at least 7 characters (40 bits)")
        self.length = length

    def new_code(self) -> str:
        return "".join(secrets.choice(ALPHABET) for _ in range(self.length))

    def tracked_url(self, code: str, public_url: str) -> str:
        return f"{public_url}/r/{code}"


_WELLFORMED = re.compile(r"[0-9A-Za-z]{7,32}")


def is_wellformed_code(code: str) -> bool:
    """Could `code` be a short code at all? Codes of any shortener are base62, 7 to 32 characters
    (API.md; the column holds 32); anything else is answered 404 by /r without a lookup."""
    return _WELLFORMED.fullmatch(code) is not None


@hookimpl(trylast=True)
def make_shortener(config: Any) -> BuiltinShortener:
    length = int(config.plugin_settings("shortener").get("length", CODE_LENGTH))
    return BuiltinShortener(length)
