"""Phone numbers: every number Textpulse stores or sends to is E.164."""

from __future__ import annotations

from typing import Any

import phonenumbers

from core.errors import Invalid


class InvalidContact(Invalid):
    """A contact (or its phone number) that cannot be stored; the message says why."""


def normalize_phone(raw: Any) -> str:
    """E.164 for a number written with its country code; a clear error otherwise."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidContact("phone is required")
    text = raw.strip()
    if not text.startswith("+") and not text.startswith("00"):
        raise InvalidContact(f"{text!r} has no country code: write it in E.164, like +14155550123")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidContact(f"{text!r} is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidContact(f"{text!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
