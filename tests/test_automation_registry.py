"""Registering automations: params as JSON Schema, checked with errors that name the field, and
plugins.toml's `[automations.<name>]` tables checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.automations.spec import Automation, ParamsInvalid, check_params, params_schema
from core.hooks.registry import PluginError, load_plugins
from core.settings import Settings


@dataclass
class Step:
    after_seconds: float
    body: str


@dataclass
class Params:
    steps: list[Step]
    stop_on: list[str] = field(default_factory=lambda: ["reply"])


def _settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path), "TEXTPULSE_CONFIG": str(tmp_path / "none.toml")})


def test_the_schema_has_the_params_type_at_the_top() -> None:
    schema = params_schema(Params)
    assert schema["type"] == "object" and schema["required"] == ["steps"]
    assert schema["properties"]["steps"]["items"] == {"$ref": "#/$defs/Step"}
    assert schema["$defs"]["Step"]["required"] == ["after_seconds", "body"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, "params: steps: required"),
        ({"steps": [{"after_seconds": "x", "body": "b"}]}, "steps[0].after_seconds: expected `float`, got `str`"),
        ({"steps": [{"body": "b"}]}, "steps[0].after_seconds: required"),
        ({"steps": [], "stop_onn": []}, "stop_onn: no such param"),
        ([1, 2], "params must be a JSON object"),
    ],
)
def test_bad_params_name_the_field(params: object, words: str) -> None:
    with pytest.raises(ParamsInvalid) as caught:
        check_params(Params, params)
    assert words in str(caught.value)


def test_good_params_get_their_defaults() -> None:
    assert check_params(Params, {"steps": [{"after_seconds": 1, "body": "b"}]}) == {
        "steps": [{"after_seconds": 1.0, "body": "b"}],
        "stop_on": ["reply"],
    }


def test_an_unknown_trigger_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown trigger"):
        Automation("x", "x", workflow=object, params=Params, triggers=("sometimes",))


def test_built_ins_are_registered_and_off_by_default(tmp_path: Path) -> None:
    automations = load_plugins(_settings(tmp_path), config={}).automations()
    assert {"follow_up", "welcome_series"} <= set(automations)
    assert all(a.trigger_params is None for a in automations.values())


def test_plugins_toml_turns_an_automation_on_with_its_params(tmp_path: Path) -> None:
    config = {"automations": {"welcome_series": {"enabled": True, "steps": [{"after_seconds": 60, "body": "Hi"}]}}}
    welcome = load_plugins(_settings(tmp_path), config=config).automations()["welcome_series"]
    assert welcome.trigger_params == {
        "steps": [{"after_seconds": 60.0, "body": "Hi"}],
        "stop_on": ["reply"],
        "audience": None,
        "provider": "fake",
    }
    # follow_up started by a campaign's completion gets that campaign's id: none is needed here.
    config = {"automations": {"follow_up": {"enabled": True, "body": "Again?", "after_seconds": 5}}}
    follow_up = load_plugins(_settings(tmp_path), config=config).automations()["follow_up"]
    assert follow_up.trigger_params is not None and "campaign_id" not in follow_up.trigger_params


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"welcome_series": {"enabled": True, "steps": "soon"}}, "[automations.welcome_series]: params: steps"),
        ({"welcome_series": {"enabled": True}}, "steps: required"),
        ({"welcom_series": {"enabled": True}}, "no plugin registers an automation of that name"),
    ],
)
def test_a_bad_automations_table_stops_the_start(tmp_path: Path, table: dict[str, object], words: str) -> None:
    with pytest.raises(PluginError) as caught:
        load_plugins(_settings(tmp_path), config={"automations": table}).automations()
    assert words in str(caught.value)
