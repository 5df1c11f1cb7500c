"""SMS segment counting (GSM 03.38 / UCS-2), so previews show what a send will be billed.

Decisions:
- `characters` is what the carrier counts: septets for GSM-7 (an extension character such as `€`
  is an escape pair, 2 septets) and UTF-16 code units for UCS-2 (an emoji outside the BMP is 2).
- A concatenated message carries a 7-septet / 3-unit header, so parts hold 153 septets or 67
  units. An escape pair or a surrogate pair is never split across parts: it moves whole to the
  next one, which is why the count is packed character by character rather than `ceil(n / 153)`.
- An empty body is 0 characters, GSM-7, 1 segment (sending it still costs one SMS), with a warning.
- `Ç` is the capital at 0x09 as in the standard table; lower-case `ç` is not GSM-7.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["SegmentInfo", "count_segments"]

GSM_7 = "GSM-7"
UCS_2 = "UCS-2"

# GSM 03.38 basic character set (0x1B, the escape to the extension table, is not usable on its own).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# GSM 03.38 extension table: each costs the escape septet plus itself.
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

_SINGLE = {GSM_7: 160, UCS_2: 70}
_PART = {GSM_7: 153, UCS_2: 67}

# Typographic punctuation that word processors insert, with the plain ASCII that fits GSM-7.
_SMART_PUNCTUATION = {
    "‘": "'",
    "’": "'",
    "‚": "'",
    "“": '"',
    "”": '"',
    "„": '"',
    "–": "-",
    "—": "-",
    "…": "...",
}
_MAX_NAMED = 3


@dataclass(frozen=True)
class SegmentInfo:
    """How a body is encoded and billed; `warnings` are sentences for the person writing it."""

    characters: int
    encoding: str  # "GSM-7" | "UCS-2"
    segments: int
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _septets(char: str) -> int | None:
    """Septets `char` takes in GSM-7, or None when it is outside both GSM tables."""
    if char in _GSM_BASIC:
        return 1
    if char in _GSM_EXTENSION:
        return 2
    return None


def _pack(costs: Iterable[int], encoding: str) -> tuple[int, int]:
    """(total units, segments) for per-character costs, never splitting one character's units."""
    cost_list = list(costs)
    total = sum(cost_list)
    if total <= _SINGLE[encoding]:
        return total, 1
    capacity = _PART[encoding]
    segments, used = 1, 0
    for cost in cost_list:
        if used + cost > capacity:
            segments, used = segments + 1, 0
        used += cost
    return total, segments


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _describe(char: str) -> str:
    """A visible name for `char`: invisible ones (no-break space, ZWJ…) get their code point."""
    if char.isprintable() and not char.isspace():
        return f"'{char}'"
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}".rstrip()


def _list_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _ucs2_warning(offenders: list[str], ucs2_segments: int, gsm_segments: int) -> str:
    shown = [_describe(char) for char in offenders[:_MAX_NAMED]]
    rest = len(offenders) - len(shown)
    if rest:
        shown.append(_plural(rest, "other character"))
    subject = _list_names(shown)
    verb = "is" if len(offenders) == 1 else "are"
    if ucs2_segments > gsm_segments:
        cost = f"in {_plural(ucs2_segments, 'segment')} instead of {_plural(gsm_segments, 'GSM-7 segment')}"
    else:
        room = _SINGLE if ucs2_segments == 1 else _PART
        cost = (
            f"in {_plural(ucs2_segments, 'segment')} (as many as GSM-7 for now, but a segment "
            f"holds {room[UCS_2]} characters instead of {room[GSM_7]})"
        )
    return f"{subject} {verb} not in the GSM-7 alphabet: this message is sent as UCS-2 {cost}"


def _smart_punctuation_warning(offenders: list[str]) -> str | None:
    smart = [char for char in offenders if char in _SMART_PUNCTUATION]
    if not smart:
        return None
    swaps = ", ".join(f"{char} with {_SMART_PUNCTUATION[char]}" for char in smart)
    return f"Typographic punctuation forces UCS-2; type plain ASCII instead: replace {swaps}"


def count_segments(body: str) -> SegmentInfo:
    """Encoding, billed characters and segments of `body`, with advice when it costs more."""
    if not body:
        return SegmentInfo(0, GSM_7, 1, ("The message is empty; it would still be billed as 1 SMS",))
    if _GSM_BASIC.issuperset(body):  # every character one septet (most texts): no per-character work
        characters = len(body)
        segments = 1 if characters <= _SINGLE[GSM_7] else -(-characters // _PART[GSM_7])
        many = (f"This message is {segments} segments; each is billed as a separate SMS",) if segments > 1 else ()
        return SegmentInfo(characters, GSM_7, segments, many)

    septets = [_septets(char) for char in body]
    offenders = list(dict.fromkeys(char for char, cost in zip(body, septets, strict=True) if cost is None))
    warnings: list[str] = []
    if not offenders:
        encoding = GSM_7
        characters, segments = _pack((cost or 1 for cost in septets), GSM_7)
    else:
        encoding = UCS_2
        characters, segments = _pack((2 if ord(char) > 0xFFFF else 1 for char in body), UCS_2)
        # What the same text would cost if every offending character were one plain septet.
        _, gsm_segments = _pack((cost or 1 for cost in septets), GSM_7)
        warnings.append(_ucs2_warning(offenders, segments, gsm_segments))
        smart = _smart_punctuation_warning(offenders)
        if smart:
            warnings.append(smart)
    if segments > 1:
        warnings.append(f"This message is {segments} segments; each is billed as a separate SMS")
    return SegmentInfo(characters, encoding, segments, tuple(warnings))
