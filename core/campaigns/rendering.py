"""From a variant's template and a contact to the exact text that is sent.

Links are detected in the rendered text (so links produced by template variables are tracked
too) and replaced by tracked URLs; segments are counted on the final text. `render_tracked` is
the one way a campaign's text is made (snapshot, retry, test send, preview): what it returns is
what the phone shows. Storing the codes it drew is the caller's business (a preview stores none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jinja2 import Template

from core.campaigns.templates import render_body
from core.tracking.links import FoundUrl, add_utm, rewrite_links
from core.tracking.segments import SegmentInfo, count_segments

if TYPE_CHECKING:
    from core.hooks.contracts import Shortener


@dataclass(frozen=True)
class RenderedMessage:
    body: str
    destinations: list[str]  # by link position; empty when links are not tracked
    segments: SegmentInfo


@dataclass(frozen=True)
class TrackedLink:
    """A link of a rendered body: its short code, its position in the body, where it leads (UTM added)."""

    code: str
    position: int
    destination: str


@dataclass(frozen=True)
class TrackedMessage:
    body: str
    segments: SegmentInfo
    links: tuple[TrackedLink, ...]  # in body order; empty when the campaign does not track links

    @property
    def destinations(self) -> list[str]:
        return [link.destination for link in self.links]


def render_message(
    template: Template,
    contact: Any,  # a Contact, or any row with its id, phone, name, timezone and attributes
    *,
    tracking: Mapping[str, Any],
    tracked_url: Callable[[int, str], str],
    variant: str | None = None,
) -> RenderedMessage:
    """Render for one contact; `tracked_url(position, destination)` returns the link to put in."""
    text = render_body(template, contact, variant=variant)
    destinations: list[str] = []
    if tracking.get("shorten_links", True):
        utm = tracking.get("utm") or None

        def replace(position: int, found: FoundUrl) -> str:
            destination = add_utm(found.url, utm)
            destinations.append(destination)
            return tracked_url(position, destination)

        text, _ = rewrite_links(text, replace)
    return RenderedMessage(body=text, destinations=destinations, segments=count_segments(text))


def render_tracked(
    template: Template,
    contact: Any,  # a Contact, or any row with its id, phone, name, timezone and attributes
    *,
    tracking: Mapping[str, Any],
    shortener: Shortener,
    public_url: str,
    variant: str | None = None,
    new_code: Callable[[], str] | None = None,
) -> TrackedMessage:
    """Render for one contact with its links tracked (the campaign's `tracking`: UTM, shortening).

    Each link gets a code from `new_code` (default: the shortener's `new_code`; a caller that
    stores the codes passes one that avoids those already taken) and the shortener's tracked URL.
    Raises BodyTemplateError when the body does not render for this contact.
    """
    draw = new_code or shortener.new_code
    links: list[TrackedLink] = []

    def tracked_url(position: int, destination: str) -> str:
        code = draw()
        links.append(TrackedLink(code, position, destination))
        return shortener.tracked_url(code, public_url)

    rendered = render_message(template, contact, tracking=tracking, tracked_url=tracked_url, variant=variant)
    return TrackedMessage(body=rendered.body, segments=rendered.segments, links=tuple(links))
