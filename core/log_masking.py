"""What log lines must not carry: secrets and whole phone numbers. One processor, `LogMasker`,
runs in the chain every line goes through (core/log.py): structlog's and the standard library's
(uvicorn, temporalio, httpx), and over the text of exceptions.

- A value whose field name contains token, secret, password, passwd, api_key, apikey,
  authorization, auth, signature, cookie or credential (any case, `-` as `_`, at any depth, and
  the second of a (name, value) pair such as a header) becomes `***` (None and booleans stay:
  they hold no secret).
- Credentials in text: `scheme://user:pass@host` (SQLAlchemy URLs too) keeps the user,
  `scheme://user:***@host`; `Bearer <token>` becomes `Bearer ***`, and so does `Basic <base64 of
  user:pass>`; a query or key=value parameter named like a secret (`?token=`, `&api_key=`,
  `password=` of a libpq DSN) keeps its name, `token=***`.
- Phone numbers: every E.164 number in any text (`+` or `%2B`, then 8 to 15 digits) and the value
  of a field named phone, to, from, from_number, to_number, phone_number or recipient, whatever
  its format, keep their first two and last two digits, the others become `*`, one per digit:
  `+447700900123` → `+44********23`. The length and the country stay readable; a line is matched
  to a contact by its `contact_id`/`message_id`, not by a hash of the number, which anyone could
  reverse by trying the few million numbers left. TEXTPULSE_LOG_MASK_PHONES=false turns this part
  off (debugging a number's delivery on a machine of one's own); secrets are always masked.

Values other than text, numbers, dicts, lists, tuples and bytes are written as they render
(log `error=str(exc)`, as the code does). A line with none of these is not copied: each string
is looked at with `in` first, and a dict or list is rebuilt only when something in it changed.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Callable
from typing import Any, TextIO

from structlog.typing import EventDict, WrappedLogger

SECRET_WORDS = (
    "token",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "authorization",
    "auth",
    "signature",
    "cookie",
    "credential",
)
PHONE_FIELDS = frozenset({"phone", "to", "from", "from_number", "to_number", "phone_number", "recipient"})
MASK = "***"

_PLAIN, _SECRET, _PHONE = 0, 1, 2
_KIND_CACHE_LIMIT = 4096  # field names seen; a dict of user attributes may bring many

# `+` (or `%2B`, URL-encoded) then 8–15 digits, not inside a longer run of digits; a timestamp's
# `+00:00` has two.
_E164 = re.compile(r"(?<!\d)(\+|%2[Bb])([1-9]\d{7,14})(?!\d)")
# user:password@ after a scheme; the password runs to the last @ before the path.
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*):[^\s/]*@")
_BEARER = re.compile(r"\b([Bb]earer)\s+[A-Za-z0-9\-._~+/]+=*")
_BASIC = re.compile(r"\b([Bb]asic)\s+([A-Za-z0-9+/]{4,}={0,2})")
# Names as headers spell them too: X-Api-Key.
# Bounded (a name is at most 64 characters around its secret word): unbounded, a long word of
# repeated "token"s made the quoted pattern's backtracking quadratic.
_SECRET_WORD = r"[\w.\-]{0,64}?(?:" + "|".join(w.replace("_", "[_-]") for w in SECRET_WORDS) + r")[\w.\-]{0,64}"
_SECRET_NAME = _SECRET_WORD + "|key|sig|pwd"  # ?key=… is an API key; "key" in JSON is any key
# name=value in a query string, a form body, a libpq DSN or prose.
_SECRET_PARAM = re.compile(r"(?<![\w.\-])((?:" + _SECRET_NAME + r")=)(?!\*\*\*)[^&\s#;,\"'<>]+", re.IGNORECASE)
# "name": "value" in JSON or a dict's repr (a provider's error body, say).
_SECRET_QUOTED = re.compile(
    r"""(["'])(""" + _SECRET_WORD + r"""|pwd)\1(\s*:\s*)(["'])(?!\*\*\*)(?:(?!\4)[^\\]|\\.)*\4""", re.IGNORECASE
)


def mask_phone(value: str) -> str:
    """Every digit but the first two and the last two becomes `*` (all but the last two when
    there are fewer than 8 digits, all when there are 4 or fewer); the rest is kept as it is."""
    digits = sum(c.isdigit() for c in value)
    if digits == 0:
        return value  # an alphanumeric sender id, a status word: nothing personal
    head = 2 if digits >= 8 else 0
    tail = 2 if digits >= 5 else 0
    out, seen = [], 0
    for c in value:
        if c.isdigit():
            seen += 1
            if head < seen <= digits - tail:
                c = "*"
        out.append(c)
    return "".join(out)


def _masked_e164(match: re.Match[str]) -> str:
    return match.group(1) + mask_phone(match.group(2))


def _masked_basic(match: re.Match[str]) -> str:
    try:
        decoded = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)  # "Basic settings": a word, not credentials
    return f"{match.group(1)} {MASK}" if b":" in decoded else match.group(0)


