"""Find, normalise and rewrite the URLs in an SMS body (pure functions, no I/O).

Why linkify-it-py rather than a home-made regex or urlextract: it is a maintained port of the
linkify-it spec used by markdown-it, so trailing punctuation (`…/sale).`, `…/bf!`), balanced
parentheses and fuzzy bare domains are handled by rules that have been tested against real
prose. urlextract needs an IANA TLD list file that it caches or downloads at runtime, which is I/O
we do not want in a domain module; linkify-it-py ships its TLD list as Python data.

Decisions:
- Only http(s) links and bare domains are links. `ftp:`, protocol-relative `//host` and
  `mailto:` are switched off, and fuzzy emails too: an address like `a@b.example` is never
  rewritten into a tracked link.
- A bare domain (no scheme) is accepted only when it is clearly a link: it has a path, query or
  fragment (`shop.example/bf`, `shop.com/`) or starts with `www.`. `Visit shop.com` alone, `e.g.`,
  `Mr.Smith` or `hello.world` stay text — marketers who want tracking write a path or a scheme.
- Bare domains are checked against the full IANA TLD list bundled with linkify-it (offline) plus
  the reserved `example`, `test`, `localhost`, `local` and `invalid`, so `brand.store/bf` and
  `shop.example/bf` both work. A bare domain's destination gets `https://`.
- Closing quotes, guillemets and `…` right after a URL are punctuation, not part of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from linkify_it import LinkifyIt
from linkify_it.tlds import TLDS

__all__ = ["FoundUrl", "add_utm", "find_urls", "find_urls_in_full", "rewrite_links"]

_RESERVED_TLDS = ["example", "test", "localhost", "local", "invalid"]

# Built once: compiling the schema and TLD regexes is the expensive part.
_LINKIFY = LinkifyIt(options={"fuzzy_link": True, "fuzzy_email": False, "fuzzy_ip": False})
_LINKIFY.add("ftp:", None).add("//", None).add("mailto:", None)
_LINKIFY.tlds(sorted({tld.lower() for tld in TLDS} | set(_RESERVED_TLDS)), keep_old=False)

_HTTP_SCHEMAS = {"http:", "https:"}
_BARE_PATH = re.compile(r"[/?#]")
_TRAILING_PUNCTUATION = "…»”’›"


@dataclass(frozen=True)
class FoundUrl:
    """One URL in a body: `text` is body[start:end] exactly, `url` the destination to visit."""

    start: int
    end: int
    text: str
    url: str


def _is_clear_bare_domain(raw: str) -> bool:
    return bool(_BARE_PATH.search(raw)) or raw.lower().startswith("www.")


# A link never spans whitespace, and linkify-it takes whitespace (Unicode Z and Cc) as a boundary
# before and after a link as it takes the text's start and end: so the links of a body are the
# links of its whitespace-free tokens, each found on its own, and a token that holds neither a dot
# nor a colon holds none (a link needs a scheme or a domain with its TLD). Tokens repeat from body
# to body (the campaign's links, its words), so each is matched once: linkify-it is most of a
# text's rendering time otherwise. tests/test_links.py holds this to matching whole bodies.
_TOKEN = re.compile(r"\S+")
_TOKEN_LINKS: dict[str, tuple[tuple[int, int, str, str], ...]] = {}
_TOKEN_CACHE_SIZE = 20_000


def find_urls(body: str) -> list[FoundUrl]:
    """Every link in `body`, in order of appearance; repeated destinations are listed each time."""
    found: list[FoundUrl] = []
    for token in _TOKEN.finditer(body):
        text = token.group()
        if "." not in text and ":" not in text:
            continue
        links = _TOKEN_LINKS.get(text)
        if links is None:
            if len(_TOKEN_LINKS) >= _TOKEN_CACHE_SIZE:
                _TOKEN_LINKS.clear()
            links = _TOKEN_LINKS[text] = tuple((f.start, f.end, f.text, f.url) for f in find_urls_in_full(text))
        offset = token.start()
        found.extend(FoundUrl(offset + start, offset + end, link, url) for start, end, link, url in links)
    return found


def find_urls_in_full(body: str) -> list[FoundUrl]:
    """`find_urls` by linkify-it over the whole text at once (the reference; slower)."""
    found: list[FoundUrl] = []
    for match in _LINKIFY.match(body) or []:
        start, end = match.index, match.last_index
        while end > start and body[end - 1] in _TRAILING_PUNCTUATION:
            end -= 1
        text = body[start:end]
        if match.schema == "":
            if not _is_clear_bare_domain(text):
                continue
            url = "https://" + text
        elif match.schema.lower() in _HTTP_SCHEMAS:
            url = text
        else:
            continue
        found.append(FoundUrl(start=start, end=end, text=text, url=url))
    return found


def add_utm(url: str, utm: dict[str, str] | None) -> str:
    """Append UTM parameters to `url`; a key already in its query keeps its value.

    The existing query is kept byte for byte (no re-encoding) so the destination the marketer
    typed still resolves the same way; the fragment stays last.
    """
    if not utm:
        return url
    parts = urlsplit(url)
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    extra = [(key, value) for key, value in utm.items() if key not in present]
    if not extra:
        return url
    addition = urlencode(extra)
    separator = "" if not parts.query or parts.query.endswith("&") else "&"
    query = f"{parts.query}{separator}{addition}"
    return urlunsplit(parts._replace(query=query))


def rewrite_links(body: str, make_link: Callable[[int, FoundUrl], str]) -> tuple[str, list[FoundUrl]]:
    """Replace each URL with `make_link(position, found)`; positions count from 0 in body order."""
    found = find_urls(body)
    pieces: list[str] = []
    cursor = 0
    for position, item in enumerate(found):
        pieces.append(body[cursor : item.start])
        pieces.append(make_link(position, item))
        cursor = item.end
    pieces.append(body[cursor:])
    return "".join(pieces), found
