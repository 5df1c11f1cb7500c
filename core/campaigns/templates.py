"""Message bodies are Jinja2 templates, rendered in a sandbox with strict undefined.

A body that cannot render for a contact must be refused when the campaign is created or
previewed (422 naming the variable), never discovered mid-send.
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from core.errors import Invalid

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class BodyTemplateError(Invalid):
    """A template that does not compile or does not render; the message says why."""


@functools.lru_cache(maxsize=1024)
def _compiled(body: str) -> Template:
    return _env.from_string(body)


def compile_body(body: str, *, variant: str | None = None) -> Template:
    """The body's template, compiled once per process (a template is immutable once compiled;
    an automation's step renders the same body for every contact, one text at a time)."""
    try:
        return _compiled(body)
    except TemplateError as exc:
        where = f"variant {variant!r}: " if variant else ""
        line = getattr(exc, "lineno", None)
        raise BodyTemplateError(f"{where}template error{f' on line {line}' if line else ''}: {exc}") from exc


def contact_context(contact: Any) -> dict[str, Any]:
    """The variables a body may use: name, phone, attributes, and the whole contact."""
    row = {
        "id": contact.id,
        "phone": contact.phone,
        "name": contact.name,
        "timezone": contact.timezone,
        "attributes": dict(contact.attributes or {}),
    }
    context: dict[str, Any] = {"phone": contact.phone, "attributes": row["attributes"], "contact": row}
    if contact.name is not None:  # a missing name is undefined, so `{{ name | default("there") }}` works
        context["name"] = contact.name
    return context


def render_body(template: Template, contact: Any, *, variant: str | None = None) -> str:
    try:
        return template.render(contact_context(contact))
    except TemplateError as exc:
        where = f"variant {variant!r}" if variant else "body"
        raise BodyTemplateError(f"{where} does not render for contact {contact.phone}: {exc}") from exc
