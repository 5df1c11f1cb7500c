"""The built-in shortener: random base62 codes served by our own `/r/{code}`.

8 characters of base62 carry 47.6 bits, drawn from `secrets`: codes are not guessable and
never sequential. Collisions are checked against the database by the caller and redrawn.
Settings ([plugins.shortener] or TEXTPULSE_SHORTENER_*): length (8, at least 7).
"""

from __future__ import annotations

import secrets
import string

from textpulse import PluginContext, hookimpl
from textpulse import is_wellformed_code as is_wellformed_code  # the rule is the contract's

ALPHABET = string.digits + string.ascii_letters
CODE_LENGTH = 8


class BuiltinShortener:
    name = "builtin"

    def __init__(self, length: int = CODE_LENGTH) -> None:
        if length < 7:
            raise ValueError("short codes need at least 7 characters (40 bits)")
        self.length = length
        self.space = 62**length

    def new_code(self) -> str:
        # One draw below 62**length (uniform, as `secrets.choice` per character was), in base62.
        number = secrets.randbelow(self.space)
        digits = []
        for _ in range(self.length):
            number, digit = divmod(number, 62)
            digits.append(ALPHABET[digit])
        return "".join(digits)

    def tracked_url(self, code: str, public_url: str) -> str:
        return f"{public_url}/r/{code}"

    def is_code(self, code: str) -> bool:
        # Any well-formed code, not only ones of today's `length`: codes sent before the length
        # was changed keep working.
        return is_wellformed_code(code)


@hookimpl(trylast=True)
def make_shortener(config: PluginContext) -> BuiltinShortener:
    length = int(config.plugin_settings("shortener").get("length", CODE_LENGTH))
    return BuiltinShortener(length)
