"""URL detection, UTM merging and link rewriting in SMS bodies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.tracking.links import FoundUrl, add_utm, find_urls, find_urls_in_full, rewrite_links


def urls(body: str) -> list[str]:
    return [found.url for found in find_urls(body)]


def test_https_link_in_campaign_body() -> None:
    body = "Hi Ana, 30% off: https://shop.example/bf"
    assert find_urls(body) == [
        FoundUrl(start=17, end=40, text="https://shop.example/bf", url="https://shop.example/bf")
    ]


def test_text_is_exactly_the_body_slice() -> None:
    body = "A http://a.example/x then https://b.test/y?z=1 end"
    for found in find_urls(body):
        assert body[found.start : found.end] == found.text


def test_closing_parenthesis_and_full_stop_are_not_part_of_the_link() -> None:
    body = "(see https://x.example/sale)."
    [found] = find_urls(body)
    assert found.text == "https://x.example/sale"
    assert found.url == "https://x.example/sale"
    assert body[found.end :] == ")."


def test_exclamation_mark_is_not_part_of_the_link() -> None:
    assert urls("Last day: https://x.example/sale!") == ["https://x.example/sale"]


def test_bare_domain_with_path_gets_https() -> None:
    body = "Go to shop.example/bf!"
    [found] = find_urls(body)
    assert found == FoundUrl(start=6, end=21, text="shop.example/bf", url="https://shop.example/bf")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Try x.test/y now", "https://x.test/y"),
        ("shop.com/", "https://shop.com/"),
        ("brand.store/bf", "https://brand.store/bf"),
        ("www.shop.example", "https://www.shop.example"),
        ("sub.shop.example/bf?x=1&y=2#top.", "https://sub.shop.example/bf?x=1&y=2#top"),
        ("shop.example?promo=1", "https://shop.example?promo=1"),
    ],
)
def test_clear_bare_domains(body: str, expected: str) -> None:
    assert urls(body) == [expected]


@pytest.mark.parametrize(
    "body",
    [
        "e.g. this",
        "Dear Mr.Smith, hello",
        "hello.world is not a link",
        "Visit shop.com today",
        "mail me at a@b.example",
        "mail me at a@b.example/x",
        "mailto:a@b.example",
        "ftp://files.example/a",
        "Price 1.5 kg/m, 10.00.",
        "",
    ],
)
def test_not_links(body: str) -> None:
    assert find_urls(body) == []


def test_two_links_in_order() -> None:
    body = "New: https://a.example/new and old: shop.example/old."
    found = find_urls(body)
    assert [f.url for f in found] == ["https://a.example/new", "https://shop.example/old"]
    assert found[0].end < found[1].start


def test_same_destination_twice_is_two_entries() -> None:
    body = "https://x.example/a or https://x.example/a"
    first, second = find_urls(body)
    assert first.url == second.url == "https://x.example/a"
    assert (first.start, second.start) == (0, 23)


def test_query_string_and_fragment_are_kept() -> None:
    body = "See https://x.example/p?a=1&b=two#frag, thanks"
    assert urls(body) == ["https://x.example/p?a=1&b=two#frag"]


def test_balanced_parentheses_and_port() -> None:
    assert urls("https://en.wikipedia.org/wiki/Foo_(bar) ok") == ["https://en.wikipedia.org/wiki/Foo_(bar)"]
    assert urls("http://localhost:8000/x") == ["http://localhost:8000/x"]


def test_trailing_ellipsis_and_closing_quotes_are_punctuation() -> None:
    assert urls("more at https://shop.example/bf…") == ["https://shop.example/bf"]
    assert urls("«https://shop.example/bf»") == ["https://shop.example/bf"]
    assert urls("“https://shop.example/bf”") == ["https://shop.example/bf"]


def test_scheme_link_keeps_its_scheme() -> None:
    assert urls("http://shop.example/bf") == ["http://shop.example/bf"]


def test_add_utm_without_query() -> None:
    utm = {"utm_source": "sms", "utm_campaign": "bf"}
    assert add_utm("https://shop.example/bf", utm) == "https://shop.example/bf?utm_source=sms&utm_campaign=bf"


def test_add_utm_merges_with_existing_query() -> None:
    utm = {"utm_source": "sms"}
    assert add_utm("https://shop.example/bf?size=m&c=r%20d", utm) == (
        "https://shop.example/bf?size=m&c=r%20d&utm_source=sms"
    )


def test_add_utm_keeps_existing_key_value_once() -> None:
    utm = {"utm_source": "sms", "utm_campaign": "bf"}
    result = add_utm("https://shop.example/bf?utm_source=newsletter", utm)
    assert result == "https://shop.example/bf?utm_source=newsletter&utm_campaign=bf"
    assert result.count("utm_source") == 1


def test_add_utm_all_keys_present_is_unchanged() -> None:
    url = "https://shop.example/bf?utm_source=x&utm_campaign=y#top"
    assert add_utm(url, {"utm_source": "sms", "utm_campaign": "bf"}) == url


def test_add_utm_preserves_fragment() -> None:
    assert add_utm("https://shop.example/bf?a=1#reviews", {"utm_source": "sms"}) == (
        "https://shop.example/bf?a=1&utm_source=sms#reviews"
    )
    assert add_utm("https://shop.example/bf#reviews", {"utm_source": "sms"}) == (
        "https://shop.example/bf?utm_source=sms#reviews"
    )


def test_add_utm_encodes_values_and_handles_trailing_ampersand() -> None:
    assert add_utm("https://s.example/?a=1&", {"utm_campaign": "black friday"}) == (
        "https://s.example/?a=1&utm_campaign=black+friday"
    )


@pytest.mark.parametrize("utm", [None, {}])
def test_add_utm_nothing_to_add(utm: dict[str, str] | None) -> None:
    assert add_utm("https://shop.example/bf?x=1", utm) == "https://shop.example/bf?x=1"


def test_rewrite_links_replaces_each_occurrence_with_position() -> None:
    body = "A https://x.example/a, B shop.example/b! A again https://x.example/a."
    calls: list[tuple[int, str]] = []

    def make_link(position: int, found: FoundUrl) -> str:
        calls.append((position, found.url))
        return f"https://t.example/r/code{position}"

    new_body, found = rewrite_links(body, make_link)
    assert new_body == ("A https://t.example/r/code0, B https://t.example/r/code1! A again https://t.example/r/code2.")
    assert calls == [(0, "https://x.example/a"), (1, "https://shop.example/b"), (2, "https://x.example/a")]
    assert found == find_urls(body)


def test_rewrite_links_without_links_is_identity() -> None:
    body = "No links here, e.g. none."
    assert rewrite_links(body, lambda position, found: "X") == (body, [])


def test_rewrite_links_with_utm() -> None:
    utm = {"utm_source": "sms"}
    new_body, _ = rewrite_links("Go to shop.example/bf!", lambda _, found: add_utm(found.url, utm))
    assert new_body == "Go to https://shop.example/bf?utm_source=sms!"


# Pieces that make links, near-links and the text around them: schemes, hosts, paths, the
# punctuation linkify-it trims or keeps, quotes, parentheses, and every kind of whitespace
# (Python's and linkify-it's boundaries: space, tab, newline, no-break space, line separator, the
# C0 separators), with letters of other scripts and emoji.
_PIECES = [
    "https://",
    "http://",
    "ftp://",
    "mailto:",
    "//",
    "www.",
    "shop",
    ".example",
    ".com",
    ".co.uk",
    ".store",
    "localhost",
    "/bf",
    "/a/b",
    "?x=1",
    "&y=2",
    "#top",
    ":8080",
    "a@b.example",
    "e.g.",
    "Mr.Smith",
    "hello.world",
    "(",
    ")",
    "[",
    "]",
    ".",
    ",",
    "!",
    "?",
    ":",
    ";",
    "'",
    '"',
    "…",
    "»",
    "«",
    "”",
    "’",
    "›",
    "-",
    "_",
    "@",
    " ",
    "  ",
    "\t",
    "\n",
    "\u00a0",
    "\u2028",
    "\x1c",
    "\x85",
    "\u3000",
    "Hi",
    "sale",
    "30%",
    "é",
    "Ü",
    "日本",
    "😀",
    "0",
    "42",
]


@given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join))
@settings(max_examples=1500, deadline=None, derandomize=True)
def test_finding_links_token_by_token_finds_what_matching_the_whole_text_finds(body: str) -> None:
    assert find_urls(body) == find_urls_in_full(body)
    assert find_urls(body) == find_urls_in_full(body)  # and so from the token cache
