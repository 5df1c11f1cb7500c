"""What must be documented is: every hook and optional ability in docs/plugins.md, every setting
in README.md's configuration table; and the docs' code imports from `textpulse` only."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest

import textpulse
from core.hooks import hookspecs

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_MD = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETTINGS_SOURCE = (ROOT / "core" / "settings.py").read_text(encoding="utf-8")
EXAMPLE = ROOT / "examples" / "textpulse-postbird" / "textpulse_postbird.py"

HOOKS = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "textpulse_spec"))


def _section(markdown: str, title: str) -> str:
    """The text under `## <title>`, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    assert match, f"no section '## {title}'"
    return match.group(1)


def _documented_hooks() -> dict[str, str]:
    """`### name(arguments)` headings of the Hooks section: name → arguments."""
    return dict(re.findall(r"^### (\w+)\(([^)]*)\)$", _section(PLUGINS_MD, "Hooks"), re.MULTILINE))


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)


def _imported_modules(source: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def _protocol_members(protocol: type) -> set[str]:
    names = set(getattr(protocol, "__annotations__", {}))
    names.update(name for name, value in vars(protocol).items() if callable(value) or isinstance(value, property))
    return {name for name in names if not name.startswith("_")}


def test_hook_specs_exist() -> None:
    assert len(HOOKS) >= 9


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_arguments(hook: str) -> None:
    documented = _documented_hooks()
    assert hook in documented, f"docs/plugins.md has no '### {hook}(...)' under '## Hooks'"
    spec = getattr(hookspecs, hook)
    arguments = [a.strip() for a in documented[hook].split(",") if a.strip()]
    assert arguments == list(spec.__code__.co_varnames[: spec.__code__.co_argcount]), hook


def test_the_docs_name_no_hook_that_does_not_exist() -> None:
    assert set(_documented_hooks()) <= set(HOOKS)


OPTIONAL_ABILITIES = [
    textpulse.FindsSent,
    textpulse.ReportsDelivery,
    textpulse.NamesPermanentErrors,
    textpulse.NamesUnsubscribedErrors,
    textpulse.Closes,
    textpulse.FetchesStatus,
    textpulse.ChecksConfig,
    textpulse.NeedsMessageTimes,
]


@pytest.mark.parametrize("protocol", OPTIONAL_ABILITIES, ids=lambda p: p.__name__)
def test_every_optional_ability_is_documented(protocol: type) -> None:
    assert protocol.__name__ in PLUGINS_MD
    for member in _protocol_members(protocol):
        assert f"`{member}" in PLUGINS_MD, f"{protocol.__name__}.{member} is not in docs/plugins.md"


def test_every_protocol_of_the_sdk_is_documented() -> None:
    protocols = [
        getattr(textpulse, name)
        for name in textpulse.__all__
        if isinstance(getattr(textpulse, name), type) and getattr(getattr(textpulse, name), "_is_protocol", False)
    ]
    assert {p.__name__ for p in OPTIONAL_ABILITIES} <= {p.__name__ for p in protocols}
    for protocol in protocols:
        assert protocol.__name__ in PLUGINS_MD, protocol.__name__
        for member in _protocol_members(protocol):
            assert f"`{member}" in PLUGINS_MD, f"{protocol.__name__}.{member} is not in docs/plugins.md"


def test_every_hook_payload_field_is_documented() -> None:
    for payload in (
        textpulse.MessageStatusChanged,
        textpulse.ClickRecorded,
        textpulse.ReplyReceived,
        textpulse.ConversionRecorded,
    ):
        section = PLUGINS_MD.split(f"`textpulse.{payload.__name__}`", 1)
        assert len(section) == 2, payload.__name__
        described = section[1].split("###", 1)[0]
        for name in typing.get_type_hints(payload):
            assert f"`{name}`" in described, f"{payload.__name__}.{name}"


def test_the_docs_code_compiles_and_imports_from_textpulse_only() -> None:
    blocks = _python_blocks(PLUGINS_MD)
    assert len(blocks) >= 4
    for block in blocks:
        compile(block, "docs/plugins.md", "exec")
        internal = {m for m in _imported_modules(block) if m.split(".")[0] in ("core", "plugins", "api", "workflows")}
        assert not internal, f"docs/plugins.md imports {internal}: plugins import from `textpulse`"


def test_the_example_plugin_imports_from_textpulse_only() -> None:
    modules = _imported_modules(EXAMPLE.read_text(encoding="utf-8"))
    assert "textpulse" in modules
    assert not {m for m in modules if m.split(".")[0] in ("core", "plugins", "api", "workflows")}


SETTINGS = sorted(set(re.findall(r"\"(TEXTPULSE_[A-Z0-9_]+)\"", SETTINGS_SOURCE)))


def test_settings_are_found() -> None:
    assert "TEXTPULSE_DATABASE_URL" in SETTINGS and len(SETTINGS) >= 20


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_setting_is_in_the_readme_configuration_table(setting: str) -> None:
    table = [line for line in _section(README, "Configuration").splitlines() if line.startswith("|")]
    first_cells = " ".join(line.split("|")[1] for line in table)
    assert f"`{setting}`" in first_cells, f"README.md's configuration table has no row for {setting}"
