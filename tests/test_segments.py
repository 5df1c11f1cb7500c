"""Segment counting against known GSM 03.38 / UCS-2 figures."""

from __future__ import annotations

import pytest

from core.tracking.segments import SegmentInfo, count_segments

GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (153, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_plain_gsm_lengths(length: int, segments: int) -> None:
    info = count_segments("a" * length)
    assert (info.characters, info.encoding, info.segments) == (length, "GSM-7", segments)


def test_whole_basic_table_is_one_septet_each() -> None:
    assert len(GSM_BASIC) == 127  # 128 code points minus the escape
    info = count_segments(GSM_BASIC)
    assert info.encoding == "GSM-7"
    assert info.characters == 127
    assert info.segments == 1
    assert info.warnings == ()


@pytest.mark.parametrize("char", list("^{}\\[~]|€\f"))
def test_extension_characters_count_two(char: str) -> None:
    info = count_segments(char)
    assert (info.characters, info.encoding, info.segments) == (2, "GSM-7", 1)


def test_eighty_euro_signs_fill_one_segment() -> None:
    assert count_segments("€" * 80) == SegmentInfo(160, "GSM-7", 1, ())
    assert count_segments("€" * 81).segments == 2


def test_escape_pair_moves_whole_to_next_segment() -> None:
    body = "a" * 152 + "€" + "b" * 152  # 306 septets: ceil(306 / 153) would say 2
    info = count_segments(body)
    assert info.characters == 306
    assert info.segments == 3  # 152 | € + 151 b | 1 b


def test_escape_pair_fitting_exactly_stays() -> None:
    body = "a" * 151 + "€" + "b" * 153  # 306 septets: 151 + 2 | 153
    assert count_segments(body).segments == 2


def test_escape_pair_straddling_small_message() -> None:
    info = count_segments("a" * 152 + "€" + " and more text")
    assert info.characters == 168
    assert info.segments == 2


@pytest.mark.parametrize(("length", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)])
def test_ucs2_lengths(length: int, segments: int) -> None:
    info = count_segments("ж" * length)
    assert (info.characters, info.encoding, info.segments) == (length, "UCS-2", segments)


def test_emoji_counts_two_utf16_units() -> None:
    info = count_segments("😀")
    assert (info.characters, info.encoding, info.segments) == (2, "UCS-2", 1)
    assert count_segments("😀" * 35).segments == 1
    assert count_segments("😀" * 35 + "a").segments == 2


def test_surrogate_pair_is_not_split() -> None:
    body = "ж" * 66 + "😀" + "ж" * 66  # 134 units: ceil(134 / 67) would say 2
    info = count_segments(body)
    assert info.characters == 134
    assert info.segments == 3


def test_emoji_in_gsm_message_switches_to_ucs2_and_names_it() -> None:
    info = count_segments("a" * 100 + "😀")
    assert info.encoding == "UCS-2"
    assert info.characters == 102
    assert info.segments == 2
    assert info.warnings[0] == (
        "'😀' is not in the GSM-7 alphabet: this message is sent as UCS-2 in 2 segments instead of 1 GSM-7 segment"
    )
    assert "2 segments; each is billed" in info.warnings[-1]


def test_ucs2_warning_names_at_most_three_characters() -> None:
    info = count_segments("Zażółć gęślą jaźń")
    assert info.encoding == "UCS-2"
    assert info.warnings[0].startswith("'ż', 'ó', 'ł' and 6 other characters are not in the GSM-7")
    assert "as many as GSM-7 for now" in info.warnings[0]


def test_invisible_character_is_named_by_code_point() -> None:
    info = count_segments("50%\u00a0off")
    assert info.encoding == "UCS-2"
    assert info.warnings[0].startswith("U+00A0 NO-BREAK SPACE is not in the GSM-7 alphabet")


def test_lowercase_c_cedilla_is_not_gsm() -> None:
    assert count_segments("ç").encoding == "UCS-2"
    assert count_segments("Ç").encoding == "GSM-7"


def test_smart_punctuation_suggests_ascii() -> None:
    info = count_segments("It’s “great” – really")
    assert info.encoding == "UCS-2"
    assert len(info.warnings) == 2
    smart = info.warnings[1]
    assert "’ with '" in smart
    assert '“ with "' in smart
    assert '” with "' in smart
    assert "– with -" in smart
    assert count_segments('It\'s "great" - really').encoding == "GSM-7"


def test_em_dash_alone_gets_both_warnings() -> None:
    info = count_segments("Sale — today")
    assert info.warnings[0].startswith("'—' is not in the GSM-7 alphabet")
    assert "— with -" in info.warnings[1]


def test_multi_segment_warning_only_above_one() -> None:
    assert count_segments("a" * 160).warnings == ()
    assert count_segments("a" * 307).warnings == ("This message is 3 segments; each is billed as a separate SMS",)


def test_empty_body() -> None:
    info = count_segments("")
    assert (info.characters, info.encoding, info.segments) == (0, "GSM-7", 1)
    assert len(info.warnings) == 1


def test_segment_info_is_frozen_and_hashable() -> None:
    info = count_segments("hello")
    with pytest.raises(AttributeError):
        info.segments = 2  # type: ignore[misc]
    assert hash(info) == hash(count_segments("hello"))


@pytest.mark.parametrize("length", [1, 152, 153, 154, 159, 160, 161, 305, 306, 307, 459, 460, 1000])
def test_basic_only_texts_take_the_short_way_to_the_same_count_as_packing_septets(length: int) -> None:
    from core.tracking.segments import GSM_7, _pack

    body = ("Hi Ann, sale at shop.example/bf! " * 40)[:length]
    info = count_segments(body)
    assert (info.characters, info.segments) == _pack([1] * length, GSM_7) and info.encoding == GSM_7
    assert bool(info.warnings) == (info.segments > 1)
    extended = count_segments(body[:-1] + "€")  # one extension character: the per-character way
    assert extended.characters == length + 1
