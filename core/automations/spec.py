"""What a plugin hands over to register an automation, and how its params are checked.

An automation is a Temporal workflow class written with Textpulse's building blocks
(`textpulse.automation.AutomationWorkflow`), described for the API: a name (its workflow type),
a description, a params type (a dataclass or a msgspec Struct) whose JSON Schema the API shows
and against which params are checked before anything starts, and the triggers that start it.

Triggers (API.md "Automations"): `contact_created`, `click`, `reply`, `conversion`,
`campaign_completed`. A trigger starts a run only for an automation that plugins.toml turns on
(`[automations.<name>] enabled = true`; the table's other keys are the params of triggered
runs); the API and the CLI start any automation whatever the file says.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from core.errors import Invalid

TRIGGERS = ("contact_created", "click", "reply", "conversion", "campaign_completed")
# What a running automation hears of, as `ContactEvent.kind`: a contact's events, and the end of
# a campaign it made or is about (`campaign_ended`, `name` its final status).
EVENT_KINDS = ("click", "reply", "delivery", "conversion", "campaign_ended")


class ParamsInvalid(Invalid):
    """An automation's params do not match its params type; the message names the field."""


@dataclass(frozen=True)
class Automation:
    name: str  # the workflow type (`@workflow.defn(name=...)`) and the API's name for it
    description: str
    workflow: type  # the `@workflow.defn` class
    params: type  # a dataclass or msgspec.Struct; its fields are the run's params
    triggers: tuple[str, ...] = ()
    # For the `conversion` trigger: the event names that start a run (empty: any).
    events: tuple[str, ...] = ()
    # Params of runs started by a trigger (plugins.toml `[automations.<name>]` less `enabled`);
    # None: triggers start no run of it.
    trigger_params: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        unknown = [t for t in self.triggers if t not in TRIGGERS]
        if unknown:
            raise ValueError(f"automation {self.name!r}: unknown trigger(s) {unknown}; known: {', '.join(TRIGGERS)}")

    def campaign_param(self) -> bool:
        """Started by `campaign_completed`, with a `campaign_id` param: the campaign's id goes there."""
        return "campaign_completed" in self.triggers and "campaign_id" in _field_names(self.params)

    def schema(self) -> dict[str, Any]:
        return params_schema(self.params)

    def check(self, params: Any) -> dict[str, Any]:
        """The params as the run gets them (defaults filled in); ParamsInvalid naming the field."""
        return check_params(self.params, params)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": self.schema(),
            "triggers": list(self.triggers),
        }


def params_schema(params_type: type) -> dict[str, Any]:
    """The JSON Schema of a params type, the type's own definition at the top (others in $defs)."""
    schema: dict[str, Any] = msgspec.json.schema(params_type)
    defs: dict[str, Any] = dict(schema.get("$defs", {}))
    ref = schema.get("$ref", "")
    name = ref.rsplit("/", 1)[-1] if ref.startswith("#/$defs/") else None
    if name is None or name not in defs:
        return schema
    top = dict(defs.pop(name))
    if defs:
        top["$defs"] = defs
    return top


def check_params(params_type: type, params: Any) -> dict[str, Any]:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParamsInvalid("params must be a JSON object")
    unknown = sorted(set(params) - set(_field_names(params_type)))
    if unknown:
        known = ", ".join(_field_names(params_type)) or "none"
        raise ParamsInvalid(f"params: {unknown[0]}: no such param (known: {known})")
    try:
        value: Any = msgspec.convert(params, params_type, str_keys=True)
    except msgspec.ValidationError as exc:
        raise ParamsInvalid(f"params: {_worded(str(exc))}") from None
    # Every field, defaults too (to_builtins leaves a dataclass's None fields out).
    fields = dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
    checked: dict[str, Any] = msgspec.to_builtins(fields)
    return checked


def _field_names(params_type: type) -> list[str]:
    if dataclasses.is_dataclass(params_type):
        return [f.name for f in dataclasses.fields(params_type)]
    return list(getattr(params_type, "__struct_fields__", ()))


_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def _worded(message: str) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.after_seconds`" as "after_seconds: expected …"."""
    text, _, where = message.rpartition(" - at ")
    if not text:
        text, where = message, "`$`"
    missing = _MISSING.match(text)
    if missing:
        inner = where.strip("`")[1:].lstrip(".")
        return f"{inner + '.' if inner else ''}{missing['field']}: required"
    if not where.startswith("`$"):
        return message
    path = where.strip("`")[1:].lstrip(".") or "(the object)"
    return f"{path}: {text[0].lower()}{text[1:]}"


def decode_params(params_type: type[Any], params: dict[str, Any]) -> Any:
    """The params of a run as an instance of its params type (in a workflow: what `params()` does)."""
    return msgspec.convert(params, params_type, str_keys=True)
