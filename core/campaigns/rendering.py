"""From a variant's template and a contact to the exact text that is sent.

Links are detected in the rendered text (so links produced by template variables are tracked
too) and replaced by tracked URLs; segments are counted on the final text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jinja2 import Template

from core.campaigns.templates import render_body
from core.tracking.links import FoundUrl, add_utm, rewrite_links
from core.tracking.segments import SegmentInfo, count_segments


@dataclass(frozen=True)
class RenderedMessage:
    body: str
    destinations: list[str]  # by link position; empty when links are not tracked
    segments: SegmentInfo


def render_message(
    template: Template,
    contact: Any,
    *,
    tracking: dict[str, Any],
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