class LogMasker:
    """A structlog processor; `mask_phones=False` leaves phone numbers whole (secrets never)."""

    def __init__(self, *, mask_phones: bool = True) -> None:
        self.mask_phones = mask_phones
        self._kinds: dict[str, int] = {}

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        # The event dict is this line's own (structlog and ProcessorFormatter build a new one):
        # changed in place; what it holds belongs to the caller and is copied when changed.
        # The common line (ids, counts, a few words) takes the short way: no call per field.
        kinds = self._kinds
        for key, value in event_dict.items():
            kind = kinds.get(key)
            if kind is None:
                kind = self._kind(key) if type(key) is str else _PLAIN
            if kind == _PLAIN:
                cls = type(value)
                if cls is str:
                    masked = self.text(value)
                elif cls is int or cls is float or cls is bool or value is None:
                    continue
                else:
                    masked = self._value(value)
            else:
                masked = self._field(key, value)
            if masked is not value:
                event_dict[key] = masked
        return event_dict

    def mask_exception(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """After `format_exc_info`: the traceback's text, which the first pass could not see."""
        for key in ("exception", "stack"):
            value = event_dict.get(key)
            if type(value) is str:
                event_dict[key] = self.text(value)
        return event_dict

    def exception_formatter(self, inner: Callable[[TextIO, Any], None]) -> Callable[[TextIO, Any], None]:
        """For the console renderer, which formats exceptions itself: its output, masked."""

        def render(sio: TextIO, exc_info: Any) -> None:
            buffer = io.StringIO()
            inner(buffer, exc_info)
            sio.write(self.text(buffer.getvalue()))

        return render

    def text(self, text: str) -> str:
        if self.mask_phones and ("+" in text or "%2" in text):
            text = _E164.sub(_masked_e164, text)
        if "://" in text and "@" in text:
            text = _URL_CREDENTIALS.sub(r"\1:" + MASK + "@", text)
        if "earer" in text:
            text = _BEARER.sub(r"\1 " + MASK, text)
        if "asic" in text:
            basic = _BASIC.sub(_masked_basic, text)
            if basic != text:  # "Basic settings" matched but was kept: keep the original, no copy
                text = basic
        if "=" in text:
            text = _SECRET_PARAM.sub(r"\1" + MASK, text)
        if ":" in text and ('"' in text or "'" in text):
            text = _SECRET_QUOTED.sub(r"\1\2\1\3\4" + MASK + r"\4", text)
        return text

    def _kind(self, key: str) -> int:
        kind = self._kinds.get(key)
        if kind is None:
            lowered = key.lower().replace("-", "_")  # X-Api-Key, a header's name
            if any(word in lowered for word in SECRET_WORDS):
                kind = _SECRET
            elif lowered in PHONE_FIELDS:
                kind = _PHONE
            else:
                kind = _PLAIN
            if len(self._kinds) < _KIND_CACHE_LIMIT:
                self._kinds[key] = kind
        return kind

    def _field(self, key: object, value: Any) -> Any:
        if value is None or value is True or value is False:
            return value
        if type(key) is bytes:  # ASGI's headers: (b"authorization", b"Bearer …")
            key = key.decode("latin-1")
        if type(key) is not str:
            return self._value(value)
        kind = self._kind(key)
        if kind == _SECRET:
            return MASK
        if kind == _PHONE and self.mask_phones and type(value) in (str, int):
            return mask_phone(str(value))
        return self._value(value)

    def _value(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return self.text(value)
        if kind is dict:
            return self._mapping(value)
        if kind is tuple and len(value) == 2 and type(value[0]) in (str, bytes):
            return self._pair(value)
        if kind is list or kind is tuple:
            return self._sequence(value)
        if kind is bytes and len(value) <= 8192:
            as_text = value.decode("latin-1")
            masked = self.text(as_text)
            return value if masked is as_text else masked.encode("latin-1")
        return value

    def _mapping(self, mapping: dict[Any, Any]) -> dict[Any, Any]:
        copy: dict[Any, Any] | None = None
        for key, value in mapping.items():
            masked = self._field(key, value)
            if masked is not value:
                if copy is None:
                    copy = dict(mapping)
                copy[key] = masked
        return mapping if copy is None else copy

    def _pair(self, pair: tuple[Any, Any]) -> tuple[Any, Any]:
        """A (name, value) pair, as headers and form fields come: the name says what the value is."""
        name, value = pair
        masked_name, masked = self._value(name), self._field(name, value)
        return pair if masked_name is name and masked is value else (masked_name, masked)

    def _sequence(self, items: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
        copy: list[Any] | None = None
        for i, value in enumerate(items):
            masked = self._value(value)
            if masked is not value:
                if copy is None:
                    copy = list(items)
                copy[i] = masked
        if copy is None:
            return items
        return tuple(copy) if type(items) is tuple else copy
